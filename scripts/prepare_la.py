"""Prepare the Left Atrium 2018 (LA) dataset: NIfTI volumes and the semi-supervised datalist.

Accepts the community h5 layout (``2018LA_Seg_Training Set/<id>/mri_norm2.h5`` with ``train.list``
/ ``test.list``, written as-is) or the raw challenge release (``<id>/lgemri.nrrd`` +
``<id>/laendo.nrrd``, preprocessed as in the public h5 conversion with seeded, hence reproducible,
crop margins). The layout is detected. See ``sasnet_components.data.la`` for every detail.

Writes into ``--output_dir`` (default ``data/la``, relative to the current directory):
``imagesTr/``, ``labelsTr/`` (train.list cases), ``imagesTs/``, ``labelsTs/`` (test.list cases
that are present), ``datalist.json`` (paths relative to it) and ``manifest.json`` (checksums used
to skip complete cases when re-run).

Usage:
    python scripts/prepare_la.py --input_dir /path/to/LA --output_dir data/la \\
        [--num_labeled 16] [--num_validation 8] [--seed 0] [--overwrite False] \\
        [--layout auto|h5|raw] [--train_list FILE] [--test_list FILE] [--datalist_name datalist.json] \\
        [--progress auto|true|false]

``--num_labeled 16`` is the 20 % setting of the paper, ``8`` the 10 % setting.

A case that cannot be used (unreadable file, NaN or infinite voxels ...) is logged and skipped;
the others are prepared, no datalist is written, and the run ends with exit status 1 and, as its
last line, ``prepare_la.py: error:`` naming every refused case. An existing datalist that this
script did not write is replaced only with ``--overwrite``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

try:
    from sasnet_components.data.la import LA_LAYOUTS, prepare_la
    from sasnet_components.utils.console import add_preparation_options, run_preparation
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from sasnet_components.data.la import LA_LAYOUTS, prepare_la
    from sasnet_components.utils.console import add_preparation_options, run_preparation

__all__ = ["parse_args", "main"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (``argv`` defaults to ``sys.argv[1:]``)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input_dir", required=True, help="LA dataset root (h5 or raw layout); never written")
    p.add_argument("--output_dir", default="data/la", help="destination folder (default: data/la, relative to cwd)")
    p.add_argument("--num_labeled", type=int, default=16, help="labeled = first N ids of train.list (default 16)")
    p.add_argument(
        "--num_validation", type=int, default=8, help="monitoring list = last N ids of train.list (default 8)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the raw-layout crop margins (default 0)")
    p.add_argument("--layout", default="auto", choices=LA_LAYOUTS, help="input layout (default: auto-detect)")
    p.add_argument("--train_list", default=None, help="train id list (default: <input_dir>/train.list)")
    p.add_argument("--test_list", default=None, help="test id list (default: <input_dir>/test.list)")
    return add_preparation_options(p).parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    """Run :func:`sasnet_components.data.la.prepare_la` from the command line; return the datalist.

    Bad input (a folder or list that is not there, refused cases, a datalist it did not write ...)
    ends with ``prepare_la.py: error: <message>`` as the last line on stderr and exit status 1.
    """
    return run_preparation(__file__, prepare_la, **vars(parse_args(argv)))  # the options are its arguments


if __name__ == "__main__":
    main()
