"""Prepare the NIH Pancreas-CT dataset: NIfTI volumes and the semi-supervised datalist.

Accepts the community h5 files (``Pancreas_h5/<id>_norm.h5``, written as-is) or the public
release (TCIA DICOM series under ``Pancreas-CT/PANCREAS_0001/`` and the NIH label files
``TCIA_pancreas_labels-02-05-2017/label0001.nii.gz``, preprocessed as the community files: 1 mm,
HU window [-125, 275], crop around the label, z-score). The layout is detected. See
``sasnet_components.data.pancreas`` for every detail.

Lists: ``--train_list`` / ``--test_list``, else ``<input_dir>/train.list`` / ``test.list``, else
the literature's split shipped with the package (62 training and 20 test ids). The cases TCIA
removed as duplicates (image0070 of train.list, image0025 of test.list) are reported and dropped
when absent, before the split: the labeled cases are the first ``--num_labeled`` present ids.

Writes into ``--output_dir`` (default ``data/pancreas``, relative to the current directory):
``imagesTr/``, ``labelsTr/`` (training cases), ``imagesTs/``, ``labelsTs/`` (test cases that are
present), ``datalist.json`` (paths relative to it) and ``manifest.json`` (checksums used to skip
complete cases when re-run).

Usage:
    python scripts/prepare_pancreas.py --input_dir /path/to/Pancreas --output_dir data/pancreas \\
        [--num_labeled 12] [--num_validation 6] [--overwrite False] [--layout auto|h5|raw] \\
        [--train_list FILE] [--test_list FILE] [--datalist_name datalist.json] [--progress auto|true|false]

``--num_labeled 12`` is the 20 % setting of the 62 training cases, ``6`` the 10 % setting.

A case that cannot be used (unreadable DICOM or label file, NaN voxels ...) is logged and
skipped; the others are prepared, no datalist is written, and the run ends with exit status 1
and, as its last line, ``prepare_pancreas.py: error:`` naming every refused case. An existing
datalist that this script did not write is replaced only with ``--overwrite``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

try:
    from sasnet_components.data.pancreas import PANCREAS_LAYOUTS, prepare_pancreas
    from sasnet_components.utils.console import add_preparation_options, run_preparation
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from sasnet_components.data.pancreas import PANCREAS_LAYOUTS, prepare_pancreas
    from sasnet_components.utils.console import add_preparation_options, run_preparation

__all__ = ["parse_args", "main"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (``argv`` defaults to ``sys.argv[1:]``)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input_dir", required=True, help="Pancreas-CT dataset root (h5 or raw layout); never written")
    p.add_argument(
        "--output_dir", default="data/pancreas", help="destination folder (default: data/pancreas, relative to cwd)"
    )
    p.add_argument(
        "--num_labeled", type=int, default=12, help="labeled = first N present ids of the train list (default 12)"
    )
    p.add_argument(
        "--num_validation", type=int, default=6, help="monitoring list = last N ids of the train list (default 6)"
    )
    p.add_argument("--layout", default="auto", choices=PANCREAS_LAYOUTS, help="input layout (default: auto-detect)")
    p.add_argument(
        "--train_list",
        default=None,
        help="train id list (default: <input_dir>/train.list, else the literature's list shipped with the package)",
    )
    p.add_argument("--test_list", default=None, help="test id list (default: <input_dir>/test.list, as --train_list)")
    return add_preparation_options(p).parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    """Run :func:`sasnet_components.data.pancreas.prepare_pancreas` from the command line; return the datalist.

    Bad input (a folder or list that is not there, refused cases, a datalist it did not write ...)
    ends with ``prepare_pancreas.py: error: <message>`` as the last line on stderr and exit status 1.
    """
    return run_preparation(__file__, prepare_pancreas, **vars(parse_args(argv)))  # the options are its arguments


if __name__ == "__main__":
    main()
