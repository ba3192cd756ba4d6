"""Compare training variants over seeds under one protocol: train, evaluate, tabulate.

Each run (variant, seed) trains the bundle through ``python -m monai.bundle run training``, then
evaluates its final model through ``python -m monai.bundle run evaluating``, each in a process of
its own, and the tables of all finished runs are rewritten after every run.

Usage:
    python scripts/compare.py --variants sasnet supervised fully_supervised --seeds 1337 2024 \\
        --protocol quick --output_dir compare/quick -- --dataset_dir data/la
    python scripts/compare.py --list                     # the built-in variants
    python scripts/compare.py --output_dir compare/quick --table_only

Variants: a name of the built-in registry (``--list``), or a custom one written
``name:key=value,key=value`` (values read as JSON, else YAML, scalars or lists, e.g.
``lr2:learning_rate=0.02`` or ``small:patch_size=[64,64,48]``). A variant's overrides go to its
training and its evaluation (a one-branch model is built with ``--low_level_branch false``).

Protocols (config files of ``--bundle_dir``, default ``bundles/la``):
    full:  training train.yaml; evaluation train.yaml + evaluate.yaml
    quick: training train.yaml + quick.yaml; evaluation train.yaml + evaluate.yaml + quick.yaml

Everything after ``--`` goes to both training and evaluation as further ``monai.bundle`` overrides
(e.g. ``--dataset_dir``, ``--device``, ``--num_workers``); a variant's own overrides win over them.

Writes into ``--output_dir`` (a new or empty folder, or one this script made; any other is refused):
    compare.json                    the protocol, configs, eval list, extra args and variants (marker)
    results.md, results.csv         one row per variant: mean and std over seeds
    <variant>/seed<seed>/           settings.json, timing.json, train.log, eval.log,
                                    runs/ (checkpoints, tensorboard), models/, eval/, result.json

Re-running the same command resumes: finished runs (result.json) are skipped, an interrupted
training continues from its latest checkpoint, a run whose evaluation did not finish is evaluated
again. Other settings than those recorded (protocol, eval list, extra args, a variant's overrides)
are refused: use another ``--output_dir`` rather than mix results.

A mistake in the input or a failed run ends with ``compare.py: error: <message>`` as the last line
on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import io
import json
import math
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import time
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from fire.parser import DefaultParseValue
from tqdm import tqdm

_REPO = Path(__file__).resolve().parents[1]
try:
    from sasnet_components.utils.bundle import config_keys, unknown_keys_hint
    from sasnet_components.utils.console import progress_option
    from sasnet_components.utils.io import atomic_write_text

    _CHILD_PYTHONPATH = None
except ImportError:  # run from a checkout without installing the package: the bundle runs need it too
    sys.path.insert(0, str(_REPO))
    from sasnet_components.utils.bundle import config_keys, unknown_keys_hint
    from sasnet_components.utils.console import progress_option
    from sasnet_components.utils.io import atomic_write_text

    _CHILD_PYTHONPATH = str(_REPO)

__all__ = [
    "REGISTRY",
    "CompareError",
    "aggregate",
    "bundle_token",
    "format_overrides",
    "main",
    "parse_args",
    "parse_variant",
]

#: built-in variants: name -> (overrides, description)
REGISTRY: dict[str, tuple[dict[str, Any], str]] = {
    "sasnet": ({}, "SASNet with every component (the bundle's settings)"),
    "supervised": ({"semi_supervised": False}, "supervised baseline: the same labelled cases, no unlabelled data"),
    "fully_supervised": (
        {"semi_supervised": False, "num_labeled": "all"},
        "upper bound: every training case labelled, supervised",
    ),
    "no_sar": ({"sar": False}, "SASNet without scale-aware adaptive reweighting (SAR)"),
    "no_src": ({"src": False}, "SASNet without segmentation-regression consistency (SRC)"),
    "no_plc": ({"plc": False}, "SASNet without pseudo-label cross-supervision (PLC)"),
    "no_view_variance": ({"view_variance": False}, "SASNet without view variance enhancement (k-space views)"),
    "one_branch": (
        {"low_level_branch": False, "sar": False, "plc": False},
        "one decoder (no low-level branch), hence no SAR and no PLC",
    ),
}

#: protocol -> (training configs, evaluation configs), files of <bundle_dir>/configs
PROTOCOLS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "quick": (("train.yaml", "quick.yaml"), ("train.yaml", "evaluate.yaml", "quick.yaml")),
    "full": (("train.yaml",), ("train.yaml", "evaluate.yaml")),
}

#: options this script sets for every run (or that would change what it runs): not allowed in a variant or after ``--``
RESERVED_KEYS = frozenset(
    {
        "run_id",
        "init_id",
        "final_id",
        "args_file",
        "config_file",
        "meta_file",
        "output_dir",
        "ckpt_dir",
        "seed",
        "resume_from",
        "eval_list",
        "eval_output_dir",
        "eval_checkpoint",
    }
)
#: options of ``monai.bundle run`` itself that are no config keys
BUNDLE_RUN_OPTIONS = frozenset({"logging_file", "tracking"})

#: (summary metric, scale, column stem, markdown header)
METRICS: tuple[tuple[str, float, str, str], ...] = (
    ("dice", 100.0, "dice_pct", "Dice (%)"),
    ("jaccard", 100.0, "jaccard_pct", "Jaccard (%)"),
    ("hd95", 1.0, "hd95_voxel", "HD95 (voxel)"),
    ("asd", 1.0, "asd_voxel", "ASD (voxel)"),
    ("hd95_mm", 1.0, "hd95_mm", "HD95 (mm)"),
    ("asd_mm", 1.0, "asd_mm", "ASD (mm)"),
)
CSV_COLUMNS: tuple[str, ...] = (
    ("variant", "description", "overrides", "n_seeds", "seeds")
    + tuple(f"{stem}_{stat}" for _, _, stem, _ in METRICS for stat in ("mean", "std"))
    + ("empty_predictions", "wall_min_mean")
)

MARKER = "compare.json"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(#[A-Za-z0-9_]+)*$")
_CHECKPOINT = re.compile(r"^checkpoint_\D*(\d+)\.pt$")
_LOG_TAIL = 25


class CompareError(Exception):
    """A mistake in the input, or a run that failed: reported as ``compare.py: error: <message>``."""


class _Terminated(Exception):
    """SIGTERM: stop the running step, record its time, exit."""


# ------------------------------------------------------------------------------------------ variants
def parse_value(text: str) -> Any:
    """A value of a custom variant: JSON (``0.02``, ``1e-3``, ``false``, ``[64,64,48]``), else YAML, else the text."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return text if value is None and text.strip() not in ("null", "~") else value


def _split_top_level(text: str) -> list[str]:
    """Split at commas outside brackets and quotes (``a=[1,2],b=3`` -> ``['a=[1,2]', 'b=3']``)."""
    parts, depth, quote, start = [], 0, None, 0
    for i, char in enumerate(text):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _check_key(key: str, where: str) -> None:
    if not _KEY.match(key):
        raise CompareError(f"{where}: {key!r} is not a config key (letters, digits, _ and # for a nested item).")
    if key in RESERVED_KEYS:
        raise CompareError(
            f"{where}: --{key} is set by compare.py for every run ({', '.join(sorted(RESERVED_KEYS))}); "
            "use its own options (--seeds, --eval_list, --output_dir) instead."
        )


def parse_variant(spec: str) -> tuple[str, dict[str, Any], str]:
    """``name`` of the registry or ``name:key=value,...`` -> (name, overrides, description).

    Raises:
        CompareError: an unknown name (listing the registry), a malformed custom variant, or a custom
            variant named as a built-in one.
    """
    name, colon, body = spec.partition(":")
    name = name.strip()
    if not colon:
        if name in REGISTRY:
            overrides, description = REGISTRY[name]
            return name, dict(overrides), description
        close = difflib.get_close_matches(name, list(REGISTRY), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        known = "; ".join(f"{n} ({format_overrides(o) or 'defaults'})" for n, (o, _) in REGISTRY.items())
        raise CompareError(
            f"unknown variant {name!r}{hint}. Built-in variants: {known}. A custom variant is written "
            "name:key=value,key=value (e.g. lr2:learning_rate=0.02)."
        )
    if not _NAME.match(name):
        raise CompareError(f"variant {spec!r}: the name {name!r} must be letters, digits, _ . - (it names a folder).")
    if name in REGISTRY:
        raise CompareError(f"variant {spec!r}: {name!r} is a built-in variant; give the custom variant another name.")
    overrides: dict[str, Any] = {}
    for item in _split_top_level(body):
        key, equals, text = item.partition("=")
        key = key.strip()
        if not equals or not key or not text.strip():
            raise CompareError(f"variant {spec!r}: {item!r} is not key=value; write name:key=value,key=value.")
        _check_key(key, f"variant {spec!r}")
        if key in overrides:
            raise CompareError(f"variant {spec!r}: {key!r} is given twice.")
        overrides[key] = parse_value(text.strip())
    return name, overrides, f"custom: {format_overrides(overrides)}"


def _display(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def format_overrides(overrides: Mapping[str, Any]) -> str:
    """``{'sar': False, 'patch_size': [64, 64, 48]}`` -> ``sar=false,patch_size=[64,64,48]`` (the custom-variant syntax)."""
    return ",".join(f"{key}={_display(value)}" for key, value in overrides.items())


def bundle_token(value: Any) -> str:
    """The command-line token that ``monai.bundle`` (through ``fire``, which reads Python literals) turns back into `value`.

    A string goes as it is unless ``fire`` would read it as something else (``'1e-3'``, ``'True'``), then
    quoted; any other value as its Python literal (``False``, ``None``, ``[64, 64, 48]``).

    Raises:
        CompareError: a value that does not survive the trip (e.g. a float that is not finite).
    """
    if isinstance(value, str) and DefaultParseValue(value) == value:
        return value
    token = repr(value)
    parsed = DefaultParseValue(token)
    if parsed != value or type(parsed) is not type(value):
        raise CompareError(f"the value {value!r} cannot be passed to monai.bundle on the command line.")
    return token


def _override_args(overrides: Mapping[str, Any]) -> list[str]:
    args: list[str] = []
    for key, value in overrides.items():
        args += [f"--{key}", bundle_token(value)]
    return args


def _option_keys(extra_args: Sequence[str]) -> list[str]:
    return [token[2:].split("=", 1)[0] for token in extra_args if token.startswith("--") and len(token) > 2]


def _option_value(extra_args: Sequence[str], key: str) -> str | None:
    value = None
    for i, token in enumerate(extra_args):
        if token == f"--{key}" and i + 1 < len(extra_args):
            value = extra_args[i + 1]
        elif token.startswith(f"--{key}="):
            value = token.split("=", 1)[1]
    return value


def _config_keys(config_dir: Path) -> set[str] | None:
    """Top-level keys that the bundle's config files define (as the bundle's own check reads them), or None."""
    try:
        return config_keys(config_dir)
    except (OSError, ValueError, yaml.YAMLError):
        return None  # the bundle's own check will say what is wrong


def _check_known_keys(keys: Sequence[str], known: set[str] | None, config_dir: Path, where: str) -> None:
    if known is None:
        return
    unknown = [k for k in keys if k.split("#", 1)[0] not in known and k not in BUNDLE_RUN_OPTIONS]
    if unknown:
        raise CompareError(
            f"{where}: unknown config key(s) {unknown}, not defined in the files of '{config_dir}': "
            f"{unknown_keys_hint(unknown, known)}"
        )


# ------------------------------------------------------------------------------------------ tables
def aggregate(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean and std (ddof=1) over seeds of each run's metric means, in the units the paper reports.

    Args:
        results: the ``result.json`` contents of one variant's runs (``seed``, ``metrics`` = the
            evaluation's ``metrics_summary.json``, ``train_seconds``, ``eval_seconds``).

    Returns:
        ``n_seeds``, ``seeds``, and for each column stem of :data:`METRICS` (``dice_pct``,
        ``hd95_voxel``, ...) a dict ``mean``, ``std`` (None for fewer than 2 values) and ``n`` (runs with
        a value: a run whose cases all had an empty prediction has no distance), ``empty_predictions``
        (summed over runs) and ``wall_min_mean`` (training + evaluation, minutes per run).
    """
    out: dict[str, Any] = {"n_seeds": len(results), "seeds": sorted(int(r["seed"]) for r in results)}
    for name, scale, stem, _ in METRICS:
        values = []
        for r in results:
            value = r["metrics"].get("mean", {}).get(name)
            if value is not None and math.isfinite(float(value)):
                values.append(float(value) * scale)
        out[stem] = {
            "mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values),
        }
    out["empty_predictions"] = sum(int(r["metrics"].get("num_empty_prediction", 0)) for r in results)
    walls = [(float(r["train_seconds"]) + float(r["eval_seconds"])) / 60.0 for r in results]
    out["wall_min_mean"] = statistics.fmean(walls) if walls else None
    return out


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _cell(stat: Mapping[str, Any], n_seeds: int) -> str:
    if stat["mean"] is None:
        return "-"
    text = f"{stat['mean']:.2f}" if stat["std"] is None else f"{stat['mean']:.2f} ± {stat['std']:.2f}"
    return text if stat["n"] == n_seeds else f"{text} ({stat['n']}/{n_seeds} seeds)"


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def _load_results(out_dir: Path, variant: str) -> list[dict]:
    results = []
    for path in sorted((out_dir / variant).glob("seed*/result.json")):
        try:
            results.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as e:
            raise CompareError(f"cannot read '{path}': {e}; delete it to run that evaluation again.") from e
    return sorted(results, key=lambda r: int(r["seed"]))


def _shown_path(path: str) -> str:
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def _config_arg(bundle_dir: str, names: Sequence[str]) -> str:
    paths = [os.path.join(_shown_path(bundle_dir), "configs", name) for name in names]
    return paths[0] if len(paths) == 1 else "[" + ",".join(repr(p) for p in paths) + "]"


def write_tables(out_dir: Path, marker: Mapping[str, Any], order: Sequence[str] | None = None) -> list[dict]:
    """Rewrite ``results.csv`` and ``results.md`` of `out_dir` (atomically) from its result.json files.

    Rows: the variants of `order` first, then the others recorded in the marker. Returns the rows
    (:func:`aggregate` plus ``variant``, ``description``, ``overrides``).
    """
    recorded = {v["name"]: v for v in marker["variants"]}
    names = list(dict.fromkeys([*(order or []), *recorded]))
    rows, machines, all_seeds, num_cases = [], {}, set(), set()
    for name in names:
        results = _load_results(out_dir, name)
        row = aggregate(results)
        row.update(variant=name, description=recorded[name]["description"], overrides=recorded[name]["overrides"])
        rows.append(row)
        for r in results:
            all_seeds.add(int(r["seed"]))
            num_cases.add(r["metrics"].get("num_cases"))
            machine = r.get("machine", {})
            key = (
                f"{machine.get('cpu', 'unknown CPU')} ({machine.get('cpu_count', '?')} cores), "
                f"torch {machine.get('torch', '?')}, device {machine.get('device', '?')}"
            )
            machines[key] = machines.get(key, 0) + 1

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        metrics = [_number(row[stem][stat]) for _, _, stem, _ in METRICS for stat in ("mean", "std")]
        writer.writerow(
            [row["variant"], row["description"], format_overrides(row["overrides"]), row["n_seeds"]]
            + [" ".join(str(s) for s in row["seeds"])]
            + metrics
            + [row["empty_predictions"], _number(row["wall_min_mean"])]
        )
    atomic_write_text(out_dir / "results.csv", buffer.getvalue())

    setup = marker["setup"]
    with_mm = any(row[stem]["mean"] is not None for row in rows for stem in ("hd95_mm", "asd_mm"))
    shown = [m for m in METRICS if with_mm or not m[0].endswith("_mm")]
    extra = shlex.join(setup["extra_args"]) if setup["extra_args"] else "none"
    lines = [
        f"# Comparison of training variants: protocol `{setup['protocol']}`",
        "",
        f"- Training: `--config_file \"{_config_arg(setup['bundle_dir'], setup['train_configs'])}\"`",
        f"- Evaluation: `--config_file \"{_config_arg(setup['bundle_dir'], setup['eval_configs'])}\"`, "
        f"eval list `{setup['eval_list']}`"
        + (f" ({', '.join(str(n) for n in sorted(num_cases, key=str))} cases)" if num_cases else ""),
        f"- Seeds: {', '.join(str(s) for s in sorted(all_seeds)) or 'none finished yet'}",
        f"- Extra arguments (training and evaluation): `{extra}`",
        "- Machine: "
        + ("; ".join(f"{m} ({n} run{'s' if n > 1 else ''})" if len(machines) > 1 else m for m, n in machines.items()) or "-"),
        "",
        "Each run trains one variant with one seed and evaluates the model its training keeps (`models/model.pt`: "
        "the final model unless `--select_best true`). A run's "
        "metric is the mean over the evaluated cases; the table gives the mean ± standard deviation (ddof=1) of "
        "these over the seeds done. Dice and Jaccard in %, HD95 and ASD in voxels as the paper reports them"
        + (" and in mm" if with_mm else "")
        + ". Cases with an empty prediction have no distance: left out of HD95 / ASD and counted under "
        "\"empty pred.\". Wall time: training and evaluation of one run, every session included.",
        "",
        "| variant | description | overrides | seeds | "
        + " | ".join(header for _, _, _, header in shown)
        + " | empty pred. | wall time / run (min) |",
        "|---" * (6 + len(shown)) + "|",
    ]
    for row in rows:
        overrides = format_overrides(row["overrides"])
        cells = [
            f"`{_md(row['variant'])}`",
            _md(row["description"]),
            f"`{_md(overrides)}`" if overrides else "none",
            str(row["n_seeds"]),
            *(_cell(row[stem], row["n_seeds"]) for _, _, stem, _ in shown),
            str(row["empty_predictions"]) if row["n_seeds"] else "-",
            "-" if row["wall_min_mean"] is None else f"{row['wall_min_mean']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Written by `scripts/compare.py` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; per run: "
        "`<variant>/seed<seed>/result.json` (the full metrics summary), `train.log`, `eval.log`.",
    ]
    atomic_write_text(out_dir / "results.md", "\n".join(lines) + "\n")
    return rows


# ------------------------------------------------------------------------------------------ state
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CompareError(f"cannot read '{path}': {e}") from e


def _write_json(path: Path, content: Any) -> None:
    atomic_write_text(path, json.dumps(content, indent=2) + "\n")


def _normal(content: Any) -> Any:
    """As it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(content))


def _shown_value(value: Any) -> str:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return f"`{shlex.join(value)}`" if value else "none"  # command-line arguments, as typed
    return repr(value)


def _differences(recorded: Mapping[str, Any], given: Mapping[str, Any]) -> str:
    keys = [k for k in dict.fromkeys([*recorded, *given]) if recorded.get(k) != given.get(k)]
    return "; ".join(f"{k}: recorded {_shown_value(recorded.get(k))}, now {_shown_value(given.get(k))}" for k in keys)


def check_output_dir(out_dir: Path, setup: dict, variants: Sequence[dict]) -> dict:
    """The marker (``compare.json``) of `out_dir` with `variants` added; refuse a folder not made here or made
    with other settings. Nothing is written (see :func:`write_marker`)."""
    marker_path = out_dir / MARKER
    if out_dir.exists() and not out_dir.is_dir():
        raise CompareError(f"--output_dir '{out_dir}' is a file, not a folder.")
    if marker_path.is_file():
        marker = _read_json(marker_path)
        if not isinstance(marker, dict) or marker.get("made_by") != "scripts/compare.py" or "setup" not in marker:
            raise CompareError(f"'{marker_path}' was not written by scripts/compare.py; choose another --output_dir.")
        if marker["setup"] != setup:
            raise CompareError(
                f"'{out_dir}' holds runs made with other settings ({_differences(marker['setup'], setup)}). Use "
                "another --output_dir rather than mix results, or repeat the recorded settings."
            )
    elif out_dir.is_dir() and any(out_dir.iterdir()):
        raise CompareError(
            f"--output_dir '{out_dir}' exists and was not made by scripts/compare.py (no {MARKER} in it); "
            "choose a new folder, so that nothing in it is mixed up or overwritten."
        )
    else:
        marker = {"made_by": "scripts/compare.py", "setup": setup, "variants": []}
    recorded = {v["name"]: v for v in marker["variants"]}
    for variant in variants:
        old = recorded.get(variant["name"])
        if old is None:
            marker["variants"].append(variant)
        elif old["overrides"] != variant["overrides"]:
            raise CompareError(
                f"variant {variant['name']!r} is recorded in '{marker_path}' with the overrides "
                f"{format_overrides(old['overrides']) or 'none'!r}, now {format_overrides(variant['overrides']) or 'none'!r}; "
                "give the new one another name, or use another --output_dir."
            )
    return marker


def write_marker(out_dir: Path, marker: Mapping[str, Any]) -> None:
    """Create `out_dir` if needed and write its marker ``compare.json`` (atomically)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_json(out_dir / MARKER, marker)


def latest_checkpoint(folder: Path) -> Path | None:
    """The interval checkpoint ``checkpoint_*<iteration>.pt`` of `folder` with the highest iteration, or None.

    ``checkpoint_final.pt`` (a finished training) has no number and is not one of them.
    """
    found = []
    if folder.is_dir():
        for path in folder.iterdir():
            match = _CHECKPOINT.match(path.name)
            if match and path.is_file():
                found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


def machine_info(extra_args: Sequence[str]) -> dict[str, Any]:
    """CPU model and core count, torch version and the device the runs use."""
    cpu = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import platform

    import torch  # imported already by sasnet_components

    device = _option_value(extra_args, "device")
    if device is None:
        device = "cuda:0" if torch.cuda.is_available() else "cpu"  # the bundle's default
    if "cuda" in device and torch.cuda.is_available():
        try:
            index = torch.device(device).index or 0
        except RuntimeError:  # not a plain device name (e.g. a config expression)
            index = 0
        device = f"{device} ({torch.cuda.get_device_name(index)})"
    return {
        "cpu": cpu or platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "device": device,
    }


# ------------------------------------------------------------------------------------------ runs
def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def _say(message: str) -> None:
    tqdm.write(message, file=sys.stdout)
    sys.stdout.flush()


def _run_logged(command: list[str], log_path: Path, verbose: bool) -> int:
    """Run `command`, its stdout and stderr appended to `log_path` (and echoed with `verbose`); return its exit status."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if _CHILD_PYTHONPATH:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_CHILD_PYTHONPATH, env.get("PYTHONPATH")) if p)
    with open(log_path, "ab") as log:
        header = f"# {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC, scripts/compare.py runs:\n$ {shlex.join(command)}\n"
        log.write(header.encode())
        log.flush()
        proc = subprocess.Popen(command, stdout=subprocess.PIPE if verbose else log, stderr=subprocess.STDOUT, env=env)
        try:
            if verbose:
                for line in proc.stdout:
                    log.write(line)
                    log.flush()
                    _say(line.decode(errors="replace").rstrip("\n"))
            return proc.wait()
        finally:
            if proc.poll() is None:  # interrupted: let it remove its temporary files, then stop it
                proc.terminate()
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _tail(path: Path, count: int = _LOG_TAIL) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(deque(f, maxlen=count))
    except OSError:
        return ""


class Run:
    """One (variant, seed): its folder, settings and state."""

    def __init__(self, out_dir: Path, variant: Mapping[str, Any], seed: int, setup: Mapping[str, Any]) -> None:
        self.variant, self.seed, self.setup = variant, seed, setup
        self.name = f"{variant['name']} seed {seed}"
        self.dir = out_dir / variant["name"] / f"seed{seed}"
        self.settings = _normal({"variant": variant["name"], "overrides": variant["overrides"], "seed": seed, **setup})

    def check(self) -> None:
        """Refuse a run folder made with other settings, or not made here."""
        path = self.dir / "settings.json"
        if path.is_file():
            recorded = _read_json(path)
            if recorded != self.settings:
                raise CompareError(
                    f"run {self.name} in '{self.dir}' was made with other settings ({_differences(recorded, self.settings)}); "
                    "use another --output_dir rather than mix results."
                )
        elif self.dir.is_dir() and any(self.dir.iterdir()):
            raise CompareError(f"'{self.dir}' exists without settings.json (not made by scripts/compare.py); move it away.")

    @property
    def finished(self) -> bool:
        return (self.dir / "result.json").is_file()

    def _timing(self) -> dict[str, Any]:
        path = self.dir / "timing.json"
        timing = _read_json(path) if path.is_file() else {}
        for key in ("train_seconds", "eval_seconds", "train_sessions", "eval_sessions"):
            timing.setdefault(key, 0)
        return timing

    def _add_time(self, step: str, seconds: float) -> dict[str, Any]:
        timing = self._timing()
        timing[f"{step}_seconds"] += seconds
        timing[f"{step}_sessions"] += 1
        _write_json(self.dir / "timing.json", timing)
        return timing

    def _args(self, extra_args: Sequence[str]) -> list[str]:
        # the extra args first: a variant's overrides win over them (for repeated options the last one counts)
        return [
            *extra_args,
            *_override_args(self.variant["overrides"]),
            "--output_dir",
            bundle_token(str(self.dir / "runs")),
            "--ckpt_dir",
            bundle_token(str(self.dir / "models")),
            "--seed",
            str(self.seed),
        ]

    def _step(self, step: str, command: list[str], prefix: str, what: str, verbose: bool) -> float:
        log_path, word = self.dir / f"{step}.log", "training" if step == "train" else "evaluation"
        _say(f"{prefix} {self.name}: {what} ...")
        start = time.monotonic()
        try:
            status = _run_logged(command, log_path, verbose)
        finally:
            timing = self._add_time(step, time.monotonic() - start)
        if status != 0:
            tail = _tail(log_path)
            sys.stdout.flush()
            print(f"--- last lines of {log_path}:\n{tail.rstrip()}\n---", file=sys.stderr)
            raise CompareError(
                f"{word} of run {self.name} failed (exit status {status}); its log: '{log_path}' (last lines above). "
                "Fix the cause and run the same command again: finished runs are kept and an interrupted training "
                "resumes from its latest checkpoint."
            )
        _say(f"{prefix} {self.name}: {word} done in {_duration(time.monotonic() - start)}")
        return timing[f"{step}_seconds"]

    def execute(self, prefix: str, extra_args: Sequence[str], machine: Mapping[str, Any], verbose: bool) -> None:
        """Train (or resume), evaluate and write ``result.json``."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if not (self.dir / "settings.json").is_file():
            _write_json(self.dir / "settings.json", self.settings)
        python = [sys.executable, "-m", "monai.bundle", "run"]
        bundle_dir = self.setup["bundle_dir"]
        args = self._args(extra_args)
        checkpoints = self.dir / "runs" / "checkpoints"
        model = self.dir / "models" / "model.pt"
        final = checkpoints / "checkpoint_final.pt"
        if final.is_file() and model.is_file():
            _say(f"{prefix} {self.name}: training finished before ({_shown_path(str(final))})")
        else:
            train = [*python, "training", "--config_file", _config_arg(bundle_dir, self.setup["train_configs"]), *args]
            # the final checkpoint without the model (deleted): a resume from it only writes the model again
            resume = final if final.is_file() else latest_checkpoint(checkpoints)
            what = "training"
            if resume is not None:
                train += ["--resume_from", bundle_token(str(resume))]
                what = f"training, resuming from {resume.name}"
            self._step("train", train, prefix, what, verbose)
        evaluate = [
            *python,
            "evaluating",
            "--config_file",
            _config_arg(bundle_dir, self.setup["eval_configs"]),
            *args,
            "--eval_list",
            bundle_token(self.setup["eval_list"]),
            "--eval_output_dir",
            bundle_token(str(self.dir / "eval")),
        ]
        summary_path = self.dir / "eval" / "metrics_summary.json"
        if summary_path.exists():
            summary_path.unlink()  # from an earlier session: this evaluation must write its own
        self._step("eval", evaluate, prefix, "evaluation", verbose)
        if not summary_path.is_file():
            raise CompareError(f"the evaluation of run {self.name} wrote no '{summary_path}'; see '{self.dir / 'eval.log'}'.")
        timing = self._timing()
        result = {
            "variant": self.variant["name"],
            "description": self.variant["description"],
            "seed": self.seed,
            "overrides": self.variant["overrides"],
            "settings": self.settings,
            "metrics": _read_json(summary_path),
            "train_seconds": timing["train_seconds"],
            "eval_seconds": timing["eval_seconds"],
            "train_sessions": timing["train_sessions"],
            "eval_sessions": timing["eval_sessions"],
            "machine": dict(machine),
            "finished": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC",
        }
        _write_json(self.dir / "result.json", result)


# ------------------------------------------------------------------------------------------ command line
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (``argv`` defaults to ``sys.argv[1:]``); what follows ``--`` is ``extra_args``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1 :]
        argv = argv[: argv.index("--")]
    p = argparse.ArgumentParser(
        prog="compare.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--variants", nargs="+", default=None, help="registry names (see --list) or name:key=value,...")
    p.add_argument("--seeds", nargs="+", type=int, default=[1337], help="training seeds (default: 1337)")
    p.add_argument("--protocol", choices=sorted(PROTOCOLS), default=None, help="quick or full (required to run)")
    p.add_argument("--bundle_dir", default="bundles/la", help="the bundle (default: bundles/la)")
    p.add_argument("--eval_list", default="validation", help="datalist list evaluated (default: validation)")
    p.add_argument("--output_dir", default=None, help="folder of the comparison (required; made by this script)")
    p.add_argument("--table_only", action="store_true", help="only rebuild results.md / results.csv of --output_dir")
    p.add_argument("--list", action="store_true", help="list the built-in variants and exit")
    p.add_argument("--verbose", action="store_true", help="also stream the output of each run (always in its log)")
    p.add_argument(
        "--progress",
        type=progress_option,
        default="auto",
        help="progress bar over the runs on stderr: auto (only on a terminal, default), true or false",
    )
    args = p.parse_args(argv)
    args.extra_args = extra
    if not args.list:
        if args.output_dir is None:
            p.error("the following arguments are required: --output_dir")
        if not args.table_only and (args.variants is None or args.protocol is None):
            p.error("--variants and --protocol are required to run (or give --table_only or --list)")
    return args


def _print_registry() -> None:
    width = max(map(len, REGISTRY))
    for name, (overrides, description) in REGISTRY.items():
        print(f"{name:<{width}}  {description}  [{format_overrides(overrides) or 'no overrides'}]")
    print("custom: name:key=value,key=value (e.g. lr2:learning_rate=0.02)")


def _variants(specs: Sequence[str]) -> list[dict]:
    variants = []
    for spec in specs:
        name, overrides, description = parse_variant(spec)
        if any(v["name"] == name for v in variants):
            raise CompareError(f"variant {name!r} is given twice.")
        for value in overrides.values():
            bundle_token(value)
        variants.append(_normal({"name": name, "overrides": overrides, "description": description}))
    return variants


def _table_only(args: argparse.Namespace) -> None:
    out_dir = Path(args.output_dir)
    if not (out_dir / MARKER).is_file():
        raise CompareError(f"'{out_dir}' holds no comparison ({MARKER} is missing).")
    marker = _read_json(out_dir / MARKER)
    order = None
    if args.variants:
        known = [v["name"] for v in marker["variants"]]
        order = [spec.partition(":")[0] for spec in args.variants]
        for name in order:
            if name not in known:
                raise CompareError(f"variant {name!r} has no runs in '{out_dir}' (recorded: {', '.join(known)}).")
    write_tables(out_dir, marker, order)
    print(f"tables: {out_dir / 'results.md'}, {out_dir / 'results.csv'}")


def _compare(args: argparse.Namespace) -> None:
    variants = _variants(args.variants)
    if len(set(args.seeds)) != len(args.seeds):
        raise CompareError(f"--seeds {args.seeds}: a seed is given twice.")
    bundle_dir = Path(args.bundle_dir)
    config_dir = bundle_dir / "configs"
    train_configs, eval_configs = PROTOCOLS[args.protocol]
    for name in dict.fromkeys(train_configs + eval_configs):
        if not (config_dir / name).is_file():
            raise CompareError(f"protocol {args.protocol!r} needs '{config_dir / name}', which does not exist.")
    for key in _option_keys(args.extra_args):
        _check_key(key, "arguments after --")
    known = _config_keys(config_dir)
    _check_known_keys(_option_keys(args.extra_args), known, config_dir, "arguments after --")
    for variant in variants:
        _check_known_keys(list(variant["overrides"]), known, config_dir, f"variant {variant['name']!r}")
    setup = _normal(
        {
            "protocol": args.protocol,
            "bundle_dir": str(bundle_dir.resolve()),
            "train_configs": list(train_configs),
            "eval_configs": list(eval_configs),
            "eval_list": args.eval_list,
            "extra_args": list(args.extra_args),
        }
    )
    out_dir = Path(args.output_dir)
    marker = check_output_dir(out_dir, setup, variants)
    runs = [Run(out_dir, variant, seed, setup) for seed in args.seeds for variant in variants]
    for run in runs:  # every run before any is started: nothing is mixed up or trained in vain
        run.check()
    write_marker(out_dir, marker)
    order = [v["name"] for v in variants]
    machine = None
    bar = tqdm(total=len(runs), desc="runs", unit="run", disable=not args.progress, file=sys.stderr)
    try:
        for i, run in enumerate(runs, 1):
            prefix = f"[{i}/{len(runs)}]"
            if run.finished:
                _say(f"{prefix} {run.name}: finished before ({_shown_path(str(run.dir / 'result.json'))}), skipped")
            else:
                machine = machine or machine_info(args.extra_args)
                run.execute(prefix, args.extra_args, machine, args.verbose)
            write_tables(out_dir, marker, order)
            bar.update(1)
    finally:
        bar.close()
    print(f"results: {out_dir / 'results.md'}, {out_dir / 'results.csv'}")


def _terminate(signum: int, frame: Any) -> None:
    raise _Terminated()


def main(argv: Sequence[str] | None = None) -> None:
    """Run the comparison from the command line (see the module docstring)."""
    args = parse_args(argv)
    if args.list:
        _print_registry()
        return
    signal.signal(signal.SIGTERM, _terminate)  # the step's time is recorded and its process stopped cleanly
    try:
        _table_only(args) if args.table_only else _compare(args)
    except CompareError as e:
        sys.stdout.flush()
        print(f"compare.py: error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    except (KeyboardInterrupt, _Terminated) as e:
        sys.stdout.flush()
        print("compare.py: interrupted; run the same command again to resume.", file=sys.stderr)
        raise SystemExit(143 if isinstance(e, _Terminated) else 130) from None


if __name__ == "__main__":
    main()
