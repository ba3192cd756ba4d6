"""Prepare BraTS 2019: NIfTI volumes and the semi-supervised datalist.

Accepts the official release (``<root>/HGG|LGG/<id>/<id>_flair.nii.gz`` + ``<id>_seg.nii.gz``, or
without the grade folder; ``<id>_t1``, ``_t1ce``, ``_t2`` for ``--modalities all``), preprocessed as
in the literature: crop to the non-zero box, clip at the 99.9th percentile, z-score over the brain;
or the community h5 files ``<root>/data/<id>.h5`` (preprocessed FLAIR, written as-is; FLAIR and
whole tumour only). The layout is detected. See ``sasnet_components.data.brats`` for every detail.

Lists: ``--train_list`` / ``--val_list`` / ``--test_list``, else ``<input_dir>/train.txt`` /
``val.txt`` / ``test.txt``, else the literature's lists shipped with the package (250 / 25 / 60 ids).
Labeled = first ``--num_labeled`` training ids (50 = 20 %, 25 = 10 %); validation = the validation
ids (they also stay in the unlabeled pool); test = the present test ids.

Usage:
    python scripts/prepare_brats.py --input_dir /path/to/MICCAI_BraTS_2019_Data_Training \\
        --output_dir data/brats [--num_labeled 50] [--modalities flair|all] [--label_mode whole|classes] \\
        [--layout auto|release|h5] [--train_list FILE] [--val_list FILE] [--test_list FILE] \\
        [--overwrite] [--datalist_name datalist.json] [--progress auto|true|false]

A case that cannot be used is logged and skipped; the others are prepared, no datalist is written,
and the run ends with exit status 1 and, as its last line, ``prepare_brats.py: error:`` naming every
refused case.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

try:
    from sasnet_components.data.brats import BRATS_LAYOUTS, prepare_brats
    from sasnet_components.utils.console import add_preparation_options, run_preparation
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from sasnet_components.data.brats import BRATS_LAYOUTS, prepare_brats
    from sasnet_components.utils.console import add_preparation_options, run_preparation

__all__ = ["parse_args", "main"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (``argv`` defaults to ``sys.argv[1:]``)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input_dir", required=True, help="BraTS 2019 root (release or h5 layout); never written")
    p.add_argument(
        "--output_dir", default="data/brats", help="destination folder (default: data/brats, relative to cwd)"
    )
    p.add_argument("--num_labeled", type=int, default=50, help="labeled = first N ids of the train list (default 50)")
    p.add_argument("--modalities", default="flair", choices=("flair", "all"), help="FLAIR only (default) or all four")
    p.add_argument(
        "--label_mode", default="whole", choices=("whole", "classes"), help="whole tumour (default) or classes"
    )
    p.add_argument("--layout", default="auto", choices=BRATS_LAYOUTS, help="input layout (default: auto-detect)")
    p.add_argument(
        "--train_list",
        default=None,
        help="train id list (default: <input_dir>/train.txt, else the literature's list shipped with the package)",
    )
    p.add_argument(
        "--val_list", default=None, help="validation id list (default: <input_dir>/val.txt, as --train_list)"
    )
    p.add_argument("--test_list", default=None, help="test id list (default: <input_dir>/test.txt, as --train_list)")
    return add_preparation_options(p).parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    """Run :func:`sasnet_components.data.brats.prepare_brats` from the command line; return the datalist.

    Bad input ends with ``prepare_brats.py: error: <message>`` as the last line on stderr and exit status 1.
    """
    return run_preparation(__file__, prepare_brats, **vars(parse_args(argv)))  # the options are its arguments


if __name__ == "__main__":
    main()
