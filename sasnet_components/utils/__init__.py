from __future__ import annotations

from .bundle import as_bool, bundle_root, check_config_keys, training_stats
from .io import atomic_path, atomic_write_text

__all__ = ["as_bool", "atomic_path", "atomic_write_text", "bundle_root", "check_config_keys", "training_stats"]
