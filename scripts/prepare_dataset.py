"""Prepare your own scans for the SASNet bundles: a folder of NIfTI images and a folder of labels for some of them.

Writes the prepared files and a datalist (labelled = the images with a label, a share of them for
validation; unlabelled = the rest), the dataset's fingerprint (``fingerprint.json``: median spacing
and shape, intensity percentiles, modality guess CT / MR) and a suggested override file
(``fingerprint.yaml``: target spacing, patch size, views) that any bundle's ``train.yaml`` takes.

Usage:
    python scripts/prepare_dataset.py --images scans/ --labels masks/ --output_dir data/mine
    python -m monai.bundle run training \\
        --config_file "['bundles/la/configs/train.yaml','data/mine/fingerprint.yaml']"

Labels are matched to images by file name (``case01.nii.gz``, or ``case01_seg.nii.gz`` / ``_label`` /
``_mask`` / ``_gt``); labels that match no image are reported and not used. A mistake in the input
ends with ``prepare_dataset.py: error: <message>`` as the last line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from sasnet_components.data.nifti_folders import prepare_nifti_folders
from sasnet_components.utils.console import progress_option
from sasnet_components.utils.errors import script_errors


def main(argv: Optional[Sequence[str]] = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", required=True, help="folder of NIfTI images (.nii, .nii.gz)")
    p.add_argument("--labels", default=None, help="folder of label maps for some of the images (matched by name)")
    p.add_argument("--output_dir", required=True, help="destination of the prepared dataset (outside the input folders)")
    p.add_argument("--validation_fraction", type=float, default=0.2, help="share of the labelled cases for validation")
    p.add_argument("--name", default="dataset", help="the dataset's name in the datalist")
    p.add_argument("--overwrite", action="store_true", help="rewrite every case, replace a datalist not written here")
    p.add_argument("--progress", type=progress_option, default="auto", help="progress bars: auto, true or false")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(message)s")
    with script_errors(__file__):
        return prepare_nifti_folders(
            args.images,
            args.output_dir,
            labels_dir=args.labels,
            validation_fraction=args.validation_fraction,
            name=args.name,
            overwrite=args.overwrite,
            progress=args.progress,
        )


if __name__ == "__main__":
    main()
