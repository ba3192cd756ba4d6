"""Seconds from process start to the first work of each bundle command: training, evaluating, inferring.

Each run is a fresh Python process that runs the command as ``python -m monai.bundle run <command>``
does (same entry point, same command-line overrides) on the demo data with the demo's small settings,
and ends at the command's first work: the first training iteration, the first evaluated case, the
first segmented case (the engine's first ``ITERATION_STARTED``: its first batch is loaded). It records
when each startup phase ends:

- ``imports``: Python and ``import monai.bundle`` (all of MONAI, its dependencies);
- ``config read``: the config files read, the logging set up, the overrides applied;
- ``initialize``: the config parsed, its ``imports`` (``sasnet_components``) imported, its
  ``initialize`` items run;
- ``first work``: the command's own items until the first batch is loaded (datalists, datasets and
  their caching, network, checkpoint, data loader).

and, before the first work: the seconds spent caching datasets (``CacheDataset``, cases cached), the
image files and ``datalist.json`` files the main process opened (data loader workers not counted),
and the config items that took longest to build (their own seconds, without the items they refer to).

With ``--baseline DIR`` every command also runs from another checkout of the repository (its
``sasnet_components`` and bundle configs), in turn with this one (this, baseline, this, ...), and
the ratio baseline / this is printed: the median of the run-by-run ratios (above 1: this checkout
starts faster). Arguments after ``--`` are added to every command's, e.g. ``-- --max_iterations 30``
(a run that ends before its first validation). Timings are wall-clock seconds; on a shared machine
quote medians and ratios.

Usage:
    bash scripts/demo.sh    # once: demo_output/prepared (data) and demo_output/models/model.pt
    python scripts/benchmark_startup.py --repeats 5
    python scripts/benchmark_startup.py --repeats 5 --baseline ../sasnet-main --commands training -- --max_iterations 30
"""

from __future__ import annotations

import time

_START = time.time()  # before any heavy import: the child's own start when no parent gave one

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Dict, List, Optional, Sequence  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ("training", "evaluating", "inferring")
PHASES = ("imports", "config read", "initialize", "first work")
CONFIG_FILES = {
    "training": ["train.yaml"],
    "evaluating": ["train.yaml", "evaluate.yaml"],
    "inferring": ["train.yaml", "inference.yaml"],
}
_T0_ENV = "SASNET_STARTUP_T0"  # the parent's clock at the child's spawn


def command_line(command: str, repo: Path, dataset_dir: str, ckpt_dir: str, input_dir: str, work_dir: str) -> List[str]:
    """The ``monai.bundle run`` arguments of `command` with the demo's small settings (scripts/demo.sh).

    Args:
        command: ``"training"``, ``"evaluating"`` or ``"inferring"``.
        repo: the checkout whose bundle configs are run.
        dataset_dir: prepared data (``datalist.json``).
        ckpt_dir: folder of the ``model.pt`` that evaluating and inferring load.
        input_dir: folder of the images that inferring segments.
        work_dir: a fresh folder for the outputs.
    """
    configs = [str(repo / "bundles" / "la" / "configs" / name) for name in CONFIG_FILES[command]]
    args = ["run", command, "--config_file", configs[0] if len(configs) == 1 else repr(configs)]
    args += ["--dataset_dir", dataset_dir, "--output_dir", work_dir, "--device", "cpu", "--num_labeled", "4"]
    args += ["--patch_size", "[48,48,32]", "--network_def#n_filters", "4", "--num_workers", "1"]
    if command == "training":
        args += ["--ckpt_dir", work_dir + "/models", "--max_iterations", "120", "--val_interval", "40"]
        args += ["--checkpoint_interval", "60", "--log_interval", "20"]
    elif command == "evaluating":
        args += ["--ckpt_dir", ckpt_dir, "--eval_roi_size", "[48,48,32]", "--eval_stride", "[16,16,8]"]
    else:
        args += ["--ckpt_dir", ckpt_dir, "--input_dir", input_dir]
    return args


class _Recorder:
    """Startup phases and costs of the running command, written as JSON at its first work."""

    def __init__(self, t0: float, report: str) -> None:
        self.t0, self.report = t0, report
        self.marks: Dict[str, float] = {}
        self.cache = {"seconds": 0.0, "cases": 0, "datasets": 0}
        self.item_seconds: Dict[str, float] = {}
        self.opened: Dict[str, set] = {"image files": set(), "datalist.json": set()}

    def mark(self, phase: str) -> None:
        """Record the end of `phase` (its first end only), in seconds since the process start."""
        self.marks.setdefault(phase, time.time() - self.t0)

    def audit(self, event: str, args: Any) -> None:
        """Audit hook: the image files and datalists this process opens before the first work."""
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)) and "first work" not in self.marks:
            name = os.fsdecode(args[0])
            if name.endswith((".nii", ".nii.gz", ".h5", ".nrrd")):
                self.opened["image files"].add(name)
            elif name.endswith("datalist.json"):
                self.opened["datalist.json"].add(name)

    def write(self, engine: str) -> None:
        """Mark the first work (of `engine`, a class name) and write the report."""
        self.mark("first work")
        slowest = sorted(self.item_seconds.items(), key=lambda kv: -kv[1])[:6]
        result = {
            "marks": self.marks,
            "engine": engine,
            "cache": self.cache,
            "opened": {kind: len(names) for kind, names in self.opened.items()},
            "slowest_items": slowest,
        }
        Path(self.report).write_text(json.dumps(result))


def _child(report: str, bundle_args: Sequence[str]) -> None:
    """Run ``python -m monai.bundle <bundle_args>`` in this process; write the timings at its first work."""
    recorder = _Recorder(float(os.environ.get(_T0_ENV, _START)), report)
    sys.addaudithook(recorder.audit)

    import runpy

    import monai.bundle  # noqa: F401  (what ``python -m monai.bundle`` imports first)
    from ignite.engine import Engine, Events
    from monai.bundle import ConfigWorkflow
    from monai.bundle.config_item import ConfigComponent, ConfigExpression
    from monai.data import CacheDataset

    recorder.mark("imports")

    def timed(
        cls: type, name: str, after: Optional[Callable[[], None]] = None, own_time: Optional[Callable[[Any, float], None]] = None
    ) -> None:
        """Wrap the method `name` of `cls`: `own_time(instance, seconds)` and `after()` once it returns."""
        original = getattr(cls, name)

        def wrapper(self, *args, **kwargs):
            start = time.time()
            try:
                return original(self, *args, **kwargs)
            finally:
                if own_time is not None:
                    own_time(self, time.time() - start)
                if after is not None:
                    after()

        setattr(cls, name, wrapper)

    def item_time(item: Any, seconds: float) -> None:
        recorder.item_seconds[item.get_id()] = recorder.item_seconds.get(item.get_id(), 0.0) + seconds

    def cache_time(dataset: Any, seconds: float) -> None:
        recorder.cache["seconds"] += seconds
        recorder.cache["datasets"] += 1
        recorder.cache["cases"] += int(getattr(dataset, "cache_num", 0))

    timed(ConfigWorkflow, "__init__", after=lambda: recorder.mark("config read"))
    timed(ConfigWorkflow, "initialize", after=lambda: recorder.mark("initialize"))
    timed(ConfigComponent, "instantiate", own_time=item_time)
    timed(ConfigExpression, "evaluate", own_time=item_time)
    timed(CacheDataset, "__init__", own_time=cache_time)
    engine_run = Engine.run

    def run(self, *args, **kwargs):
        def first_work(engine: Engine) -> None:
            recorder.write(type(engine).__name__)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)  # the startup is measured; the work itself is not

        self.add_event_handler(Events.ITERATION_STARTED(once=1), first_work)
        return engine_run(self, *args, **kwargs)

    Engine.run = run
    sys.argv = ["monai.bundle", *bundle_args]
    runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
    recorder.write("none (the command ended without an iteration)")


def _run_once(command: str, repo: Path, args: argparse.Namespace) -> Dict[str, Any]:
    """One child process of `command` from the checkout `repo`; its recorded timings."""
    with tempfile.TemporaryDirectory(prefix="sasnet-startup-") as work:
        report = os.path.join(work, "report.json")
        bundle_args = command_line(command, repo, args.dataset_dir, args.ckpt_dir, args.input_dir, os.path.join(work, "out"))
        bundle_args += args.bundle_args
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")])))
        env[_T0_ENV] = repr(time.time())
        done = subprocess.run(
            [sys.executable, __file__, "--child", report, "--", *bundle_args],
            env=env,
            cwd=str(repo),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        if done.returncode != 0 or not os.path.isfile(report):
            raise RuntimeError(f"{command} from {repo} failed (exit status {done.returncode}):\n{done.stdout[-3000:]}")
        return json.loads(Path(report).read_text())


def _phase_seconds(result: Dict[str, Any]) -> Dict[str, float]:
    """Seconds of each phase (from the end of the previous one) and the total."""
    seconds, previous = {}, 0.0
    for phase in PHASES:
        end = result["marks"].get(phase, previous)
        seconds[phase], previous = end - previous, end
    seconds["total"] = result["marks"]["first work"]
    return seconds


def _print_command(command: str, runs: Dict[str, List[Dict[str, Any]]]) -> None:
    """The median seconds of each phase per checkout, the ratio baseline / this, the costs before the first work."""
    labels = list(runs)
    seconds = {label: [_phase_seconds(r) for r in runs[label]] for label in labels}
    paired = len(labels) > 1
    title = f"\n{command}: seconds, median of {len(runs[labels[0]])} runs"
    print(title + (", ratio baseline / this run by run" if paired else ""))
    print(f"  {'phase':<12}" + "".join(f"{label:>10}" for label in labels) + ("     ratio" if paired else ""))
    for key in (*PHASES, "total"):
        row = f"  {key:<12}" + "".join(f"{statistics.median(s[key] for s in seconds[label]):>10.3f}" for label in labels)
        if paired:
            pairs = [(b[key], t[key]) for t, b in zip(seconds["this"], seconds["baseline"]) if t[key] > 0]
            row += f"{statistics.median(b / t for b, t in pairs):>9.2f}x" if pairs else ""
        print(row)
    for label in labels:
        last = runs[label][-1]
        cache, opened = last["cache"], last["opened"]
        slowest = ", ".join(f"{k} {v:.2f}" for k, v in last["slowest_items"])
        print(
            f"  {label}: first work in {last['engine']}; before it: {cache['datasets']} CacheDataset(s), "
            f"{cache['cases']} cases cached in {cache['seconds']:.2f} s; opened {opened['image files']} image files, "
            f"{opened['datalist.json']} datalist.json; slowest config items (own seconds, last run): {slowest}"
        )


def main() -> None:
    split = sys.argv.index("--") if "--" in sys.argv else len(sys.argv)
    own, bundle_args = sys.argv[1:split], sys.argv[split + 1 :]
    if own[:1] == ["--child"]:  # internal: one measured process, `--child REPORT -- <monai.bundle arguments>`
        _child(own[1], bundle_args)
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", nargs="+", choices=COMMANDS, default=list(COMMANDS))
    parser.add_argument("--repeats", type=int, default=5, help="measured runs per command (and checkout)")
    parser.add_argument("--baseline", type=Path, default=None, help="another checkout, measured alternately")
    parser.add_argument("--dataset_dir", default=str(REPO / "demo_output" / "prepared"), help="prepared data (scripts/demo.sh)")
    parser.add_argument("--ckpt_dir", default=str(REPO / "demo_output" / "models"), help="folder of model.pt (scripts/demo.sh)")
    parser.add_argument("--input_dir", default=None, help="images to segment (default: <dataset_dir>/imagesTs)")
    args = parser.parse_args(own)
    args.bundle_args = bundle_args
    args.input_dir = args.input_dir or os.path.join(args.dataset_dir, "imagesTs")
    for needed in (os.path.join(args.dataset_dir, "datalist.json"), os.path.join(args.ckpt_dir, "model.pt"), args.input_dir):
        if not os.path.exists(needed):
            sys.exit(f"{needed} not found: run `bash scripts/demo.sh` first, or give --dataset_dir / --ckpt_dir / --input_dir.")
    checkouts = {"this": REPO}
    if args.baseline is not None:
        checkouts["baseline"] = args.baseline.resolve()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "unknown"
    print(f"{os.cpu_count()} CPUs (load average {load}), Python {sys.version.split()[0]}")
    print("checkouts: " + ", ".join(f"{k} {v}" for k, v in checkouts.items()) + "; extra arguments: " + " ".join(bundle_args))
    for command in args.commands:
        for repo in checkouts.values():  # warm-up: file system caches, bytecode
            _run_once(command, repo, args)
        runs: Dict[str, List[Dict[str, Any]]] = {label: [] for label in checkouts}
        for _ in range(args.repeats):  # in turn: a drift of the machine's speed hits both
            for label, repo in checkouts.items():
                runs[label].append(_run_once(command, repo, args))
        _print_command(command, runs)


if __name__ == "__main__":
    main()
