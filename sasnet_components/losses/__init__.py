from __future__ import annotations

from .plc import PLCLoss, sharpen
from .seg import SEG_LOSS_MODES, SegLoss
from .src import SRCLoss, ensemble_to_sdm

__all__ = ["PLCLoss", "SEG_LOSS_MODES", "SRCLoss", "SegLoss", "ensemble_to_sdm", "sharpen"]
