"""Write a small synthetic Left-Atrium-like dataset in the community h5 layout.

Usage:
    python scripts/make_synthetic_la.py --output_dir demo_output/raw [--num_train 12] [--num_test 2]
        [--shape "[64,64,32]"] [--seed 0]
"""

from __future__ import annotations

import fire

from sasnet_components.data.synthetic import make_synthetic_la


def main(output_dir: str, num_train: int = 12, num_test: int = 2, shape=(64, 64, 32), seed: int = 0) -> None:
    root = make_synthetic_la(output_dir, num_train=num_train, num_test=num_test, shape=tuple(shape), seed=seed)
    print(f"wrote {num_train} training and {num_test} test cases of shape {tuple(shape)} to {root}")


if __name__ == "__main__":
    fire.Fire(main)
