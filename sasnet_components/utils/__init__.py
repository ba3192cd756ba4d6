from __future__ import annotations

from .bundle import bundle_root, check_config_keys, training_stats

__all__ = ["bundle_root", "check_config_keys", "training_stats"]
