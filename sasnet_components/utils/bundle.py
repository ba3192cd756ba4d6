"""Helpers for SASNet bundle configs: checks of the config a bundle is run with, training stats."""

from __future__ import annotations

import difflib
import inspect
import logging
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional

import torch
from monai.bundle import ConfigParser, ConfigWorkflow

__all__ = ["as_bool", "bundle_root", "check_config_keys", "training_stats"]

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
    raise ValueError(f"`{name}` must be true or false (also yes/no, on/off, 1/0), got {value!r}.")


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


def _top_level_keys(config_dir: Path) -> set:
    keys = {"_meta_"}
    for path in sorted(config_dir.glob("*")):
        if path.suffix.lower() in (".yaml", ".yml", ".json") and path.name != "metadata.json":
            content = ConfigParser.load_config_file(str(path))
            if isinstance(content, Mapping):
                keys.update(content)
    return keys


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
    known = _top_level_keys(Path(config_dir)) | set(extra_keys)
    unknown = sorted(k for k in parser.get() if k not in known)
    if unknown:
        hints = {k: difflib.get_close_matches(k, known, n=3) for k in unknown}
        hint = "; ".join(f"{k!r}: did you mean {v}?" if v else f"{k!r}: no similar key" for k, v in hints.items())
        raise KeyError(
            f"unknown config key(s) {unknown} (from the command line or a config file): {hint} "
            f"Valid top-level keys are those defined in the files of {str(config_dir)!r}."
        )
    return True


def training_stats(output: Any) -> Dict[str, float]:
    """Loss terms of a ``SemiSupervisedTrainer`` iteration output, for ``StatsHandler`` / TensorBoard.

    Args:
        output: ``engine.state.output`` (a dict, or a list of dicts after decollation).

    Returns:
        ``{"loss", "loss_seg", "loss_plc", "loss_src", "gamma"}`` as floats.
    """
    if isinstance(output, (list, tuple)):
        output = output[0]
    return {k: float(torch.as_tensor(output[k]).detach()) for k in ("loss", "loss_seg", "loss_plc", "loss_src", "gamma")}
