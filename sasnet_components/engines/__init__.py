from __future__ import annotations

from .semi_supervised_trainer import SemiSupervisedTrainer, sigmoid_rampup

__all__ = ["SemiSupervisedTrainer", "sigmoid_rampup"]
