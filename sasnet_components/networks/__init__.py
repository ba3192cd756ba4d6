from __future__ import annotations

from .dual_branch_vnet import DualBranchOutput, DualBranchUncertainty, DualBranchVNet, decoder_disagreement

__all__ = ["DualBranchOutput", "DualBranchUncertainty", "DualBranchVNet", "decoder_disagreement"]
