"""View Variance Enhancement of SASNet: views of a volume generated in the frequency domain.

Paper: "Scale-aware Adaptive Supervised Network with Limited Medical Annotations", section 3.3,
Eq. 9-11: the image is mapped to k-space with a 3D Fourier transform (Eq. 9), the spectrum is
rotated (Eq. 10) and mapped back with the inverse transform, keeping the real part (Eq. 11).

Two kinds of "view" are supported:

* **Axis transpositions** (what the reference training code uses). A transposition of k-space is
  exactly the same transposition in image space, because the DFT kernel
  ``exp(-2 pi i sum_d k_d x_d / N_d)`` is symmetric in the pairs ``(k_d, x_d)``. This path
  therefore computes no FFT at all: it permutes the spatial axes (exact, also for labels, and
  maps voxels one-to-one, so the SAR confidence memory can follow it). LA uses the identity and
  the in-plane swap ``(1, 0, 2)`` of a 112x112x80 patch with probability 1/2 each; Pancreas and
  BraTS use ``(0, 1, 2)``, ``(0, 2, 1)``, ``(2, 1, 0)`` of a 96^3 patch.
* **Arbitrary angles** ``theta`` (radians, like :py:class:`monai.transforms.Rotate`) in a plane of
  two equal-sized spatial axes: a genuine k-space resampling about the DC term. It is not an
  image rotation about the patch centre: by the Fourier rotation theorem it rotates the periodic
  image about voxel 0, so e.g. 90 degrees is a transposition plus a *circular* flip
  (index ``-x mod N``, not ``N - 1 - x``). Angle views are for augmentation only: they are not
  one-to-one on voxels, not exactly invertible and must not be used with the SAR memory.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import InvertibleTransform, MapTransform, RandomizableTransform
from monai.transforms.inverse import TraceableTransform
from monai.utils import TraceKeys, TransformBackends, convert_to_dst_type, convert_to_tensor

from sasnet_components.utils.errors import InputTypeError, InvalidInputError

__all__ = ["FourierRotate", "RandFourierRotated", "apply_view", "fourier_rotate_plane"]


def _as_int_tuple(value: Any, name: str) -> tuple[int, ...]:
    """Convert a sequence (list, tuple, 1D array/tensor) of integers to a tuple of Python ints."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        value = value.tolist()
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise InputTypeError(f"`{name}` must be a sequence of ints, got {type(value).__name__} {value!r}.")
    out = []
    for v in value:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise InputTypeError(f"`{name}` must be a sequence of ints, got {value!r}.")
        out.append(int(v))
    return tuple(out)


def _check_permutation(view: Sequence[int], name: str) -> tuple[int, ...]:
    """Return `view` as a tuple if it is a permutation of ``range(len(view))``, else raise ValueError."""
    perm = _as_int_tuple(view, name)
    if len(perm) == 0 or sorted(perm) != list(range(len(perm))):
        raise InvalidInputError(f"`{name}` must be a permutation of range({len(perm)}) of the spatial axes, got {perm}.")
    return perm


def _check_axes(axes: Sequence[int], name: str) -> tuple[int, int]:
    """Check that `axes` holds two integer spatial axes (negative values count from the end)."""
    ax = _as_int_tuple(axes, name)
    if len(ax) != 2:
        raise InvalidInputError(f"`{name}` must hold 2 spatial axes defining the rotation plane, got {ax}.")
    return ax[0], ax[1]


def _normalize_axes(axes: tuple[int, int], spatial_dims: int, name: str) -> tuple[int, int]:
    """Map `axes` to non-negative spatial axes of a `spatial_dims`-dimensional image and validate them."""
    if spatial_dims < 2:
        raise InvalidInputError(f"a rotation by an angle needs at least 2 spatial dims, got {spatial_dims}.")
    out = []
    for a in axes:
        if not -spatial_dims <= a < spatial_dims:
            raise InvalidInputError(f"`{name}` must be spatial axes in [-{spatial_dims}, {spatial_dims - 1}], got {axes}.")
        out.append(a % spatial_dims)
    if out[0] == out[1]:
        raise InvalidInputError(f"`{name}` must be two different spatial axes, got {axes}.")
    return out[0], out[1]


def _check_angle(angle: Any, name: str) -> float:
    """Return `angle` as a finite float."""
    if isinstance(angle, (bool, np.bool_)) or not isinstance(angle, (int, float, np.integer, np.floating)):
        raise InputTypeError(f"`{name}` must be a number (radians), got {type(angle).__name__} {angle!r}.")
    angle = float(angle)
    if not math.isfinite(angle):
        raise InvalidInputError(f"`{name}` must be finite (radians), got {angle}.")
    return angle


def _permutation_affine(perm: Sequence[int]) -> torch.Tensor:
    """Homogeneous matrix ``P`` mapping output voxel indices to input voxel indices, ``x = P @ j``.

    ``out = img.permute(0, *(1 + p for p in perm))`` reads ``out[j] = img[x]`` with ``x[perm[k]] = j[k]``,
    so ``P[perm[k], k] = 1``; the new affine of a MetaTensor is ``affine @ P`` (world position preserved).
    """
    n = len(perm)
    mat = torch.zeros(n + 1, n + 1, dtype=torch.float64)
    for k, p in enumerate(perm):
        mat[p, k] = 1.0
    mat[n, n] = 1.0
    return mat


def apply_view(
    img: NdarrayOrTensor, view: Sequence[int] | torch.Tensor, inverse: bool = False, leading_dims: int = 1
) -> NdarrayOrTensor:
    """Apply (or undo) a transposition view: a plain permutation of the spatial axes, no FFT.

    This is the helper for code that must map other arrays through the view recorded by
    :py:class:`RandFourierRotated` (e.g. the SAR confidence memory: read the case memory under a
    crop, ``apply_view`` it to the patch's view; write back patch values with ``inverse=True``).

    Args:
        img: array of shape ``(*leading, *spatial)``, e.g. ``(C, H, W, D)`` with ``leading_dims=1``
            or ``(B, C, H, W, D)`` with ``leading_dims=2``; numpy or torch.
        view: permutation of ``range(spatial_dims)``; output spatial axis ``k`` is input spatial
            axis ``view[k]``. A 1D integer tensor (as recorded in ``data["view"]``) is accepted.
        inverse: apply the inverse permutation ``argsort(view)`` instead (undoes ``view``).
        leading_dims: number of non-spatial leading axes that are kept in place.

    Returns:
        The permuted array, same type and dtype as `img` (a contiguous copy). No metadata update:
        use :py:class:`FourierRotate` to keep a MetaTensor's affine consistent.

    Raises:
        ValueError: if `view` is not a permutation or its length does not match the spatial dims.

    Example:
        >>> x = np.arange(6).reshape(1, 2, 3, 1)
        >>> apply_view(x, (1, 0, 2)).shape
        (1, 3, 2, 1)
    """
    perm = _check_permutation(view, "view")
    if leading_dims < 0 or img.ndim != leading_dims + len(perm):
        raise ValueError(
            f"`img` must have {leading_dims} leading dims + {len(perm)} spatial dims to match `view` {perm}, "
            f"got shape {tuple(img.shape)}."
        )
    if inverse:
        perm = tuple(int(i) for i in np.argsort(perm))
    order = tuple(range(leading_dims)) + tuple(leading_dims + p for p in perm)
    if isinstance(img, torch.Tensor):
        return img.permute(order).clone(memory_format=torch.contiguous_format)
    return np.ascontiguousarray(np.transpose(img, order)).copy()


def _rotate_spectrum(spec: torch.Tensor, angle: float) -> torch.Tensor:
    """Rotate fftshifted complex spectra ``(M, N, N)`` by `angle` about the DC term (index ``N // 2``).

    Output sample ``k`` (centred coordinates) takes the bilinear interpolation of the input at
    ``R(-angle) k`` with ``R(t) = [[cos t, -sin t], [sin t, cos t]]`` acting on ``(k_a, k_b)``; samples
    outside the original k-space box count as zero.
    """
    n = spec.shape[-1]
    c, s = math.cos(angle), math.sin(angle)
    # exact multiples of 90 degrees stay exact (cos(pi / 2) is 6e-17 in floating point)
    c = 0.0 if abs(c) < 1e-12 else c
    s = 0.0 if abs(s) < 1e-12 else s
    k = torch.arange(n, device=spec.device, dtype=torch.float64) - n // 2
    ka, kb = torch.meshgrid(k, k, indexing="ij")
    src_a = (c * ka + s * kb + n // 2).reshape(-1)
    src_b = (-s * ka + c * kb + n // 2).reshape(-1)
    a0, b0 = torch.floor(src_a), torch.floor(src_b)
    wa, wb = src_a - a0, src_b - b0
    a0, b0 = a0.long(), b0.long()
    flat = spec.reshape(spec.shape[0], n * n)
    real_dtype = spec.real.dtype
    out = torch.zeros_like(flat)
    for da, w_a in ((0, 1.0 - wa), (1, wa)):
        for db, w_b in ((0, 1.0 - wb), (1, wb)):
            ia, ib = a0 + da, b0 + db
            valid = (ia >= 0) & (ia < n) & (ib >= 0) & (ib < n)
            weight = (w_a * w_b * valid).to(real_dtype)
            idx = ia.clamp(0, n - 1) * n + ib.clamp(0, n - 1)
            out = out + flat.index_select(1, idx) * weight
    return out.reshape(spec.shape)


def _kspace_rotate_continuous(x: torch.Tensor, angle: float, plane: tuple[int, int]) -> torch.Tensor:
    """k-space rotation of a real tensor ``(M, *spatial)``; returns the real part, same float dtype."""
    work_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    out_dtype = x.dtype if x.is_floating_point() else torch.float32
    dims = tuple(range(1, x.ndim))
    spec = torch.fft.fftshift(torch.fft.fftn(x.to(work_dtype), dim=dims), dim=dims)  # Eq. 9
    a, b = 1 + plane[0], 1 + plane[1]
    moved = spec.movedim((a, b), (-2, -1))
    moved_shape = moved.shape
    rotated = _rotate_spectrum(moved.reshape(-1, moved_shape[-2], moved_shape[-1]), angle)  # Eq. 10
    spec = rotated.reshape(moved_shape).movedim((-2, -1), (a, b))
    out = torch.fft.ifftn(torch.fft.ifftshift(spec, dim=dims), dim=dims).real  # Eq. 11
    return out.to(out_dtype).contiguous()


def fourier_rotate_plane(
    img: NdarrayOrTensor, angle: float, axes: Sequence[int] = (0, 1), discrete: bool = False
) -> NdarrayOrTensor:
    """Rotate the spectrum of a channel-first image by `angle` radians in a plane (Eq. 9-11).

    Steps: ``fftn`` over the spatial axes (Eq. 9), ``fftshift``, rotation of the complex spectrum
    about the DC term (index ``N // 2``) with linear interpolation of its real and imaginary parts
    and zeros outside the original k-space box (Eq. 10), ``ifftshift``, ``ifftn`` and the real
    part (Eq. 11). Runs on the tensor's device; always computes the FFTs (also for ``angle=0``).

    Sign convention: with ``(a, b) = axes`` and ``R(t) = [[cos t, -sin t], [sin t, cos t]]`` acting
    on ``(k_a, k_b)``, the output spectrum is ``F'(k) = F(R(-angle) k)``: a positive angle turns
    the spectrum from axis ``a`` towards axis ``b``. By the Fourier rotation theorem the image turns
    the same way about voxel 0 of the periodic image. For an odd plane size ``N`` and
    ``angle = pi / 2`` this is exact: ``out[..., x_a, x_b] = img[..., x_b, (-x_a) mod N]``, i.e.
    swap the two axes then flip axis ``a`` *circularly* (index ``-x mod N``). ``pi`` gives the
    circular point reflection ``img[-x_a mod N, -x_b mod N]``. For even ``N`` the Nyquist row
    has no partner after rotation, so these identities hold only approximately. The mean
    intensity (the DC term) is preserved for every angle.

    Args:
        img: channel-first array ``(C, H, W[, D])``, numpy or torch (MetaTensor metadata is kept
            unchanged: the resampling is not an affine change of the voxel grid).
        angle: rotation angle in radians.
        axes: two spatial axes (0-based, excluding the channel axis) spanning the rotation plane;
            they must have equal sizes.
        discrete: treat `img` as a label map with non-negative integer values: each channel is
            one-hot encoded (``int(max) + 1`` classes), the one-hot channels are rotated through
            the same k-space path and the argmax is taken, so labels stay integer-valued.

    Returns:
        The rotated image, same type, shape and device as `img`. Dtype: that of `img` when
        `discrete` is True or `img` is floating point, otherwise float32.

    Raises:
        ValueError: if the two plane axes have different sizes, `axes` is invalid, or `discrete`
            labels are negative or not integer-valued.

    Example:
        >>> x = torch.rand(1, 9, 9, 4)
        >>> torch.allclose(fourier_rotate_plane(x, 0.0), x, atol=1e-5)
        True
    """
    angle = _check_angle(angle, "angle")
    img_t = convert_to_tensor(img, track_meta=False)
    spatial_dims = img_t.ndim - 1
    plane = _normalize_axes(_check_axes(axes, "axes"), spatial_dims, "axes")
    sizes = (img_t.shape[1 + plane[0]], img_t.shape[1 + plane[1]])
    if sizes[0] != sizes[1]:
        raise ValueError(
            f"a k-space rotation needs a plane of equal-sized axes: `axes` {tuple(axes)} of `img` with shape "
            f"{tuple(img_t.shape)} have sizes {sizes[0]} and {sizes[1]}."
        )
    if not discrete:
        out = _kspace_rotate_continuous(img_t, angle, plane)
    else:
        if img_t.is_floating_point() and not torch.equal(img_t, torch.round(img_t)):
            raise ValueError("`img` must hold integer class indices when `discrete` is True, got non-integer values.")
        if img_t.is_complex():
            raise ValueError("`img` must hold integer class indices when `discrete` is True, got complex values.")
        labels = img_t.long()
        if labels.numel() and int(labels.min()) < 0:
            raise ValueError(
                f"`img` must hold non-negative class indices when `discrete` is True, got min {int(labels.min())}."
            )
        num_classes = int(labels.max()) + 1 if labels.numel() else 1
        onehot = torch.nn.functional.one_hot(labels, num_classes).movedim(-1, 1)  # (C, K, *spatial)
        channels, spatial = onehot.shape[0], onehot.shape[2:]
        rotated = _kspace_rotate_continuous(onehot.reshape(channels * num_classes, *spatial).float(), angle, plane)
        out = rotated.reshape(channels, num_classes, *spatial).argmax(dim=1).to(img_t.dtype)
    return convert_to_dst_type(out, img, dtype=out.dtype)[0]


class FourierRotate(InvertibleTransform):
    """View Variance Enhancement, deterministic: a transposition view then an optional k-space angle.

    The view (paper section 3.3, Eq. 9-11) is applied in two steps:

    1. ``view``: a permutation of the spatial axes, output axis ``k`` = input axis ``view[k]``.
       Transposing k-space equals transposing the image, so no FFT is computed (exact; labels
       stay exact; voxels map one-to-one, so the SAR memory can follow this view).
    2. ``angle``: if non-zero, a rotation of the spectrum by ``angle`` radians in the plane
       ``axes`` of the transposed image (see :py:func:`fourier_rotate_plane` for the exact
       k-space procedure and sign convention; 90 degrees there is a transposition plus a
       *circular* flip, not an image rotation). Augmentation only, not one-to-one on voxels.

    Input and output are channel-first ``(C, H, W[, D])``; the output has the same type as the
    input (numpy, torch.Tensor or MetaTensor). For a MetaTensor the affine is updated for the
    transposition (``affine @ P`` so every voxel keeps its world position) and the operation is
    recorded in ``applied_operations`` with ``extra_info = {"view", "angle", "axes", "discrete"}``.

    Inversion: transposition views are inverted exactly (the inverse permutation
    ``argsort(view)``). Views with a non-zero angle raise ``NotImplementedError``: the k-space
    resampling loses information at the box corners and is not exactly invertible.

    Args:
        view: permutation of ``range(spatial_dims)``, e.g. ``(1, 0, 2)``; None means identity.
        angle: k-space rotation angle in radians; 0.0 (default) skips the FFT path entirely.
        axes: two spatial axes (0-based, excluding the channel axis) spanning the rotation plane;
            their sizes must be equal. Only used when `angle` is non-zero.
        discrete: the input is a label map; the angle path then rotates its one-hot encoding and
            takes the argmax (see :py:func:`fourier_rotate_plane`). No effect on transpositions.

    Raises:
        ValueError: if `view` is not a permutation, or (at call time) its length does not match
            the image's spatial dims, or the rotation plane has unequal sizes.
        TypeError: if `angle` is not a number.

    Example:
        >>> x = torch.arange(24.0).reshape(1, 2, 3, 4)
        >>> FourierRotate(view=(1, 0, 2))(x).shape
        torch.Size([1, 3, 2, 4])
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        view: Sequence[int] | None = None,
        angle: float = 0.0,
        axes: Sequence[int] = (0, 1),
        discrete: bool = False,
    ) -> None:
        self.view = None if view is None else _check_permutation(view, "view")
        self.angle = _check_angle(angle, "angle")
        self.axes = _check_axes(axes, "axes")
        self.discrete = bool(discrete)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """
        Args:
            img: channel-first image ``(C, H, W[, D])``, numpy, torch or MetaTensor.

        Returns:
            The image in the new view, same type as `img`; spatial shape permuted by `view`.

        Raises:
            ValueError: if the spatial dims of `img` do not match `view`, or the rotation plane
                has unequal sizes.
        """
        if img.ndim < 2:
            raise ValueError(f"`img` must be channel-first (C, *spatial), got shape {tuple(img.shape)}.")
        spatial_dims = img.ndim - 1
        perm = self.view if self.view is not None else tuple(range(spatial_dims))
        if len(perm) != spatial_dims:
            raise ValueError(
                f"`view` {perm} permutes {len(perm)} spatial axes but `img` has shape {tuple(img.shape)} "
                f"({spatial_dims} spatial dims)."
            )
        plane = _normalize_axes(self.axes, spatial_dims, "axes") if self.angle != 0.0 else self.axes
        img_t = convert_to_tensor(img, track_meta=get_track_meta())
        orig_size = tuple(img_t.shape[1:])
        data = img_t.as_tensor() if isinstance(img_t, MetaTensor) else img_t
        out = apply_view(data, perm)
        if self.angle != 0.0:
            out = fourier_rotate_plane(out, self.angle, plane, self.discrete)
        is_identity = perm == tuple(range(spatial_dims))
        meta_info = TraceableTransform.track_transform_meta(
            img_t,
            sp_size=tuple(out.shape[1:]),
            affine=None if is_identity else _permutation_affine(perm),
            extra_info={"view": list(perm), "angle": self.angle, "axes": list(plane), "discrete": self.discrete},
            orig_size=orig_size,
            transform_info=self.get_transform_info(),
            lazy=False,
        )
        if isinstance(img, MetaTensor):
            return MetaTensor(out).copy_meta_from(meta_info)  # type: ignore[no-any-return]
        if isinstance(img, torch.Tensor):
            return out
        return convert_to_dst_type(out, img, dtype=out.dtype)[0]

    def inverse(self, data: NdarrayOrTensor) -> NdarrayOrTensor:
        """Undo the transposition view.

        A MetaTensor is inverted from its recorded operation (popped from ``applied_operations``);
        other arrays with this transform's own `view` and `angle`.

        Raises:
            NotImplementedError: if the view has a non-zero angle (not exactly invertible).
        """
        if isinstance(data, MetaTensor) and get_track_meta():
            transform = self.pop_transform(data)
            return self.inverse_transform(data, transform)
        extra = {"view": list(self.view) if self.view is not None else None, "angle": self.angle}
        return self.inverse_transform(data, {TraceKeys.EXTRA_INFO: extra})

    def inverse_transform(self, data: NdarrayOrTensor, transform: Mapping) -> NdarrayOrTensor:
        """Invert the view described by ``transform[TraceKeys.EXTRA_INFO]`` (``"view"``, ``"angle"``).

        Raises:
            NotImplementedError: if the recorded angle is non-zero.
        """
        info = transform[TraceKeys.EXTRA_INFO]
        angle = float(info.get("angle", 0.0))
        if angle != 0.0:
            raise NotImplementedError(
                f"FourierRotate with a non-zero `angle` ({angle} rad) is a k-space resampling and is not "
                "exactly invertible; only transposition views (angle 0) can be inverted."
            )
        view = info.get("view")
        if view is None:
            view = tuple(range(data.ndim - 1))
        inv_view = tuple(int(i) for i in np.argsort(_check_permutation(view, "view")))
        xform = FourierRotate(view=inv_view)
        with xform.trace_transform(False):
            return xform(data)


class RandFourierRotated(RandomizableTransform, MapTransform, InvertibleTransform):
    """Dictionary-based random View Variance Enhancement (paper section 3.3, Eq. 9-11).

    Per call, :py:meth:`randomize` draws one view from `views` (probabilities `view_probs`,
    uniform by default) and, with probability `angle_prob`, an angle uniform in
    ``[-angle_range, angle_range]`` radians (else 0). Every key gets the SAME view through
    :py:class:`FourierRotate` (transposition without FFT, then the optional k-space rotation in
    the plane `angle_axes` of the transposed image).

    The applied view is stored with the sample so that downstream code can map other arrays
    (the label, the SAR confidence memory) through it, e.g. with :py:func:`apply_view`:

    * ``data[view_key]``: the permutation as a ``torch.long`` tensor of shape ``(spatial_dims,)``,
      e.g. ``tensor([1, 0, 2])`` (after collation ``(B, spatial_dims)``);
    * ``data[f"{view_key}_angle"]``: the angle in radians as a 0-dim ``torch.float64`` tensor
      (0.0 when no angle was drawn).

    For MetaTensors the operation is also pushed to ``applied_operations`` so that
    :py:meth:`inverse` restores transpositions exactly (non-MetaTensor values are inverted with
    the recorded ``data[view_key]``). Inverting a sample with a non-zero angle raises
    ``NotImplementedError``. Keep ``angle_prob=0`` whenever the SAR memory follows the views:
    only transpositions map voxels one-to-one.

    Args:
        keys: keys of the items to transform, channel-first ``(C, H, W[, D])`` arrays.
        views: sequence of permutations of ``range(spatial_dims)``. Default: the LA setting,
            identity or swap of the two in-plane axes, ``((0, 1, 2), (1, 0, 2))``. Pancreas/BraTS:
            ``((0, 1, 2), (0, 2, 1), (2, 1, 0))``.
        view_probs: probability of each view (non-negative, summing to 1); None means uniform.
        angle_prob: probability in [0, 1] of adding a k-space rotation.
        angle_range: maximum absolute angle in radians (>= 0).
        angle_axes: two spatial axes spanning the rotation plane (equal sizes required).
        discrete: bool or one bool per key; True marks label maps (angle path rotates their
            one-hot encoding and takes the argmax). Transpositions are exact either way.
        view_key: key under which the view is recorded (``f"{view_key}_angle"`` for the angle).
        allow_missing_keys: don't raise an exception if a key is missing.

    Raises:
        ValueError: invalid `views`, `view_probs`, `angle_prob`, `angle_range`, `angle_axes` or
            `discrete`; at call time, spatial dims that do not match the views or a rotation
            plane of unequal sizes.
        KeyError: a key is missing and `allow_missing_keys` is False.

    Example:
        >>> t = RandFourierRotated(keys=("image", "label")).set_random_state(seed=0)
        >>> out = t({"image": torch.rand(1, 12, 10, 8), "label": torch.zeros(1, 12, 10, 8)})
        >>> out["view"].tolist() in ([0, 1, 2], [1, 0, 2])
        True
    """

    backend = FourierRotate.backend

    def __init__(
        self,
        keys: KeysCollection,
        views: Sequence[Sequence[int]] = ((0, 1, 2), (1, 0, 2)),
        view_probs: Sequence[float] | None = None,
        angle_prob: float = 0.0,
        angle_range: float = 0.0,
        angle_axes: Sequence[int] = (0, 1),
        discrete: bool | Sequence[bool] = False,
        view_key: str = "view",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob=1.0)
        if isinstance(views, (str, bytes)) or not isinstance(views, Sequence) or len(views) == 0:
            raise InvalidInputError(f"`views` must be a non-empty sequence of permutations, got {views!r}.")
        checked = []
        for i, v in enumerate(views):
            try:
                checked.append(_check_permutation(v, "views"))
            except (TypeError, ValueError):
                raise InvalidInputError(
                    f"`views` must hold permutations of range(n) of the spatial axes, got entry {i}: {v!r}."
                ) from None
        spatial_dims = len(checked[0])
        for i, v in enumerate(checked):
            if len(v) != spatial_dims:
                raise InvalidInputError(
                    f"`views` must all permute the same number of spatial axes ({spatial_dims}), got entry {i}: {v}."
                )
        self.views: tuple[tuple[int, ...], ...] = tuple(checked)
        self.spatial_dims = spatial_dims

        if view_probs is None:
            probs = np.full(len(self.views), 1.0 / len(self.views))
        else:
            probs = np.asarray(view_probs, dtype=np.float64).reshape(-1)
            if probs.shape[0] != len(self.views):
                raise InvalidInputError(
                    f"`view_probs` must have one entry per view ({len(self.views)}), "
                    f"got {len(probs)}: {list(view_probs)}."
                )
            if not np.all(np.isfinite(probs)) or np.any(probs < 0) or abs(probs.sum() - 1.0) > 1e-6:
                raise InvalidInputError(f"`view_probs` must be non-negative and sum to 1, got {list(view_probs)}.")
            probs = probs / probs.sum()
        self.view_probs = probs

        angle_prob = _check_angle(angle_prob, "angle_prob")
        if not 0.0 <= angle_prob <= 1.0:
            raise InvalidInputError(f"`angle_prob` must be in [0, 1], got {angle_prob}.")
        self.angle_prob = angle_prob
        angle_range = _check_angle(angle_range, "angle_range")
        if angle_range < 0:
            raise InvalidInputError(f"`angle_range` must be >= 0 (max |angle| in radians), got {angle_range}.")
        self.angle_range = angle_range
        self.angle_axes = _normalize_axes(_check_axes(angle_axes, "angle_axes"), self.spatial_dims, "angle_axes")

        if isinstance(discrete, (bool, np.bool_)):
            flags = (bool(discrete),) * len(self.keys)
        elif isinstance(discrete, Sequence) and not isinstance(discrete, (str, bytes)):
            flags = tuple(bool(f) for f in discrete)
            if len(flags) != len(self.keys):
                raise InvalidInputError(
                    f"`discrete` must be a bool or one bool per key ({len(self.keys)} keys {list(self.keys)}), "
                    f"got {list(discrete)}."
                )
        else:
            raise InvalidInputError(f"`discrete` must be a bool or a sequence of bools, got {discrete!r}.")
        self.discrete = flags

        if not isinstance(view_key, str) or not view_key:
            raise InvalidInputError(f"`view_key` must be a non-empty string, got {view_key!r}.")
        self.view_key = view_key
        self.angle_key = f"{view_key}_angle"
        if self.view_key in self.keys or self.angle_key in self.keys:
            raise InvalidInputError(
                f"`view_key` {view_key!r} must differ from the transformed `keys` {list(self.keys)} "
                f"(it also writes {self.angle_key!r})."
            )
        self._view_index = 0
        self._angle = 0.0

    @property
    def view(self) -> tuple[int, ...]:
        """The view (a permutation of the spatial axes) drawn by the last :py:meth:`randomize`."""
        return self.views[self._view_index]

    def randomize(self, data: Any | None = None) -> None:
        """Draw the view index and the angle (radians) with ``self.R``."""
        self._do_transform = True
        self._view_index = int(self.R.choice(len(self.views), p=self.view_probs))
        self._angle = 0.0
        if self.angle_prob > 0.0 and self.angle_range > 0.0 and self.R.rand() < self.angle_prob:
            self._angle = float(self.R.uniform(-self.angle_range, self.angle_range))

    def _check_shapes(self, d: Mapping[Hashable, Any]) -> None:
        """Validate spatial dims against `views` and, if angles can be drawn, the rotation planes."""
        may_rotate = self.angle_prob > 0.0 and self.angle_range > 0.0
        for key in self.key_iterator(d):
            shape = tuple(d[key].shape)
            if len(shape) - 1 != self.spatial_dims:
                raise ValueError(
                    f"`views` permute {self.spatial_dims} spatial axes but data[{key!r}] has shape {shape} "
                    f"({len(shape) - 1} spatial dims); expected (C, *spatial)."
                )
            if may_rotate:
                for v in self.views:
                    sp = [shape[1 + p] for p in v]
                    a, b = self.angle_axes
                    if sp[a] != sp[b]:
                        raise ValueError(
                            f"a k-space rotation needs a plane of equal-sized axes: `angle_axes` {self.angle_axes} of "
                            f"data[{key!r}] with shape {shape} in view {v} have sizes {sp[a]} and {sp[b]}."
                        )

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor], randomize: bool = True) -> dict[Hashable, Any]:
        """
        Args:
            data: dictionary with channel-first arrays ``(C, H, W[, D])`` under `keys`.
            randomize: draw new parameters first (default True).

        Returns:
            A new dictionary with the transformed items and the recorded view and angle.
        """
        d = dict(data)
        self._check_shapes(d)
        if randomize:
            self.randomize()
        view = self.views[self._view_index]
        for key, discrete in self.key_iterator(d, self.discrete):
            rotator = FourierRotate(view=view, angle=self._angle, axes=self.angle_axes, discrete=discrete)
            d[key] = rotator(d[key])
            self.push_transform(d[key], replace=True)
        d[self.view_key] = torch.tensor(view, dtype=torch.long)
        d[self.angle_key] = torch.tensor(self._angle, dtype=torch.float64)
        return d

    def inverse(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, Any]:
        """Restore the original view of every key (exact for transpositions).

        MetaTensors are inverted from their recorded operation; other arrays from
        ``data[view_key]`` and ``data[f"{view_key}_angle"]``.

        Raises:
            NotImplementedError: if the applied view had a non-zero angle.
            KeyError: a non-MetaTensor item is given but ``data[view_key]`` is missing.
        """
        d = dict(data)
        for key in self.key_iterator(d):
            if isinstance(d[key], MetaTensor) and get_track_meta():
                xform = self.pop_transform(d[key])
                d[key] = FourierRotate().inverse_transform(d[key], xform[TraceKeys.EXTRA_INFO])
                continue
            if self.view_key not in d:
                raise KeyError(
                    f"inverting data[{key!r}] (not a MetaTensor) needs the recorded view under `view_key` "
                    f"{self.view_key!r}, which is missing."
                )
            angle = d.get(self.angle_key, 0.0)
            extra = {"view": _as_int_tuple(d[self.view_key], "view"), "angle": float(angle)}
            d[key] = FourierRotate().inverse_transform(d[key], {TraceKeys.EXTRA_INFO: extra})
        return d
