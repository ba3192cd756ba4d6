from __future__ import annotations

from .bundle import (
    TrainingSettings,
    as_bool,
    bool_or_option,
    bundle_root,
    check_config_keys,
    check_training_settings,
    device_flag,
    log_validation_plan,
    raw_config,
    training_stats,
)
from .checkpoints import check_checkpoint, load_checkpoint, load_model_weights, weights_mismatch
from .console import TqdmLoggingHandler, log_above_bars, progress_enabled
from .errors import (
    InputError,
    InputPermissionError,
    InputTypeError,
    InvalidInputError,
    MissingInputError,
    NotAFolderError,
    OutputExistsError,
    UnknownKeyError,
    check_option,
    find_input_error,
    report_input_errors,
)
from .io import atomic_path, atomic_write_text, check_output_folder
from .monailabel import TORCHVISION_GUARD, export_monailabel_bundle, load_torchscript_weights, prepare_monailabel_app
from .variant import VARIANT_SWITCHES, describe_variant, training_variant

__all__ = [
    "InputError",
    "InputPermissionError",
    "InputTypeError",
    "InvalidInputError",
    "MissingInputError",
    "NotAFolderError",
    "OutputExistsError",
    "TORCHVISION_GUARD",
    "TqdmLoggingHandler",
    "UnknownKeyError",
    "TrainingSettings",
    "VARIANT_SWITCHES",
    "as_bool",
    "bool_or_option",
    "device_flag",
    "atomic_path",
    "atomic_write_text",
    "check_option",
    "check_output_folder",
    "bundle_root",
    "check_checkpoint",
    "check_config_keys",
    "check_training_settings",
    "describe_variant",
    "export_monailabel_bundle",
    "find_input_error",
    "load_torchscript_weights",
    "load_checkpoint",
    "load_model_weights",
    "log_above_bars",
    "log_validation_plan",
    "prepare_monailabel_app",
    "progress_enabled",
    "raw_config",
    "report_input_errors",
    "training_stats",
    "training_variant",
    "weights_mismatch",
]
