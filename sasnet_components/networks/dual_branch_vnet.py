"""Dual-branch V-Net of SASNet: one V-Net encoder shared by a high-level and a low-level decoder.

Paper: "Scale-aware Adaptive Supervised Network with Limited Medical Annotations", section 3.1,
Eq. 1-3. The encoder has five levels; the high-level decoder starts from level 5 and the
low-level decoder from level 4 (it never sees the deepest features). Each decoder ends in a
segmentation head (logits) and a regression head (tanh) that predicts a signed distance map.
"""

from __future__ import annotations

from typing import List, NamedTuple, Optional, Tuple, Union

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Dropout

from sasnet_components.utils.errors import InvalidInputError

__all__ = ["DualBranchOutput", "DualBranchVNet", "DualBranchUncertainty", "decoder_disagreement"]

# number of 3x3x3 convolutions at encoder levels 1..5 (V-Net); the decoders reuse levels 1..4
_STAGES = (1, 2, 3, 3, 3)
_NUM_LEVELS = len(_STAGES)
_SIZE_DIVISOR = 2 ** (_NUM_LEVELS - 1)


class DualBranchOutput(NamedTuple):
    """Training-mode output of :class:`DualBranchVNet`.

    Attributes:
        seg_low: segmentation logits of the low-level decoder, `(B, out_channels, *spatial)`;
            ``None`` for a one-branch network (``low_level_branch=False``).
        seg_high: segmentation logits of the high-level decoder, `(B, out_channels, *spatial)`.
        reg_low: regression map of the low-level decoder, tanh output in [-1, 1],
            `(B, out_channels, *spatial)`; it predicts a signed distance map per class. ``None``
            for a one-branch network.
        reg_high: regression map of the high-level decoder, same shape and range.
    """

    seg_low: Optional[torch.Tensor]
    seg_high: torch.Tensor
    reg_low: Optional[torch.Tensor]
    reg_high: torch.Tensor


def _conv_stages(
    spatial_dims: int, n_stages: int, in_channels: int, out_channels: int, norm, act
) -> nn.Sequential:
    """`n_stages` x (conv 3, norm, act); the first maps `in_channels` to `out_channels`."""
    layers = [
        Convolution(spatial_dims, in_channels if i == 0 else out_channels, out_channels, kernel_size=3, act=act, norm=norm)
        for i in range(n_stages)
    ]
    return nn.Sequential(*layers)


def _resample(spatial_dims: int, in_channels: int, out_channels: int, norm, act, up: bool) -> Convolution:
    """A stride-2 convolution with kernel 2 (down) or its transposed counterpart (up), + norm + act."""
    return Convolution(
        spatial_dims,
        in_channels,
        out_channels,
        strides=2,
        kernel_size=2,
        padding=0,
        output_padding=0 if up else None,
        is_transposed=up,
        act=act,
        norm=norm,
    )


class _EncoderLevel(nn.Module):
    """One encoder level, Eq. 1-2: optional stride-2 downsampling, then conv stages."""

    def __init__(self, down: Optional[nn.Module], convs: nn.Module) -> None:
        super().__init__()
        self.down = down
        self.convs = convs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down is not None:
            x = self.down(x)
        return self.convs(x)


class _Encoder(nn.Module):
    """V-Net encoder, Eq. 1-2: conv stages 1, 2, 3, 3, 3 at widths n, 2n, 4n, 8n, 16n."""

    def __init__(self, spatial_dims: int, in_channels: int, n_filters: int, norm, act, dropout: float) -> None:
        super().__init__()
        levels = []
        for level, n_stages in enumerate(_STAGES):
            width = n_filters * 2**level
            down = _resample(spatial_dims, width // 2, width, norm, act, up=False) if level > 0 else None
            levels.append(_EncoderLevel(down, _conv_stages(spatial_dims, n_stages, in_channels if level == 0 else width, width, norm, act)))
        self.levels = nn.ModuleList(levels)
        self.dropout = Dropout[Dropout.DROPOUT, spatial_dims](dropout)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        features: List[torch.Tensor] = []
        for level in self.levels:
            x = level(x)
            features.append(x)
        features[-1] = self.dropout(features[-1])
        return features


class _DecoderLevel(nn.Module):
    """One decoder level, Eq. 3: optional up-step added to the encoder skip, then conv stages."""

    def __init__(self, up: Optional[nn.Module], convs: nn.Module) -> None:
        super().__init__()
        self.up = up
        self.convs = convs

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if self.up is not None:
            x = self.up(x) + skip
        return self.convs(x)


class _Decoder(nn.Module):
    """V-Net decoder starting at encoder level `start_level` (5: high-level, 4: low-level).

    Conv stages 3, 3, 2, 1 at levels 4, 3, 2, 1; an up-step (transposed conv, kernel 2, stride 2)
    lands on every level below `start_level` and is added to that level's encoder feature.
    Ends in a segmentation head (logits) and a tanh regression head, both 1x1x1 convolutions.
    """

    def __init__(
        self, spatial_dims: int, n_filters: int, out_channels: int, start_level: int, norm, act, dropout: float
    ) -> None:
        super().__init__()
        self.start_index = start_level - 1
        levels = []
        for level in range(_NUM_LEVELS - 1, 0, -1):  # 4, 3, 2, 1 (1-based)
            width = n_filters * 2 ** (level - 1)
            up = _resample(spatial_dims, width * 2, width, norm, act, up=True) if level < start_level else None
            levels.append(_DecoderLevel(up, _conv_stages(spatial_dims, _STAGES[level - 1], width, width, norm, act)))
        self.levels = nn.ModuleList(levels)
        self.dropout = Dropout[Dropout.DROPOUT, spatial_dims](dropout)
        self.seg_head = Convolution(spatial_dims, n_filters, out_channels, kernel_size=1, conv_only=True)
        self.reg_head = Convolution(spatial_dims, n_filters, out_channels, kernel_size=1, conv_only=True)

    def forward(self, features: List[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        x = features[self.start_index]
        skip_index = len(features) - 2  # level 4 first
        for level in self.levels:
            x = level(x, features[skip_index])
            skip_index -= 1
        x = self.dropout(x)
        return self.seg_head(x), torch.tanh(self.reg_head(x))


def decoder_disagreement(prob_low: torch.Tensor, prob_high: torch.Tensor) -> torch.Tensor:
    """Per-voxel disagreement of the two decoders: total variation distance of their class distributions.

    ``0.5 * sum_c |prob_low[c] - prob_high[c]|``; for two classes this is
    ``|prob_low[1] - prob_high[1]|``.

    Args:
        prob_low: softmax probabilities of the low-level decoder, `(B, C, *spatial)`, in [0, 1].
        prob_high: softmax probabilities of the high-level decoder, same shape.

    Returns:
        `(B, 1, *spatial)` in [0, 1]: 0 where the decoders agree, 1 where they put all mass on
        different classes.
    """
    return 0.5 * (prob_low - prob_high).abs().sum(dim=1, keepdim=True)


class DualBranchVNet(nn.Module):
    """SASNet's dual-branch hierarchical network (paper section 3.1, Eq. 1-3).

    A V-Net encoder (five levels, widths `n_filters * (1, 2, 4, 8, 16)`, 1, 2, 3, 3, 3 conv
    stages, stride-2 kernel-2 downsampling) shared by two decoders: the high-level decoder starts
    from level 5, the low-level decoder from level 4. Skips are added, not concatenated. Dropout
    is applied to the deepest encoder features and before the heads while training. With the
    default arguments the 3D network has 11,258,376 parameters (the paper's 11.26 M); every
    module built is used in the forward pass.

    With ``low_level_branch=False`` (the one-branch ablation of the paper's Tables 4 and 6) no
    low-level decoder is built (``decoder_low`` is ``None``, fewer parameters): the network is the
    encoder and the high-level decoder only.

    Outputs:
        - train mode: a :class:`DualBranchOutput` with the low/high segmentation logits and the
          low/high tanh regression maps, each `(B, out_channels, *spatial)`; ``seg_low`` and
          ``reg_low`` are ``None`` for one branch.
        - eval mode (and TorchScript): one tensor `(B, out_channels, *spatial)`, the mean of the
          two decoders' softmax probabilities (one branch: the high-level decoder's softmax),
          values in [0, 1] summing to 1 over channels.

    Args:
        spatial_dims: 2 or 3.
        in_channels: number of input channels.
        out_channels: number of classes (background included), at least 2.
        n_filters: width of the first level.
        norm: normalisation, a name or `(name, kwargs)` understood by MONAI's `Norm` factory.
        act: activation, a name or `(name, kwargs)` understood by MONAI's `Act` factory.
        dropout: channel dropout probability in [0, 1) on the deepest features and before the heads.
        low_level_branch: build the low-level decoder (default); ``False``: one branch, the
            high-level decoder only.

    Raises:
        ValueError: on invalid arguments, or in `forward` when the input rank, channel count or a
            spatial size (must be divisible by 16) does not fit.

    Example::

        net = DualBranchVNet(spatial_dims=3, in_channels=1, out_channels=2)
        out = net.train()(torch.randn(2, 1, 112, 112, 80))   # DualBranchOutput
        prob = net.eval()(torch.randn(1, 1, 112, 112, 80))   # (1, 2, 112, 112, 80)
    """

    size_divisor: int = _SIZE_DIVISOR  # every spatial size of an input must be a multiple of this

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 2,
        n_filters: int = 16,
        norm: Union[str, Tuple] = "batch",
        act: Union[str, Tuple] = "relu",
        dropout: float = 0.5,
        low_level_branch: bool = True,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise InvalidInputError(f"`spatial_dims` must be 2 or 3, got {spatial_dims!r}.")
        for name, value, minimum in (("in_channels", in_channels, 1), ("out_channels", out_channels, 2), ("n_filters", n_filters, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise InvalidInputError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
        if not 0.0 <= float(dropout) < 1.0:
            raise InvalidInputError(f"`dropout` must be in [0, 1), got {dropout!r}.")
        if not isinstance(low_level_branch, bool):
            raise InvalidInputError(f"`low_level_branch` must be True or False, got {low_level_branch!r}.")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.encoder = _Encoder(spatial_dims, in_channels, n_filters, norm, act, dropout)
        self.decoder_high = _Decoder(spatial_dims, n_filters, out_channels, _NUM_LEVELS, norm, act, dropout)
        self.low_level_branch = low_level_branch
        self.decoder_low: Optional[_Decoder] = (
            _Decoder(spatial_dims, n_filters, out_channels, _NUM_LEVELS - 1, norm, act, dropout) if low_level_branch else None
        )

    def forward(self, x: torch.Tensor):
        """Run the network.

        Args:
            x: image batch `(B, in_channels, *spatial)`, every spatial size divisible by 16.

        Returns:
            :class:`DualBranchOutput` in train mode; in eval mode and under TorchScript the mean
            softmax probability of the two decoders (one branch: the high-level decoder's),
            `(B, out_channels, *spatial)` in [0, 1].
        """
        if torch.jit.is_scripting():
            return self._mean_probability(x)
        if self.training:
            return self.forward_branches(x)
        return self._mean_probability(x)

    @torch.jit.unused
    def forward_branches(self, x: torch.Tensor) -> DualBranchOutput:
        """All four maps of both decoders, whatever the mode (kept out of TorchScript).

        Args:
            x: image batch `(B, in_channels, *spatial)`, every spatial size divisible by 16.

        Returns:
            :class:`DualBranchOutput` (logits and tanh regression maps; ``seg_low`` and ``reg_low``
            are ``None`` for one branch).
        """
        self._check_input(x)
        features = self.encoder(x)
        seg_high, reg_high = self.decoder_high(features)
        seg_low: Optional[torch.Tensor] = None
        reg_low: Optional[torch.Tensor] = None
        if self.decoder_low is not None:
            seg_low, reg_low = self.decoder_low(features)
        return DualBranchOutput(seg_low=seg_low, seg_high=seg_high, reg_low=reg_low, reg_high=reg_high)

    def branch_probabilities(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Softmax probabilities of the low-level and high-level decoders.

        Args:
            x: image batch `(B, in_channels, *spatial)`.

        Returns:
            `(prob_low, prob_high)`, each `(B, out_channels, *spatial)` in [0, 1]. A one-branch
            network returns the high-level probability twice (the same tensor): their mean is that
            probability and their disagreement is 0 everywhere.
        """
        if not torch.jit.is_scripting():
            self._check_input(x)
        features = self.encoder(x)
        seg_high, _ = self.decoder_high(features)
        prob_high = torch.softmax(seg_high, dim=1)
        decoder_low = self.decoder_low
        if decoder_low is None:
            return prob_high, prob_high
        seg_low, _ = decoder_low(features)
        return torch.softmax(seg_low, dim=1), prob_high

    def _mean_probability(self, x: torch.Tensor) -> torch.Tensor:
        prob_low, prob_high = self.branch_probabilities(x)
        if self.decoder_low is None:
            return prob_high
        return 0.5 * (prob_low + prob_high)

    @torch.jit.unused
    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"`x` must be a torch.Tensor, got {type(x).__name__}.")
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"`x` must have shape (B, {self.in_channels}, *spatial) with {self.spatial_dims} spatial dims, "
                f"got shape {tuple(x.shape)}."
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(f"`x` must have {self.in_channels} channel(s) (in_channels), got shape {tuple(x.shape)}.")
        bad = [int(s) for s in x.shape[2:] if s % _SIZE_DIVISOR != 0]
        if bad:
            raise ValueError(
                f"every spatial size of `x` must be divisible by {_SIZE_DIVISOR} (four stride-2 levels), "
                f"got spatial size {tuple(int(s) for s in x.shape[2:])} ({bad} not divisible)."
            )


class DualBranchUncertainty(nn.Module):
    """Eval-time wrapper that returns the mean probability and the decoders' disagreement together.

    One tensor so that it goes through MONAI's sliding-window inference and channel-wise
    post-transforms unchanged; split it with ``SplitDimd`` or by slicing.

    Args:
        network: a :class:`DualBranchVNet` (its weights are shared, not copied).

    Returns (forward):
        `(B, out_channels + 1, *spatial)`: channels `[:out_channels]` are the mean softmax
        probability in [0, 1], the last channel is :func:`decoder_disagreement` in [0, 1]. For a
        one-branch network (``low_level_branch=False``): the high-level probability and a
        disagreement of 0 everywhere (there is no second decoder to disagree with).
    """

    def __init__(self, network: DualBranchVNet) -> None:
        super().__init__()
        if not isinstance(network, DualBranchVNet):
            raise TypeError(f"`network` must be a DualBranchVNet, got {type(network).__name__}.")
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prob_low, prob_high = self.network.branch_probabilities(x)
        return torch.cat([0.5 * (prob_low + prob_high), decoder_disagreement(prob_low, prob_high)], dim=1)
