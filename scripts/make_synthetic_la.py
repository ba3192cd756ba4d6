"""Write a small synthetic Left-Atrium-like dataset: the community h5 layout, or a user's NIfTI folders.

Usage:
    python scripts/make_synthetic_la.py --output_dir demo_output/raw [--num_train 12] [--num_test 2]
        [--shape "[64,64,32]"] [--seed 0]
    python scripts/make_synthetic_la.py --output_dir demo_output/mine --layout nifti [--num_train 12]
        [--num_labeled 6]       # images/<id>.nii.gz for every case, labels/<id>.nii.gz for the first 6
"""

from __future__ import annotations

import fire

from sasnet_components.data.synthetic import make_synthetic_la, make_synthetic_nifti


def main(
    output_dir: str,
    num_train: int = 12,
    num_test: int = 2,
    shape=(64, 64, 32),
    seed: int = 0,
    layout: str = "h5",
    num_labeled: int = 6,
) -> None:
    if layout == "nifti":
        root = make_synthetic_nifti(output_dir, num_cases=num_train, num_labeled=num_labeled, shape=tuple(shape), seed=seed)
        print(f"wrote {num_train} NIfTI images of shape {tuple(shape)}, {num_labeled} of them labelled, to {root}")
        return
    if layout != "h5":
        raise SystemExit(f"make_synthetic_la.py: error: `layout` must be 'h5' or 'nifti', got {layout!r}.")
    root = make_synthetic_la(output_dir, num_train=num_train, num_test=num_test, shape=tuple(shape), seed=seed)
    print(f"wrote {num_train} training and {num_test} test cases of shape {tuple(shape)} to {root}")


if __name__ == "__main__":
    fire.Fire(main)
