"""Seconds per volume and Dice of sliding-window inference: the paper's dense windows vs faster settings.

Loads the bundle's network (``network_def`` of ``train.yaml``) and a checkpoint, then for each case
of a datalist list runs MONAI's sliding-window inference twice:

- ``dense``: the paper's windows (roi 112x112x80, stride 18 in-plane and 4 in z, uniform averaging);
- ``fast``: the same roi with overlap 0.5, gaussian blending.

It prints the seconds per volume of each, the Dice of each against the label, and the Dice
difference. Dice differences are only meaningful for a trained model.

Usage:
    python scripts/benchmark_inference.py --checkpoint bundles/la/models/model.pt \
        --datalist data/la/datalist.json --eval_list validation --num_cases 2 --device cpu
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from monai.bundle import ConfigParser
from monai.inferers import sliding_window_inference
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

from sasnet_components.data import evaluation_datalist, overlap_for_stride
from sasnet_components.metrics import dice

CONFIGS = Path(__file__).resolve().parents[1] / "bundles" / "la" / "configs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="network weights (models/model.pt)")
    parser.add_argument("--datalist", required=True, help="datalist.json written by scripts/prepare_la.py")
    parser.add_argument("--eval_list", default="validation", choices=("validation", "test", "labeled"))
    parser.add_argument("--num_cases", type=int, default=0, help="0: every case of the list")
    parser.add_argument("--roi", type=int, nargs=3, default=(112, 112, 80))
    parser.add_argument("--stride", type=int, nargs=3, default=(18, 18, 4), help="dense (paper) stride")
    parser.add_argument("--fast_overlap", type=float, default=0.5)
    parser.add_argument("--sw_batch_size", type=int, default=4)
    parser.add_argument("--n_filters", type=int, default=16, help="must match the checkpoint")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    config = ConfigParser(ConfigParser.load_config_file(str(CONFIGS / "train.yaml")))
    config["network_def#n_filters"] = args.n_filters
    network = config.get_parsed_content("network_def").to(args.device)
    state = torch.load(args.checkpoint, map_location=args.device, weights_only=True)
    network.load_state_dict(state["model"] if "model" in state else state)  # weights, or a training checkpoint
    network.eval()

    cases = evaluation_datalist(args.datalist, args.eval_list)
    cases = cases[: args.num_cases] if args.num_cases > 0 else cases
    load = Compose([LoadImaged(keys=["image", "label"], image_only=True), EnsureChannelFirstd(keys=["image", "label"])])
    settings = {
        "dense": dict(overlap=overlap_for_stride(args.roi, args.stride), mode="constant"),
        "fast": dict(overlap=args.fast_overlap, mode="gaussian"),
    }
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, roi {tuple(args.roi)}")
    for name, kwargs in settings.items():
        print(f"  {name}: overlap {kwargs['overlap']}, mode {kwargs['mode']}, sw_batch_size {args.sw_batch_size}")
    seconds = {name: [] for name in settings}
    dices = {name: [] for name in settings}
    for case in cases:
        data = load(case)
        image = data["image"].unsqueeze(0).to(args.device)
        label = data["label"][0].numpy() > 0
        row = []
        for name, kwargs in settings.items():
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            with torch.no_grad():
                prob = sliding_window_inference(image, args.roi, args.sw_batch_size, network, **kwargs)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds[name].append(time.perf_counter() - start)
            pred = (prob[0].argmax(0) == 1).cpu().numpy()
            dices[name].append(dice(pred, label))
            row.append(f"{name} {seconds[name][-1]:7.1f} s  Dice {dices[name][-1]:.4f}")
        print(f"{case['case_id']} {tuple(image.shape[2:])}: " + " | ".join(row))
    for name in settings:
        print(f"{name:5s}: {statistics.mean(seconds[name]):7.1f} s per volume, mean Dice {statistics.mean(dices[name]):.4f}")
    diff = [d - f for d, f in zip(dices["dense"], dices["fast"])]
    print(
        f"speed-up fast vs dense: {statistics.mean(seconds['dense']) / statistics.mean(seconds['fast']):.1f}x; "
        f"Dice dense - fast: mean {statistics.mean(diff):+.4f}, max |diff| {max(abs(d) for d in diff):.4f} "
        f"over {len(diff)} cases"
    )


if __name__ == "__main__":
    main()
