"""Time a SASNet training iteration: the bundle's fast path against a research-style loop, in one run.

Both loops are the LA bundle's trainer (``bundles/la/configs/train.yaml``), built with the same
seed on the same prepared cases, so they draw the same batches:

- ``fast``: the training path this project runs by default on a GPU: volumes cached on the device
  and crops / views drawn there (``device_data``), bfloat16 autocast where the GPU supports it, the
  signed distance map once per iteration on the device (``sdm_backend auto``: torch on a GPU,
  SciPy on CPU), loss values read only when logged.
- ``research``: the way research code for this method trains: float32, crops and views by
  ``DataLoader`` workers on the CPU with a copy of each batch to the device, the distance map by
  SciPy on the CPU computed once per branch (twice per iteration, as the reference code does).

Each loop runs ``--warmup`` iterations, then ``--iterations`` timed ones without any added
synchronisation (the iteration time, iterations per second, the projected minutes for the
paper's 40,000 iterations and the peak memory), then ``--profile_iterations`` in which every stage
(data, transfer, forward, Seg, SAR, SDM, PLC + SRC, backward, optimizer) is timed between device
synchronisations (the split; synchronising costs a little, so the stages add up to slightly more than
the iteration time). The speed-up is the ratio of the two loops' iteration times, from this run.

``--options`` times variants of the fast loop, one change each (``channels_last``, ``compile``,
``compile_reduce_overhead``, ``sdm_torch``, ``sdm_cupy``, ``sar_uint8``, ``float32``), with the first
iteration's loss beside the fast loop's (same weights, same batch): an option is worth keeping where
it is faster and its loss agrees within float tolerance.

Settings: ``small`` (patch 48x48x32, 4 filters: runs on a CPU in about a minute) and ``paper``
(patch 112x112x80, 16 filters, batch 2 + 2). Without ``--dataset_dir`` a synthetic dataset of the
setting's size is generated in a temporary folder.

Usage:
    python scripts/benchmark_training.py --setting small --device cpu
    python scripts/benchmark_training.py --setting paper --dataset_dir data/la --options channels_last sdm_cupy \\
        --output_dir runs/benchmark
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional
from unittest import mock

import torch
from ignite.engine import Events
from monai.bundle import ConfigParser

import sasnet_components.engines.semi_supervised_trainer as trainer_module
from sasnet_components.data import make_synthetic_la
from sasnet_components.data.la import prepare_la
from sasnet_components.losses.src import ensemble_to_sdm
from sasnet_components.utils import atomic_write_text, report_input_errors

TRAIN = Path(__file__).resolve().parents[1] / "bundles" / "la" / "configs" / "train.yaml"
PAPER_ITERATIONS = 40000
STAGES = ("data", "transfer", "forward", "seg", "sar", "sdm", "plc_src", "backward", "optimizer")
SETTINGS: Dict[str, Dict[str, Any]] = {
    "small": {"patch_size": [48, 48, 32], "n_filters": 4, "shape": [64, 64, 40], "iterations": 8, "warmup": 2, "profile": 4},
    "paper": {"patch_size": [112, 112, 80], "n_filters": 16, "shape": [128, 128, 88], "iterations": 50, "warmup": 10, "profile": 10},
}
OPTIONS: Dict[str, Dict[str, Any]] = {
    "channels_last": {"channels_last": True},
    "compile": {"compile": True},
    "compile_reduce_overhead": {"compile": "reduce-overhead"},
    "sdm_torch": {"sdm_backend": "torch"},
    "sdm_cupy": {"sdm_backend": "cupy"},
    "sar_uint8": {"sar_memory_dtype": "uint8"},
    "float32": {"amp": False},
}


def _sync(device: torch.device) -> Callable[[], None]:
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


class StageTimer:
    """``SemiSupervisedTrainer.stage_timer``: wall time of each stage between device synchronisations, when enabled."""

    def __init__(self, sync: Callable[[], None]) -> None:
        self.sync = sync
        self.enabled = False
        self.times: Dict[str, List[float]] = defaultdict(list)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        self.sync()
        start = time.perf_counter()
        yield
        self.sync()
        self.times[name].append(time.perf_counter() - start)


def _sdm_twice(ensemble: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """The reference code's distance map: the same map computed once per branch."""
    ensemble_to_sdm(ensemble, backend=backend)
    return ensemble_to_sdm(ensemble, backend=backend)


def _synthetic_dataset(root: Path, shape: List[int]) -> str:
    raw = make_synthetic_la(str(root / "raw"), num_train=8, num_test=0, shape=shape, seed=0)
    prepare_la(str(raw), str(root / "prepared"), num_labeled=4, num_validation=0)
    return str(root / "prepared")


def run_loop(
    name: str,
    dataset_dir: str,
    workdir: Path,
    device: torch.device,
    setting: Dict[str, Any],
    overrides: Dict[str, Any],
    research: bool = False,
) -> Dict[str, Any]:
    """Build the bundle's trainer with `overrides`, run it and return its timings (seconds) and first loss."""
    warmup, timed, profiled = setting["warmup"], setting["iterations"], setting["profile"]
    total = warmup + timed + profiled
    config = {
        "bundle_root": str(TRAIN.parents[1]),
        "dataset_dir": dataset_dir,
        "output_dir": str(workdir / name / "runs"),
        "ckpt_dir": str(workdir / name / "models"),
        "device": str(device),
        "patch_size": setting["patch_size"],
        "network_def#n_filters": setting["n_filters"],
        "max_iterations": total,
        "val_interval": 10 * total,  # no validation in the timed run
        "checkpoint_interval": 10 * total,
        "log_interval": total,
        "progress": False,
        **overrides,
    }
    parser = ConfigParser()
    parser.read_config(str(TRAIN))
    parser.update(config)
    parser.get_parsed_content("initialize")
    build_start = time.perf_counter()
    trainer = parser.get_parsed_content("train#trainer")
    setup_s = time.perf_counter() - build_start  # caching the cases (and the workers' start, for the research loop)
    sync = _sync(device)
    timer = StageTimer(sync)
    trainer.stage_timer = timer
    marks: Dict[str, float] = {}
    losses: List[torch.Tensor] = []

    def batch_started(engine) -> None:
        if timer.enabled:
            sync()
            marks["batch"] = time.perf_counter()

    def batch_completed(engine) -> None:
        if timer.enabled:
            sync()
            timer.times["data"].append(time.perf_counter() - marks["batch"])

    def iteration_completed(engine) -> None:
        iteration = engine.state.iteration
        if iteration == 1:
            losses.append(engine.state.output["loss"].detach())
        if iteration == warmup:
            sync()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            marks["start"] = time.perf_counter()
        elif iteration == warmup + timed:
            sync()
            marks["end"] = time.perf_counter()
            timer.enabled = True
        elif iteration == total:
            sync()
            marks["profiled"] = time.perf_counter()

    trainer.add_event_handler(Events.GET_BATCH_STARTED, batch_started)
    trainer.add_event_handler(Events.GET_BATCH_COMPLETED, batch_completed)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, iteration_completed)
    patch = mock.patch.object(trainer_module, "ensemble_to_sdm", _sdm_twice) if research else _nothing()
    with patch:
        trainer.run()
    sync()
    seconds = (marks["end"] - marks["start"]) / timed
    profiled_seconds = (marks["profiled"] - marks["end"]) / profiled
    if device.type == "cuda":
        peak = f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB GPU"
    else:
        peak = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB RSS (process so far)"
    result = {
        "name": name,
        "seconds_per_iteration": seconds,
        "iterations_per_second": 1.0 / seconds,
        "minutes_for_40000": seconds * PAPER_ITERATIONS / 60,
        "setup_seconds": setup_s,
        "peak_memory": peak,
        "first_loss": float(losses[0]),
        "stages_ms": {s: 1000 * statistics.median(timer.times[s]) for s in STAGES if timer.times.get(s)},
        "profiled_ms_per_iteration": 1000 * profiled_seconds,
        "settings": {k: v for k, v in overrides.items()},
    }
    del trainer, parser  # free this loop's cached volumes and SAR memory before the next loop
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _environment(device: torch.device) -> Dict[str, str]:
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_cores": str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()),
        "threads": str(torch.get_num_threads()),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, cuda=str(torch.version.cuda), cudnn=str(torch.backends.cudnn.version()))
    return env


def report(results: List[Dict[str, Any]], setting_name: str, env: Dict[str, str]) -> str:
    """The benchmark as Markdown: the loops, the speed-up, the stage split and the options."""
    fast = next(r for r in results if r["name"] == "fast")
    lines = [
        f"# Training iteration benchmark ({setting_name} setting)",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in env.items()),
        "",
        "| loop | ms / iteration | iterations / s | 40,000 iterations (min) | peak memory | first loss | setup (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['name']} | {1000 * r['seconds_per_iteration']:.1f} | {r['iterations_per_second']:.2f} | "
            f"{r['minutes_for_40000']:.1f} | {r['peak_memory']} | {r['first_loss']:.6f} | {r['setup_seconds']:.1f} |"
        )
    research = next((r for r in results if r["name"] == "research"), None)
    if research is not None:
        ratio = research["seconds_per_iteration"] / fast["seconds_per_iteration"]
        lines += ["", f"Speed-up of the fast loop over the research loop: {ratio:.2f}x (iteration time, same run)."]
    lines += ["", "Stage split (median ms, each stage between device synchronisations):", ""]
    names = [r["name"] for r in results]
    lines += ["| stage | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for stage in STAGES:
        cells = [f"{r['stages_ms'][stage]:.2f}" if stage in r["stages_ms"] else "-" for r in results]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    sums = [f"{sum(r['stages_ms'].values()):.2f}" for r in results]
    lines.append("| sum of the stages | " + " | ".join(sums) + " |")
    totals = [f"{r['profiled_ms_per_iteration']:.2f}" for r in results]
    lines.append("| iteration, synchronised (mean) | " + " | ".join(totals) + " |")
    lines += ["", "The rest of a synchronised iteration is the engine's handlers and the epoch boundaries (SAR memory roll, loader restart)."]
    options = [r for r in results if r["name"] not in ("fast", "research")]
    if options:
        lines += ["", "Options (each one change to the fast loop):", ""]
        lines += ["| option | ms / iteration | time vs fast | first loss rel. diff vs fast |", "|---|---|---|---|"]
        for r in options:
            speed = r["seconds_per_iteration"] / fast["seconds_per_iteration"]
            diff = abs(r["first_loss"] - fast["first_loss"]) / max(abs(fast["first_loss"]), 1e-12)
            lines.append(f"| {r['name']} | {1000 * r['seconds_per_iteration']:.1f} | {speed:.2f}x | {diff:.1e} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="small")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1 ...")
    parser.add_argument("--dataset_dir", default=None, help="a prepared dataset (scripts/prepare_la.py); default: synthetic")
    parser.add_argument("--num_labeled", type=int, default=None, help="labeled cases (default: the bundle's 16; synthetic: 4)")
    parser.add_argument("--iterations", type=int, default=None, help="timed iterations (default: the setting's)")
    parser.add_argument("--warmup", type=int, default=None, help="iterations before timing (default: the setting's)")
    parser.add_argument("--profile_iterations", type=int, default=None, help="iterations of the stage split")
    parser.add_argument("--no_research", action="store_true", help="skip the research-style loop")
    parser.add_argument("--research_workers", type=int, default=min(4, os.cpu_count() or 1), help="its DataLoader workers")
    parser.add_argument("--options", nargs="*", default=[], choices=sorted(OPTIONS), help="variants of the fast loop")
    parser.add_argument("--output_dir", default=None, help="write benchmark.md and benchmark.json there")
    args = parser.parse_args(argv)
    report_input_errors()
    for flag in ("iterations", "warmup", "profile_iterations"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            parser.error(f"--{flag} must be >= 1, got {value}")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else "cpu" if args.device == "auto" else args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    setting = dict(SETTINGS[args.setting])
    setting.update(
        {k: v for k, v in (("iterations", args.iterations), ("warmup", args.warmup), ("profile", args.profile_iterations)) if v}
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    gpu = device.type == "cuda"
    bf16 = gpu and torch.cuda.is_bf16_supported()
    fast = {"device_data": True, "amp": gpu, "amp_dtype": "bfloat16" if bf16 else "float16", "num_workers": 0}
    research = {"device_data": False, "amp": False, "sdm_backend": "scipy", "num_workers": args.research_workers}
    with tempfile.TemporaryDirectory(prefix="sasnet-benchmark-") as tmp:
        work = Path(tmp)
        dataset_dir = args.dataset_dir
        if dataset_dir is None:
            print(f"generating a synthetic dataset of 8 cases {setting['shape']} ...", file=sys.stderr)
            dataset_dir = _synthetic_dataset(work / "data", setting["shape"])
        num_labeled = args.num_labeled or (4 if args.dataset_dir is None else None)  # synthetic: 4 of its 8 cases
        if num_labeled:
            fast["num_labeled"] = research["num_labeled"] = num_labeled
        loops = [("fast", fast, False)]
        if not args.no_research:
            loops.append(("research", research, True))
        loops += [(option, {**fast, **OPTIONS[option]}, False) for option in args.options]
        results = []
        for name, overrides, is_research in loops:
            print(f"timing the {name} loop ...", file=sys.stderr)
            results.append(run_loop(name, dataset_dir, work, device, setting, overrides, research=is_research))
    text = report(results, args.setting, _environment(device))
    print(text)
    if args.output_dir:
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "benchmark.md", text)
        atomic_write_text(out / "benchmark.json", json.dumps({"setting": setting, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
