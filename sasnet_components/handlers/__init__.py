from __future__ import annotations

from .sar_fusion import SARFusion

__all__ = ["SARFusion"]
