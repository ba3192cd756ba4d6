from __future__ import annotations

from .bundle import (
    TrainingSettings,
    as_bool,
    bundle_root,
    check_config_keys,
    check_training_settings,
    log_validation_plan,
    training_stats,
)
from .io import atomic_path, atomic_write_text
from .monailabel import TORCHVISION_GUARD, export_monailabel_bundle, load_torchscript_weights, prepare_monailabel_app

__all__ = [
    "TORCHVISION_GUARD",
    "TrainingSettings",
    "as_bool",
    "atomic_path",
    "atomic_write_text",
    "bundle_root",
    "check_config_keys",
    "check_training_settings",
    "export_monailabel_bundle",
    "load_torchscript_weights",
    "log_validation_plan",
    "prepare_monailabel_app",
    "training_stats",
]
