"""Helpers for SASNet bundle configs: checks of the config a bundle is run with, training stats."""

from __future__ import annotations

import difflib
import inspect
import logging
import math
import numbers
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Union

import torch
from monai.bundle import ConfigParser, ConfigWorkflow

from .errors import InvalidInputError, UnknownKeyError

__all__ = [
    "TrainingSettings",
    "as_bool",
    "bundle_root",
    "check_config_keys",
    "check_training_settings",
    "config_keys",
    "log_validation_plan",
    "raw_config",
    "training_stats",
    "unknown_keys_hint",
]

logger = logging.getLogger(__name__)


def _active_parser() -> Optional[ConfigParser]:
    """The ``ConfigParser`` currently evaluating a config expression (found on the call stack)."""
    frame = inspect.currentframe()
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, ConfigParser):
            return candidate
        frame = frame.f_back
    return None


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def as_bool(value: Any, name: str = "value") -> bool:
    """A boolean config option, also when it arrives from the command line as a string.

    ``python -m monai.bundle run ... --select_best false`` passes the string ``'false'``, which
    Python would treat as true; configs read their flags through this function instead.

    Args:
        value: a bool, 0 / 1, or one of ``true/false, yes/no, on/off, 1/0`` (any case).
        name: the option's name, for the error message.

    Raises:
        ValueError: any other value (names the option and the accepted spellings).
    """
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InvalidInputError(f"`{name}` must be true or false (also yes/no, on/off, 1/0), got {value!r}.")


def device_flag(value: Any, device: Union[str, torch.device], name: str = "value") -> bool:
    """A boolean option that may be ``auto``: on for an accelerator `device` (not ``cpu``), off on the CPU.

    Args:
        value: ``auto`` or anything :func:`as_bool` takes.
        device: the run's device.
        name: the option's name, for the error message.

    Raises:
        ValueError: `value` is neither ``auto`` nor a boolean spelling.
    """
    if isinstance(value, str) and value.strip().lower() == "auto":
        return torch.device(device).type != "cpu"
    try:
        return as_bool(value, name)
    except InvalidInputError:
        raise InvalidInputError(f"`{name}` must be auto, true or false, got {value!r}.") from None


def bool_or_option(value: Any, options: Sequence[str], name: str = "value") -> Union[bool, str]:
    """An option that is off (``false``), on (``true``) or one of `options`, e.g. ``--compile reduce-overhead``.

    Returns:
        ``False``, ``True`` or the option string.

    Raises:
        ValueError: any other value (names the option and what it accepts).
    """
    if isinstance(value, str) and value.strip().lower() in options:
        return value.strip().lower()
    try:
        return as_bool(value, name)
    except InvalidInputError:
        raise InvalidInputError(f"`{name}` must be true, false or one of {list(options)}, got {value!r}.") from None


def raw_config(id: str) -> Any:
    """The content of config item `id` as written, not parsed, in the bundle being run.

    Lets a check use the names of a config section without building what it refers to, e.g. the
    entries of a training checkpoint: ``$list(sasnet_components.utils.raw_config('checkpointing#state'))``
    (``@checkpointing#state`` would build the trainer and cache its data).

    Raises:
        UnknownKeyError: no ``monai.bundle`` parser is running, or it has no item `id`.
    """
    parser = _active_parser()
    if parser is None:
        raise KeyError(f"raw_config({id!r}): no bundle config is being run.")
    if id not in parser:
        raise KeyError(f"raw_config({id!r}): the config has no item {id!r}.")
    return parser.get(id)


def bundle_root(default: str = ".") -> str:
    """Root folder of the bundle being run: the parent of the folder of its config files.

    Lets ``python -m monai.bundle run training --config_file bundles/la/configs/train.yaml`` work
    from any working directory (``bundle_root: $sasnet_components.utils.bundle_root()``). Falls back
    to `default` when no ``monai.bundle`` workflow is running (e.g. a bare ``ConfigParser``).
    """
    frame = inspect.currentframe()
    while frame is not None:
        candidate = frame.f_locals.get("self")
        root = vars(candidate).get("config_root_path") if isinstance(candidate, ConfigWorkflow) else None
        if root is not None:
            return str(Path(root).resolve().parent)
        frame = frame.f_back
    return default


def config_keys(config_dir: Union[str, Path]) -> Set[str]:
    """Top-level keys that the YAML / JSON files of a bundle's ``configs`` folder define.

    A key written ``a#b`` (an item of ``a``) counts as ``a``; ``_meta_`` is always valid;
    ``metadata.json`` is not a config file.

    Raises:
        ValueError: a file that cannot be parsed (from MONAI's ``ConfigParser.load_config_file``).
    """
    keys = {"_meta_"}
    for path in sorted(Path(config_dir).glob("*")):
        if path.suffix.lower() in (".yaml", ".yml", ".json") and path.name != "metadata.json":
            content = ConfigParser.load_config_file(str(path))
            if isinstance(content, Mapping):
                keys.update(str(k).split("#", 1)[0] for k in content)
    return keys


def unknown_keys_hint(unknown: Iterable[str], known: Iterable[str]) -> str:
    """``'num_labled': did you mean ['num_labeled']?; ...`` for each unknown key (``a#b`` matched as ``a``)."""
    known = list(known)
    hints = {k: difflib.get_close_matches(k.split("#", 1)[0], known, n=3) for k in unknown}
    return "; ".join(f"{k!r}: did you mean {v}?" if v else f"{k!r}: no similar key" for k, v in hints.items())


def check_config_keys(config_dir: str, parser: Optional[ConfigParser] = None, extra_keys: Iterable[str] = ()) -> bool:
    """Raise on a top-level config key that no config file of the bundle defines (e.g. an override typo).

    ``python -m monai.bundle run ... --num_labled 8`` would otherwise add an unused key silently.
    Call it from the bundle's ``initialize`` list: ``$sasnet_components.utils.check_config_keys(@config_dir)``.

    Args:
        config_dir: the bundle's ``configs`` folder; every YAML / JSON file in it defines valid keys.
        parser: the parser to check; by default the one evaluating this call.
        extra_keys: further accepted keys.

    Returns:
        True when every key is known.

    Raises:
        KeyError: naming the unknown keys, close matches and where valid keys come from.
    """
    parser = parser or _active_parser()
    if parser is None:
        logger.warning("check_config_keys: no active ConfigParser found; override keys were not checked.")
        return True
    known = config_keys(config_dir) | set(extra_keys)
    unknown = sorted(k for k in parser.get() if k not in known)
    if unknown:
        raise UnknownKeyError(
            f"unknown config key(s) {unknown} (from the command line or a config file): {unknown_keys_hint(unknown, known)} "
            f"Valid top-level keys are those defined in the files of {str(config_dir)!r}."
        )
    return True


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _int_error(name: str, value: Any, minimum: int, what: str) -> Optional[str]:
    if _is_int(value) and int(value) >= minimum:
        return None
    return f"`{name}` ({what}) must be an integer >= {minimum}, got {value!r}."


def _number_error(
    name: str, value: Any, what: str, low: float = 0.0, high: float = math.inf, low_open: bool = False, high_open: bool = False
) -> Optional[str]:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        v = float(value)
        if (low < v if low_open else low <= v) and (v < high if high_open or high == math.inf else v <= high):
            return None
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open or high == math.inf else ']'}"
    return f"`{name}` ({what}) must be a number in {interval}, got {value!r}."


def check_training_settings(
    protocol: str,
    num_labeled: Any,
    max_iterations: Any,
    batch_size: Any,
    labeled_batch_size: Any,
    patch_size: Any,
    learning_rate: Any,
    momentum: Any,
    weight_decay: Any,
    beta: Any,
    consistency: Any,
    rampup_length: Any,
    rampup_interval: Any,
    seed: Any,
    val_interval: Any,
    val_start: Any,
    val_stride: Any,
    val_overlap: Any,
    checkpoint_interval: Any,
    log_interval: Any,
    flags: Mapping[str, Any],
    resample_spacing: Any = None,
    size_divisor: int = 16,
) -> bool:
    """Check a training config's protocol and run settings before any data is read.

    Called from a bundle's ``initialize`` with the values as the config (or the command line) gives
    them, so that a mistake is reported at once, in the names of the options, rather than after the
    data has been cached or at the first iteration. Every problem found is listed in one error.

    Args:
        protocol: ``"default"`` or ``"paper"``.
        num_labeled: labeled cases, at least `labeled_batch_size` (one batch per epoch); ``"all"``
            (every labeled case of the pool outside the validation list); ``None`` keeps the
            datalist's split.
        max_iterations: training iterations, >= 1.
        batch_size: samples per batch, >= 1.
        labeled_batch_size: labeled samples per batch, in ``[1, batch_size]``.
        patch_size: spatial size of the training patches; every size a multiple of `size_divisor`.
        learning_rate: > 0.
        momentum: in [0, 1).
        weight_decay, beta, consistency, rampup_length: >= 0.
        rampup_interval: iterations per ramp-up step, >= 1.
        seed: >= 0.
        val_interval: iterations between validations, >= 1.
        val_start: iteration of the first validation, >= 1.
        val_stride: sliding-window stride of the validation, one integer in ``[1, patch size]`` per
            axis, or ``None`` (the overlap is used).
        val_overlap: sliding-window overlap of the validation when `val_stride` is ``None``, in [0, 1).
        checkpoint_interval, log_interval: iterations, >= 1.
        flags: boolean options by name (e.g. ``select_best``, ``amp``, ``pad_to_patch``), see :func:`as_bool`.
        resample_spacing: spacing in mm (one positive number per spatial axis of `patch_size`) that
            the images are resampled to, or ``None`` (the prepared voxels).
        size_divisor: what the network needs every spatial size of its input to be a multiple of.

    Returns:
        True when every setting is valid.

    Raises:
        ValueError: listing every invalid setting with what was expected and what arrived.
    """
    from sasnet_components.data.datalist import PROTOCOLS

    errors: List[Optional[str]] = []
    if protocol not in PROTOCOLS:
        errors.append(f"`protocol` must be one of {list(PROTOCOLS)}, got {protocol!r}.")
    errors.append(_int_error("max_iterations", max_iterations, 1, "training iterations"))
    errors.append(_int_error("batch_size", batch_size, 1, "samples per batch"))
    batch_ok = _is_int(batch_size) and batch_size >= 1
    if not (_is_int(labeled_batch_size) and 1 <= labeled_batch_size <= (batch_size if batch_ok else labeled_batch_size)):
        errors.append(
            f"`labeled_batch_size` (labeled samples per batch) must be an integer in [1, batch_size], "
            f"got {labeled_batch_size!r} with batch_size {batch_size!r}."
        )
    elif _is_int(num_labeled) and 1 <= num_labeled < labeled_batch_size:
        errors.append(
            f"`num_labeled` ({num_labeled}) must be at least `labeled_batch_size` ({labeled_batch_size}): an epoch "
            "is one pass over the labeled cases in batches of labeled_batch_size."
        )
    all_labeled = isinstance(num_labeled, str) and num_labeled.strip().lower() == "all"
    if num_labeled is not None and not all_labeled and _int_error("num_labeled", num_labeled, 1, ""):
        errors.append(f"`num_labeled` (labeled training cases) must be an integer >= 1 or 'all', got {num_labeled!r}.")
    sizes = list(patch_size) if isinstance(patch_size, Sequence) and not isinstance(patch_size, str) else None
    if not sizes or not all(_is_int(s) and s >= size_divisor and s % size_divisor == 0 for s in sizes):
        sizes = None
        errors.append(
            f"`patch_size` must list one size per spatial axis, each a multiple of {size_divisor} (the network halves "
            f"the patch four times), e.g. [112, 112, 80]; got {patch_size!r}."
        )
    errors.append(_number_error("learning_rate", learning_rate, "SGD step size", low_open=True))
    errors.append(_number_error("momentum", momentum, "SGD momentum", high=1.0, high_open=True))
    errors.append(_number_error("weight_decay", weight_decay, "SGD weight decay"))
    errors.append(_number_error("beta", beta, "weight of the supervised loss"))
    errors.append(_number_error("consistency", consistency, "final weight of PLC + SRC"))
    errors.append(_number_error("rampup_length", rampup_length, "ramp-up steps"))
    errors.append(_int_error("rampup_interval", rampup_interval, 1, "iterations per ramp-up step"))
    errors.append(_int_error("seed", seed, 0, "random seed"))
    errors.append(_int_error("val_interval", val_interval, 1, "iterations between validations"))
    errors.append(_int_error("val_start", val_start, 1, "iteration of the first validation"))
    if val_stride is not None and sizes is not None:  # checked against a valid patch size only
        strides = list(val_stride) if isinstance(val_stride, Sequence) and not isinstance(val_stride, str) else None
        if strides is None or len(strides) != len(sizes) or not all(_is_int(s) and 1 <= s <= p for s, p in zip(strides, sizes)):
            errors.append(f"`val_stride` must be null or one integer in [1, patch size] per axis of {patch_size!r}, got {val_stride!r}.")
    errors.append(_number_error("val_overlap", val_overlap, "sliding-window overlap", high=1.0, high_open=True))
    errors.append(_int_error("checkpoint_interval", checkpoint_interval, 1, "iterations between training checkpoints"))
    errors.append(_int_error("log_interval", log_interval, 1, "iterations between loss log lines"))
    if resample_spacing is not None:
        spacing = list(resample_spacing) if isinstance(resample_spacing, Sequence) and not isinstance(resample_spacing, str) else None
        axes = len(sizes) if sizes is not None else None
        if not spacing or (axes is not None and len(spacing) != axes) or any(_number_error("", s, "", low_open=True) for s in spacing):
            errors.append(
                f"`resample_spacing` must be null or one spacing in mm > 0 per spatial axis, e.g. [1.25, 1.25, 1.25]; "
                f"got {resample_spacing!r}."
            )
    for name, value in flags.items():
        try:
            as_bool(value, name)
        except ValueError as e:
            errors.append(str(e))
    found = [e for e in errors if e]
    if found:
        raise InvalidInputError("invalid training settings:\n  - " + "\n  - ".join(found))
    return True


# settings that may change when a run is resumed: its length and how it is monitored and saved
_RUN_ONLY = ("max_iterations", "val_interval", "val_start", "val_stride", "val_overlap", "checkpoint_interval", "log_interval")
# settings recorded since multi-process training, and their value in the runs saved before
_RECORDED_LATER = {"processes": 1, "sync_batchnorm": False}


class TrainingSettings:
    """The settings of a training run: checked when built (:func:`check_training_settings`), kept in
    the run's checkpoints, and compared when a run resumes from one.

    A resumed run continues the saved one exactly only with the same settings. Those that may
    change (the run's length, validation and checkpoint intervals, logging) are not compared; for
    the others, a resume with other values logs a warning naming each of them. The learning rate,
    momentum and weight decay then still come from the checkpoint's optimizer, and the seed from its
    sampler.

    Args:
        others: further settings to record and compare, checked by their own components (e.g.
            ``alpha``, ``sar_mode``, ``views``); values of plain types (numbers, strings, lists).
        size_divisor: see :func:`check_training_settings`.
        settings: the keyword arguments of :func:`check_training_settings`.

    Raises:
        ValueError: as :func:`check_training_settings`.
    """

    def __init__(self, others: Optional[Mapping[str, Any]] = None, size_divisor: int = 16, **settings: Any) -> None:
        check_training_settings(size_divisor=size_divisor, **settings)
        flags = {f"flags#{k}": as_bool(v, k) for k, v in settings.pop("flags").items()}
        self.settings: Dict[str, Any] = {**settings, **flags, **dict(others or {})}

    def state_dict(self) -> Dict[str, Any]:
        """The compared settings (plain values; loadable with ``weights_only``)."""
        return {"settings": {k: _plain(v) for k, v in self.settings.items() if k not in _RUN_ONLY}}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Compare with the settings of the saved run; log a warning naming every difference (a setting
        recorded only since a later version counts with the value every run had before)."""
        saved, now = dict(state_dict.get("settings", {})), self.state_dict()["settings"]
        saved = {**{k: v for k, v in _RECORDED_LATER.items() if k in now}, **saved}
        now = {**{k: v for k, v in _RECORDED_LATER.items() if k in saved}, **now}
        differ = [f"{k} {now.get(k)!r} (checkpoint: {saved.get(k)!r})" for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
        if differ:
            logger.warning(
                "resuming with settings that differ from the checkpoint's: %s; the run does not continue the saved one "
                "exactly (the optimizer's learning rate, momentum and weight decay and the seed come from the checkpoint).",
                "; ".join(differ),
            )


def _plain(value: Any) -> Any:
    """`value` with tuples as lists and numpy / torch scalars as Python numbers, for comparison and saving."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value


_REFERENCE_VALIDATION = {"interval": 50, "start": 100, "stride": [18, 18, 4], "mode": "constant", "amp": False}


def log_validation_plan(
    protocol: str,
    num_cases: int,
    interval: int,
    start: int,
    roi_size: Sequence[int],
    overlap: Union[float, Sequence[float]],
    select_best: bool,
    mode: str = "constant",
    amp: bool = False,
) -> str:
    """Log, before training, when and how the model will be validated and which model is reported.

    Protocol ``"paper"`` validates on test cases and keeps the best model, as the reference code
    did: that is logged as a warning, with whatever of its schedule, window and precision differs
    from the reference code's (every 50 iterations from iteration 100, window stride 18/18/4,
    uniform weights, float32).

    Args:
        protocol: ``"default"`` or ``"paper"``.
        num_cases: validation cases (test cases under ``"paper"``).
        interval: iterations between validations.
        start: iteration of the first validation.
        roi_size: sliding-window size.
        overlap: the sliding-window inferer's overlap, one value or one per axis; the stride is
            MONAI's ``max(int(roi * (1 - overlap)), 1)`` per axis.
        select_best: whether the best model on these cases becomes ``model.pt``.
        mode: sliding-window blending, ``"constant"`` (uniform weights) or ``"gaussian"``.
        amp: whether validation runs in mixed precision.

    Returns:
        The message logged.
    """
    overlaps = [overlap] * len(roi_size) if isinstance(overlap, numbers.Real) else list(overlap)
    steps = [max(int(r * (1 - o)), 1) for r, o in zip(roi_size, overlaps)]
    weights = "uniform weights" if mode == "constant" else f"{mode} weights"
    window = f"sliding window {'x'.join(map(str, roi_size))}, stride {'/'.join(map(str, steps))}, {weights}"
    window += ", mixed precision" if amp else ", float32"
    schedule = f"every {interval} iterations from iteration {start}"
    if num_cases == 0:
        message = f"protocol {protocol!r}: no validation cases, no validation during training; the final model is reported."
    elif protocol == "paper":
        message = (
            f"protocol 'paper': validating {schedule} on {num_cases} TEST cases ({window}) and keeping the best "
            "model, as the reference code did; for comparison with published numbers only, not an honest estimate."
        )
        plan = {"interval": interval, "start": start, "stride": steps, "mode": mode, "amp": bool(amp)}
        differ = {k: v for k, v in plan.items() if v != _REFERENCE_VALIDATION[k]}
        if differ:
            message += f" Differs from the reference code's selection ({_REFERENCE_VALIDATION}) in {differ}."
    else:
        kept = "the best model on them is kept (select_best)" if select_best else "the final model is reported"
        message = f"protocol {protocol!r}: validating {schedule} on {num_cases} validation cases ({window}); {kept}."
    logger.log(logging.WARNING if protocol == "paper" and num_cases else logging.INFO, message)
    return message


def training_stats(output: Any) -> Dict[str, float]:
    """Loss terms of a ``SemiSupervisedTrainer`` iteration output, for ``StatsHandler`` / TensorBoard.

    Args:
        output: ``engine.state.output`` (a dict, or a list of dicts after decollation).

    Returns:
        ``{"loss", "loss_seg", "loss_plc", "loss_src", "gamma"}`` as floats, those the output holds
        (``loss_plc`` / ``loss_src`` are absent when the trainer does not use that term).
    """
    if isinstance(output, (list, tuple)):
        output = output[0]
    keys = ("loss", "loss_seg", "loss_plc", "loss_src", "gamma")
    return {k: float(torch.as_tensor(output[k]).detach()) for k in keys if k in output}
