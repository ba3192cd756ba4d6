"""Scale-aware Adaptive Reweight (SAR): the per-case confidence memory and the fusion of Eq. 4-8.

Paper section 3.2. For labeled samples the two decoders' probabilities are reweighted by their
confidence on the previous epochs and fused with a softmax (Eq. 4-6); the confidence of a branch
on a voxel is the probability it gives the true class (Eq. 7-8). Unlabeled samples average the
two probabilities.

Storage types of the memory (``dtype``): ``"float16"`` (default), ``"float32"`` or ``"uint8"``. A
uint8 memory holds a confidence ``c`` in [0, 1] as the code ``floor(255 * c + 0.5)`` (rounding half
up) and reads it back as ``code / 255`` in float32, so a written value is read within ``1 / 510``
(about 0.00196) of the confidence; e.g. 0.3 is stored as 77 and read as 77 / 255 = 0.30196. The
initial 0.5 is stored as 128 and reads as 128 / 255 = 0.50196 (0.5 + 1 / 510), within the same
bound: no special code is reserved for it. In ``"running"`` mode the average ``(old + new) / 2`` is
taken in float32 and rounded once when stored; an earlier rounding error halves at each average,
so the memory stays within 2 / 510 = 1 / 255 of a float32 one. uint8 takes half the bytes of float16.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import ignite.distributed as idist
import torch
import torch.distributed as dist

from sasnet_components.transforms.fourier_rotate import apply_view
from sasnet_components.utils.distributed import is_distributed
from sasnet_components.utils.errors import InvalidInputError, UnknownKeyError, check_option

__all__ = ["SARFusion"]

logger = logging.getLogger(__name__)

_MODES = ("paper", "running")
_DTYPES = {"float16": torch.float16, "float32": torch.float32, "uint8": torch.uint8}
# uint8 memory: confidence c in [0, 1] <-> code round(c * _UINT8_SCALE)
_UINT8_SCALE = 255
# paper mode: slots of the per-case memory
_CURRENT, _PREVIOUS, _BEFORE_PREVIOUS = 0, 1, 2


def _as_int_rows(value: Union[torch.Tensor, Sequence], name: str, batch: int, ndim: int) -> List[List[int]]:
    rows = [[int(v) for v in torch.as_tensor(row).reshape(-1).tolist()] for row in value]
    if len(rows) != batch or any(len(r) != ndim for r in rows):
        raise ValueError(f"`{name}` must hold {batch} rows of {ndim} integers (one per spatial dim), got {value!r}.")
    return rows


def _decode(stored: torch.Tensor) -> torch.Tensor:
    """Confidences held in `stored` (any shape, float or uint8 codes) as a new float32 tensor on its device."""
    if stored.dtype == torch.uint8:
        return stored.to(torch.float32).div_(_UINT8_SCALE)
    if not stored.is_floating_point():
        raise InvalidInputError(f"a SAR memory must be float or uint8, got dtype {stored.dtype}.")
    return stored.to(torch.float32, copy=True)


def _encode(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Confidences `values` in [0, 1] (any shape) in the storage type `dtype`; uint8: ``floor(255 * c + 0.5)``."""
    if dtype == torch.uint8:
        codes = values.to(torch.float32) * _UINT8_SCALE + 0.5
        return codes.floor_().clamp_(0, _UINT8_SCALE).to(torch.uint8)
    return values.to(dtype)


def _take(value: torch.Tensor, indices: List[int]) -> torch.Tensor:
    """Samples `indices` (ascending) of `value` `(B, ...)`: a view for a run of consecutive samples, else
    a stack of per-sample views; no index tensor is copied to `value`'s device."""
    if indices == list(range(indices[0], indices[-1] + 1)):
        return value[indices[0] : indices[-1] + 1]
    return torch.stack([value[i] for i in indices])


class SARFusion:
    """Confidence memory and fusion of Scale-aware Adaptive Reweight (paper Eq. 4-8), an Ignite handler.

    The memory holds, per labeled case and per branch (low, high), a confidence map over the whole
    case volume (the grid the training crops are drawn from, padding included), initialised to
    0.5 (uint8 storage: 128 / 255). Patches are random crops seen in a view (an axis permutation,
    see ``RandFourierRotated``), so every read and write goes through the crop location and the
    view of its patch.

    For a labeled sample with probabilities ``P_low``, ``P_high`` and memory weights ``Cbar``:

        ensemble = softmax((1 + alpha * Cbar_low) * P_low + (1 + alpha * Cbar_high) * P_high)   (Eq. 4-6)

    and the confidences written back are ``C_b = P_b[true class]`` (Eq. 7-8). Unlabeled samples
    get ``(P_low + P_high) / 2``.

    Modes:
        - ``"paper"`` (default): ``Cbar = (C_{i-1} + C_{i-2}) / 2``, the mean of the confidences of
          the two previous epochs. Confidences written during epoch ``i`` become ``C_{i-1}`` when the
          trainer's ``EPOCH_COMPLETED`` fires; a voxel that no crop covered during an epoch keeps its
          last value.
        - ``"running"``: the rule the reference code intends (implemented with correct indexing):
          ``Cbar`` is a running memory ``M`` read before the update; after each iteration
          ``M = (M + C) / 2`` where the voxel was seen before and ``M = C`` where it is seen for the
          first time. Epoch boundaries do not matter in this mode.

    An epoch is one pass over the labeled cases: set the trainer's ``epoch_length`` accordingly
    (e.g. 16 labeled cases, 2 per batch: 8 iterations) and :meth:`attach` this handler.

    The whole memory round-trips through :meth:`state_dict` / :meth:`load_state_dict`, which use
    only tensors, numbers and strings (loadable with ``torch.load(weights_only=True)`` as MONAI's
    ``CheckpointLoader`` does), so put the handler in ``CheckpointSaver``'s ``save_dict``. The memory
    takes 2 bytes (float16; 1 with uint8, 4 with float32) per voxel of every labeled case, times 2
    branches, times 3 epochs in ``"paper"`` mode: most of a training checkpoint (LA, float16: 475 of
    565 MB). With ``checkpoint_memory=False`` the state leaves it out; a handler loading such a
    state starts its memory afresh (0.5 everywhere) and logs a warning: the resumed run does not
    continue as the saved one would have.

    Several processes (a ``torch.distributed`` process group of more than one process, e.g. one
    per GPU under ``torchrun``) keep one memory: in :meth:`fuse` each process reads the memory for
    its own labeled samples, then the processes gather every process's labeled confidences with
    their case, crop and view, and each applies all of them in rank order (within a rank, in
    sample order). Every process then holds the same memory after every call, the memory a single
    process would hold after fusing the whole batch (the samples of one batch are different
    cases, so reading before the others' writes changes nothing), and a checkpoint written by
    one process holds it once. Every process must call :meth:`fuse` with the same number of
    labeled samples and the same `update`.

    Args:
        alpha: residual coefficient in [0, 1] (paper: 0.5).
        mode: ``"paper"`` or ``"running"``.
        dtype: storage type of the memory, ``"float16"`` (compact, default), ``"float32"`` or
            ``"uint8"`` (half the bytes of float16, confidences within 1 / 510; see the module
            docstring). Reads are converted to float32 on the memory's device. A state saved with
            another storage type is converted on :meth:`load_state_dict`.
        checkpoint_memory: whether :meth:`state_dict` holds the memory (default) or only the mode,
            alpha, dtype and epoch count (a resume from it is not exact).
        enabled: ``False`` switches SAR off (the "w/o SAR" ablation of the paper's Table 6): :meth:`fuse`
            returns the plain mean ``0.5 * (P_low + P_high)`` for every sample and never reads or writes
            the memory, which stays empty.
        check_labels: check in :meth:`fuse` that the labels of labeled samples lie in [0, C) (default).
            The check reads a device value, a host-device synchronisation per iteration on an
            accelerator; ``False`` skips it, for callers that validated the labels once (e.g. a
            device-resident loader that checks them when caching). Out-of-range labels are then not
            reported clearly (a failed index, a device-side assert on CUDA).

    Example::

        sar = SARFusion(alpha=0.5)
        sar.attach(trainer)
        ensemble = sar.fuse(prob_low, prob_high, labeled=batch["labeled"], label=batch["label"],
                            case_ids=batch["case_id"], crop_starts=batch["crop_start"],
                            views=batch["view"], case_shapes=batch["case_shape"])
    """

    def __init__(
        self,
        alpha: float = 0.5,
        mode: str = "paper",
        dtype: str = "float16",
        checkpoint_memory: bool = True,
        enabled: bool = True,
        check_labels: bool = True,
    ) -> None:
        if not 0.0 <= float(alpha) <= 1.0:
            raise InvalidInputError(f"`alpha` must be in [0, 1], got {alpha!r}.")
        self.alpha = float(alpha)
        self.mode: str = check_option(mode, _MODES, "SARFusion's `mode`")
        self.dtype_name: str = check_option(dtype, tuple(_DTYPES), "SARFusion's `dtype`")
        self.checkpoint_memory = bool(checkpoint_memory)
        if not isinstance(enabled, bool):
            raise InvalidInputError(f"SARFusion's `enabled` must be True or False, got {enabled!r}.")
        self.enabled = enabled
        if not isinstance(check_labels, bool):
            raise InvalidInputError(f"SARFusion's `check_labels` must be True or False, got {check_labels!r}.")
        self.check_labels = check_labels
        self.epoch = 0
        self.memory: Dict[str, torch.Tensor] = {}  # case id -> paper: (3, 2, *case); running: (2, *case)
        self.seen: Dict[str, torch.Tensor] = {}  # running mode: case id -> bool (*case)

    # ------------------------------------------------------------------ ignite
    def attach(self, engine) -> None:
        """Roll the memory when ``engine`` completes an epoch (``Events.EPOCH_COMPLETED``), and check
        the memory against the engine's position when an iteration starts (see :meth:`iteration_started`)."""
        from ignite.engine import Events

        if not engine.has_event_handler(self.epoch_completed, Events.EPOCH_COMPLETED):
            engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)
        if not engine.has_event_handler(self.iteration_started, Events.ITERATION_STARTED):
            engine.add_event_handler(Events.ITERATION_STARTED, self.iteration_started)

    def iteration_started(self, engine: Any) -> None:
        """Keep the memory one roll per completed epoch of ``engine``.

        A checkpoint written at the last iteration of an epoch holds the memory before that epoch's
        ``EPOCH_COMPLETED`` rolled it, and a run resumed from it never sees that event: the missing
        roll is done here, before the first iteration of the next epoch reads the memory.

        Raises:
            ValueError: the memory has rolled more epochs than the engine completed, or fewer by more
                than one (memory and trainer state come from different runs).
        """
        epoch_length = engine.state.epoch_length
        if not epoch_length:
            return
        completed = (engine.state.iteration - 1) // epoch_length
        if self.epoch == completed - 1:
            self.epoch_completed(engine)
        elif self.epoch != completed:
            raise InvalidInputError(
                f"the SAR memory has rolled {self.epoch} epochs but the trainer starts iteration "
                f"{engine.state.iteration} after {completed} complete epochs of {epoch_length} iterations: load the "
                "memory and the trainer state from the same checkpoint, or start with a new SARFusion."
            )

    def epoch_completed(self, engine: Any = None) -> None:
        """End of an epoch: in ``"paper"`` mode ``C_{i-2} <- C_{i-1} <- C_i``."""
        if self.mode == "paper":
            for memory in self.memory.values():
                memory[_BEFORE_PREVIOUS].copy_(memory[_PREVIOUS])
                memory[_PREVIOUS].copy_(memory[_CURRENT])
        self.epoch += 1

    # ------------------------------------------------------------------ fusion
    def fuse(
        self,
        prob_low: torch.Tensor,
        prob_high: torch.Tensor,
        labeled: Union[torch.Tensor, Sequence[bool]],
        label: Optional[torch.Tensor] = None,
        case_ids: Optional[Sequence[str]] = None,
        crop_starts: Optional[Union[torch.Tensor, Sequence[Sequence[int]]]] = None,
        views: Optional[Union[torch.Tensor, Sequence[Sequence[int]]]] = None,
        case_shapes: Optional[Union[torch.Tensor, Sequence[Sequence[int]]]] = None,
        update: bool = True,
    ) -> torch.Tensor:
        """Fuse the two branches (Eq. 4-6) and write the labeled confidences (Eq. 7-8) to the memory.

        Args:
            prob_low: softmax probabilities of the low-level decoder, `(B, C, *spatial)` in [0, 1].
            prob_high: softmax probabilities of the high-level decoder, same shape.
            labeled: `(B,)` booleans; only labeled samples read `label` and the memory.
            label: `(B, 1, *spatial)` class indices in [0, C); entries of unlabeled samples are
                placeholders and never read. Required when any sample is labeled.
            case_ids: `B` case identifiers (strings) naming each labeled sample's case.
            crop_starts: `(B, S)` start of each patch's crop in its case volume, in case axis order.
            views: `(B, S)` the axis permutation applied to the crop to give the patch
                (``patch = crop.permute(view)``); identity ``(0, 1, ..., S-1)`` for no view change.
            case_shapes: `(B, S)` spatial shape of each case volume (the grid crops are drawn from).
            update: write the confidences of this batch to the memory (False: read only).

        Returns:
            The ensemble probability `(B, C, *spatial)` in [0, 1] (sums to 1 over channels). It keeps
            the autograd graph of the inputs; the memory only stores detached values. When the handler
            is not `enabled`: ``0.5 * (prob_low + prob_high)`` for every sample, the memory untouched.

        Raises:
            ValueError: on mismatched shapes, label values outside [0, C) (unless `check_labels` is
                False), a crop outside its case, a view that is not a permutation, or a case seen with
                two different shapes.

        Note:
            On an accelerator, with `labeled`, `crop_starts`, `views` and `case_shapes` given as Python
            sequences or CPU tensors, the only host-device synchronisation of this method is the label
            check (skipped with ``check_labels=False``): everything else the host needs comes from
            those CPU values. A `labeled` (or crop, view, shape) tensor on the accelerator is read
            back to the host, one synchronisation each. The first use of a case allocates its memory
            on the device of `prob_low`. With several processes, sharing the writes adds three
            collectives, one of which (the length of the gathered records) the host waits for.
        """
        if prob_low.shape != prob_high.shape or prob_low.ndim < 3:
            raise ValueError(
                f"`prob_low` and `prob_high` must have the same shape (B, C, *spatial), "
                f"got {tuple(prob_low.shape)} and {tuple(prob_high.shape)}."
            )
        batch, n_classes, spatial = prob_low.shape[0], prob_low.shape[1], tuple(prob_low.shape[2:])
        labeled_mask = torch.as_tensor(labeled, dtype=torch.bool, device=torch.device("cpu")).reshape(-1)
        if labeled_mask.numel() != batch:
            raise ValueError(f"`labeled` must hold {batch} flags (one per sample), got {labeled_mask.numel()}.")
        indices = labeled_mask.nonzero().reshape(-1).tolist()
        if not indices or not self.enabled:
            return 0.5 * (prob_low + prob_high)
        if label is None or case_ids is None or crop_starts is None or views is None or case_shapes is None:
            raise ValueError("labeled samples need `label`, `case_ids`, `crop_starts`, `views` and `case_shapes`.")
        if tuple(label.shape) != (batch, 1, *spatial):
            raise ValueError(f"`label` must have shape {(batch, 1, *spatial)}, got {tuple(label.shape)}.")
        if len(case_ids) != batch:
            raise ValueError(f"`case_ids` must hold {batch} identifiers, got {len(case_ids)}.")
        ndim = len(spatial)
        starts = _as_int_rows(crop_starts, "crop_starts", batch, ndim)
        perms = _as_int_rows(views, "views", batch, ndim)
        shapes = _as_int_rows(case_shapes, "case_shapes", batch, ndim)

        # Samples are taken by Python integers (views, stacked): indexing a device tensor with a list
        # would copy the index to the device, a blocking copy that waits for the device.
        low, high = _take(prob_low, indices), _take(prob_high, indices)
        lab = _take(label, indices).long()
        if self.check_labels:
            out_of_range = (lab < 0) | (lab >= n_classes)
            if bool(out_of_range.any()):  # the one host-device synchronisation of fuse
                raise ValueError(
                    f"`label` of labeled samples must hold class indices in [0, {n_classes}), "
                    f"got values {sorted(set(lab[out_of_range].unique().tolist()))[:5]}."
                )
        with torch.no_grad():
            confidence = torch.stack([low.gather(1, lab), high.gather(1, lab)], dim=1)[:, :, 0]  # (L, 2, *spatial)

        shared = update and is_distributed()
        weights = []
        for row, i in enumerate(indices):
            case = str(case_ids[i])
            regions = self._regions(case, starts[i], perms[i], shapes[i], spatial, prob_low.device)
            weights.append(self._read(case, regions, perms[i]))
            if update and not shared:
                self._write(case, regions, perms[i], confidence[row])
        if shared:
            writes = [[str(case_ids[i]), starts[i], perms[i], shapes[i]] for i in indices]
            self._write_all_processes(writes, confidence, spatial)
        weight = torch.stack(weights).to(prob_low.dtype)  # (L, 2, *spatial)
        scaled = (1 + self.alpha * weight[:, :1]) * low + (1 + self.alpha * weight[:, 1:]) * high
        fused = torch.softmax(scaled, dim=1)
        if len(indices) == batch:
            return fused
        rows = {i: row for row, i in enumerate(indices)}
        return torch.stack(
            [fused[rows[i]] if i in rows else 0.5 * (prob_low[i] + prob_high[i]) for i in range(batch)]
        )

    def _write_all_processes(self, writes: List[list], confidence: torch.Tensor, spatial: Sequence[int]) -> None:
        """Gather the labeled confidences `confidence` `(L, 2, *patch)` of every process with their
        `writes` (``[case, crop start, view, case shape]`` per sample) and apply all, in rank order."""
        records = idist.all_gather(json.dumps(writes))  # one JSON list per process, in rank order
        per_process = [json.loads(r) for r in records]
        counts = [len(p) for p in per_process]
        if len(set(counts)) > 1:
            raise InvalidInputError(
                f"processes fused different numbers of labeled samples {counts} (by rank): every process must "
                "take the same share of each batch (TwoStreamBatchSampler with num_replicas and rank)."
            )
        gathered = [torch.empty_like(confidence) for _ in per_process]
        dist.all_gather(gathered, confidence.contiguous())
        for process, values in zip(per_process, gathered):
            for (case, start, perm, case_shape), value in zip(process, values):
                regions = self._regions(case, start, perm, case_shape, spatial, confidence.device)
                self._write(case, regions, perm, value)

    # ------------------------------------------------------------------ memory access
    def _regions(self, case: str, start: List[int], perm: List[int], case_shape: List[int], spatial, device):
        if sorted(perm) != list(range(len(spatial))):
            raise ValueError(f"`views` entry for case {case!r} must be a permutation of {list(range(len(spatial)))}, got {perm}.")
        crop_shape = [0] * len(spatial)
        for axis, source in enumerate(perm):  # patch axis `axis` is crop axis `source`
            crop_shape[source] = spatial[axis]
        if any(s < 0 or s + c > n for s, c, n in zip(start, crop_shape, case_shape)):
            raise ValueError(
                f"crop of case {case!r} at start {start} with size {crop_shape} does not fit in its case shape {case_shape}."
            )
        self._allocate(case, case_shape, device)
        return tuple(slice(s, s + c) for s, c in zip(start, crop_shape))

    def _allocate(self, case: str, case_shape: List[int], device) -> None:
        memory = self.memory.get(case)
        if memory is None:
            leading = (3, 2) if self.mode == "paper" else (2,)
            dtype = _DTYPES[self.dtype_name]
            initial = 128 if dtype == torch.uint8 else 0.5  # uint8: reads as 128 / 255 = 0.5 + 1 / 510
            self.memory[case] = torch.full((*leading, *case_shape), initial, dtype=dtype, device=device)
            if self.mode == "running":
                self.seen[case] = torch.zeros(case_shape, dtype=torch.bool, device=device)
            return
        if list(memory.shape[-len(case_shape):]) != list(case_shape):
            raise InvalidInputError(
                f"case {case!r} was first seen with shape {list(memory.shape[-len(case_shape):])}, now with {case_shape}."
            )
        if memory.device != torch.device(device):
            self.memory[case] = memory.to(device)
            if case in self.seen:
                self.seen[case] = self.seen[case].to(device)

    def _read(self, case: str, regions, perm: List[int]) -> torch.Tensor:
        """Memory weight `Cbar` of both branches in patch space, `(2, *patch)` float32."""
        memory = self.memory[case]
        if self.mode == "paper":
            previous = _decode(memory[_PREVIOUS][(slice(None), *regions)])
            crop = previous.add_(_decode(memory[_BEFORE_PREVIOUS][(slice(None), *regions)])).div_(2)
        else:  # _decode copies: the write that follows must not change the weights already read
            crop = _decode(memory[(slice(None), *regions)])
        return apply_view(crop, perm)

    def _write(self, case: str, regions, perm: List[int], confidence: torch.Tensor) -> None:
        """Store `confidence` `(2, *patch)` (patch space) at the crop of `case` (case space)."""
        crop = apply_view(confidence, perm, inverse=True)
        memory = self.memory[case]
        if self.mode == "paper":
            memory[_CURRENT][(slice(None), *regions)] = _encode(crop, memory.dtype)
            return
        seen = self.seen[case][regions]
        old = _decode(memory[(slice(None), *regions)])
        new = crop.float()
        # averaged in float32, rounded once when stored
        memory[(slice(None), *regions)] = _encode(torch.where(seen, (old + new) / 2, new), memory.dtype)
        self.seen[case][regions] = True

    # ------------------------------------------------------------------ state
    def state_dict(self) -> Dict[str, Any]:
        """The whole memory as tensors, numbers and strings (safe for ``weights_only`` loading); without
        the memory (``"memory_saved": False``, empty ``"memory"`` and ``"seen"``) when not `checkpoint_memory`."""
        keep = self.checkpoint_memory
        return {
            "mode": self.mode,
            "alpha": self.alpha,
            "dtype": self.dtype_name,
            "epoch": self.epoch,
            "memory_saved": keep,
            "enabled": self.enabled,
            "memory": {case: m.detach().cpu().clone() for case, m in self.memory.items()} if keep else {},
            "seen": {case: s.detach().cpu().clone() for case, s in self.seen.items()} if keep else {},
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a memory written by :meth:`state_dict`.

        A memory saved with another storage type (``dtype``) is converted to this handler's: decoded to
        float32 (uint8 codes divided by 255), then stored as this handler's type (uint8: rounded to
        the nearest code, so within 1 / 510 of the saved value; float16: within float16 rounding).
        The storage type of each saved tensor decides how it is decoded.

        Raises:
            KeyError: when an entry is missing.
            ValueError: when the saved mode differs from this handler's mode, or a saved memory is
                neither float nor uint8.
        """
        missing = [k for k in ("mode", "epoch", "memory", "seen") if k not in state_dict]
        if missing:
            raise UnknownKeyError(f"SARFusion state_dict is missing {missing}; expected keys mode, epoch, memory, seen.")
        if state_dict["mode"] != self.mode:
            raise InvalidInputError(f"SARFusion state_dict was saved in mode {state_dict['mode']!r}, this handler uses {self.mode!r}.")
        self.epoch = int(state_dict["epoch"])
        if "enabled" in state_dict and bool(state_dict["enabled"]) != self.enabled:
            logger.warning(
                "the checkpoint's SAR fusion was %s, this run's is %s (LA bundle: --sar): the resumed run does not "
                "continue the saved one",
                "on" if state_dict["enabled"] else "off",
                "on" if self.enabled else "off",
            )
        if not state_dict.get("memory_saved", True):
            logger.warning(
                "the checkpoint holds no SAR memory (saved with checkpoint_memory=False; LA bundle: checkpoint_sar_memory "
                "false): the memory starts afresh at 0.5 after %d epochs, so the resumed run is not an exact continuation "
                "of the saved one",
                self.epoch,
            )
        dtype = _DTYPES[self.dtype_name]
        memory = {}
        for case, saved in state_dict["memory"].items():
            memory[str(case)] = saved.clone() if saved.dtype == dtype else _encode(_decode(saved), dtype)
        converted = {str(m.dtype).replace("torch.", "") for m in state_dict["memory"].values()} - {self.dtype_name}
        if converted:
            logger.info("the SAR memory was saved as %s, converted to %s", sorted(converted), self.dtype_name)
        self.memory = memory
        self.seen = {str(case): s.to(torch.bool).clone() for case, s in state_dict["seen"].items()}
