"""SASNet training engine: MONAI's SupervisedTrainer with the semi-supervised SASNet iteration."""

from __future__ import annotations

import inspect
import math
from contextlib import nullcontext
from typing import Any, Callable, ContextManager, Dict, Iterable, Mapping, Optional, Union

import torch
import torch.distributed as dist
from ignite.engine import Events
from monai.engines import SupervisedTrainer
from monai.engines.trainer import Trainer
from monai.engines.utils import IterationEvents
from monai.utils.enums import CommonKeys as Keys
from torch.nn.parallel import DistributedDataParallel

from sasnet_components.handlers.sar_fusion import SARFusion
from sasnet_components.losses.plc import PLCLoss
from sasnet_components.losses.seg import SegLoss
from sasnet_components.losses.src import SRCLoss, ensemble_to_sdm
from sasnet_components.transforms.signed_distance import SDM_BACKENDS
from sasnet_components.utils.distributed import is_distributed
from sasnet_components.utils.errors import InvalidInputError, check_option

__all__ = ["SemiSupervisedTrainer", "sigmoid_rampup"]


def sigmoid_rampup(current: float, rampup_length: float) -> float:
    """Sigmoid ramp-up ``exp(-5 (1 - t / L)^2)`` of Laine & Aila, clipped to [0, 1]; 1 when ``L == 0``.

    Args:
        current: ramp-up time ``t`` (>= 0).
        rampup_length: ramp-up length ``L`` (>= 0).

    Returns:
        A weight in [exp(-5), 1] for ``t`` in [0, L], 1 afterwards.
    """
    if rampup_length == 0:
        return 1.0
    phase = 1.0 - min(max(float(current), 0.0), rampup_length) / rampup_length
    return float(math.exp(-5.0 * phase * phase))


_AMP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}
_COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


def _channels_last(network: torch.nn.Module) -> torch.memory_format:
    """The channels-last memory format for the rank of `network`'s convolution weights."""
    ranks = {p.ndim for p in network.parameters() if p.ndim in (4, 5)}
    if len(ranks) != 1:
        raise InvalidInputError(f"`channels_last` needs a 2D or 3D convolutional network, got weights of ranks {sorted(ranks)}.")
    return torch.channels_last_3d if ranks == {5} else torch.channels_last


def _broadcast_buffers(module: torch.nn.Module) -> None:
    """Give every process rank 0's buffers of `module` (batch-norm statistics): one broadcast per dtype."""
    by_dtype: Dict[torch.dtype, list] = {}
    for buffer in module.buffers():
        by_dtype.setdefault(buffer.dtype, []).append(buffer)
    for buffers in by_dtype.values():
        flat = torch.cat([b.reshape(-1) for b in buffers])
        dist.broadcast(flat, src=0)
        for buffer, values in zip(buffers, flat.split([b.numel() for b in buffers])):
            buffer.copy_(values.view_as(buffer))


def _compiled(network: torch.nn.Module, mode: Union[bool, str]) -> Callable:
    """`network` itself, or ``torch.compile(network, mode=...)`` for a compile mode (``True``: ``"default"``)."""
    if mode is False:
        return network
    mode = "default" if mode is True else check_option(mode, _COMPILE_MODES, "`compile`")
    return torch.compile(network, mode=mode)


class SemiSupervisedTrainer(SupervisedTrainer):
    """Trains SASNet on batches that mix labeled and unlabeled samples (paper section 3.4).

    Each iteration, for a batch of labeled and unlabeled patches from one loader (see
    ``TwoStreamBatchSampler``):

    1. the network (train mode) gives both decoders' logits and tanh regression maps;
    2. ``Seg``: :class:`SegLoss` on the labeled samples of both branches (Eq. 12-14);
    3. SAR fusion (:class:`SARFusion`, Eq. 4-8) gives the ensemble probability and writes the
       labeled confidences to the memory; one SDM of the ensemble per iteration (Eq. 16 target);
    4. ``PLC`` (Eq. 15) and ``SRC`` (Eq. 16) on all samples;
    5. ``loss = beta * Seg + gamma(t) * (PLC + SRC)`` with ``gamma(t) = consistency *
       sigmoid_rampup(iteration // rampup_interval, rampup_length)`` (reference: 1, 150, 40).

    Ablations (paper Tables 4-6): ``use_plc=False`` / ``use_src=False`` drop that term from the loss
    and do not compute it (without SRC no signed distance map is computed either); a SAR handler
    that is not ``enabled`` gives the plain mean of the branches; a network without a low-level
    decoder (``seg_low`` and ``reg_low`` ``None``) trains its high-level branch alone, its ensemble
    being that branch's probability (PLC and SAR need both branches). With both terms off and a
    batch of labeled samples only, the loss is ``beta * Seg`` (the supervised baseline; ``beta=1``
    gives the plain supervised loss).

    ``engine.state.output`` holds ``image``, ``label``, ``pred`` (the ensemble probability),
    ``loss``, ``loss_seg``, ``loss_plc``, ``loss_src`` (detached 0-dim tensors, on the device: read
    them with :func:`sasnet_components.utils.training_stats` only when logging, since reading a
    GPU value waits for the GPU) and ``gamma`` (a float), for ``StatsHandler`` /
    ``TensorBoardStatsHandler``; ``loss_plc`` / ``loss_src`` only when that term is used. MONAI's
    iteration events (``FORWARD_COMPLETED``, ``LOSS_COMPLETED``, ``BACKWARD_COMPLETED``,
    ``MODEL_COMPLETED``) are fired.

    Precision and speed options: with ``amp=True`` the forward pass and the losses run under
    ``torch.autocast`` in `amp_dtype`; ``"bfloat16"`` (GPUs that support it, and CPUs) needs no
    grad scaler, ``"float16"`` runs with ``torch.amp.GradScaler`` (on CUDA). The losses and the SAR fusion always take float32
    probabilities. ``channels_last`` keeps the network and its input in ``torch.channels_last_3d``
    memory format; ``compile`` trains through ``torch.compile(network, mode=...)`` (``"reduce-overhead"``
    also captures CUDA graphs); the network given stays the module that is saved and validated.
    Several processes (``distributed=True``, one process per GPU under ``torchrun``, see
    ``configs/multi_gpu_train.yaml`` of the bundles): the trainer wraps the network in
    ``DistributedDataParallel`` (after ``channels_last``, before ``compile``), which averages the
    gradients of the processes, so each step trains on the whole batch of all processes with the
    learning rate of a single process. Each process takes its share of every batch
    (``TwoStreamBatchSampler(num_replicas, rank)``), the SAR memory is shared (:class:`SARFusion`),
    and rank 0's buffers (batch-norm running statistics) are given to every process after each
    step, so that all processes hold the same network after every iteration. ``network`` stays the
    plain module: save and validate it. Unused parameters (the regression heads without SRC) are
    declared to DDP. What is not the single-process step: batch norm normalises each process's
    share with its own statistics (unless the network's batch norms are ``torch.nn.SyncBatchNorm``),
    the pooled Dice of ``SegLoss`` is pooled per process and averaged, and dropout masks come from
    each process's generators; the logged losses are rank 0's share.

    :attr:`stage_timer`, when set, wraps each stage of an iteration (``transfer``, ``forward``,
    ``seg``, ``sar``, ``sdm``, ``plc_src``, ``backward``, ``optimizer``) in the context manager it
    returns for the stage's name (``scripts/benchmark_training.py`` times them).

    Batch keys (all configurable): ``image`` `(B, C, *spatial)`, ``label`` `(B, 1, *spatial)`
    (placeholders for unlabeled samples, never read), ``labeled`` `(B,)` bool, ``case_id`` (B
    strings), ``crop_start``, ``view``, ``case_shape`` `(B, S)` int (see ``RandCropWithLocationd``
    and ``RandFourierRotated``).

    Args:
        device: device of the network and the batches.
        max_epochs: epochs to train; an epoch is one pass over the labeled cases.
        train_data_loader: loader of mixed batches.
        network: a ``DualBranchVNet`` (any network whose train-mode output has ``seg_low``,
            ``seg_high``, ``reg_low``, ``reg_high``).
        optimizer: optimizer of the network.
        sar_fusion: the :class:`SARFusion` handler (attached to this trainer here).
        seg_loss: supervised loss (default ``SegLoss("dice_ce")``).
        plc_loss: pseudo-label cross-supervision loss (default ``PLCLoss(0.1)``).
        src_loss: segmentation-regression consistency loss (default ``SRCLoss()``).
        beta: weight of ``Seg`` (paper: 0.5).
        consistency: final weight of ``PLC + SRC`` (paper: 1).
        rampup_length: ramp-up length in units of `rampup_interval` iterations (reference: 40).
        rampup_interval: iterations per ramp-up step (reference: 150).
        sdm_backend: backend of the signed distance map (one of ``SDM_BACKENDS``; ``"auto"``: SciPy
            on CPU, the torch transform on other devices).
        use_plc: compute the PLC term (``False``: no PLC, the ablation of Tables 4, 5).
        use_src: compute the SRC term and its signed distance map (``False``: no SRC and no SDM,
            Table 6 "w/o SDM").
        max_iterations: stop after this many iterations, also inside an epoch (then that last,
            partial epoch does not roll the SAR memory); at most ``max_epochs * epoch_length``.
        amp_dtype: autocast type when ``amp`` is on: ``"bfloat16"`` (no grad scaler) or ``"float16"``.
        channels_last: network weights and input in ``torch.channels_last_3d`` (``channels_last``
            for 2D) memory format.
        compile: ``False``, or train through ``torch.compile`` with this mode (``True`` / ``"default"``,
            ``"reduce-overhead"``, ``"max-autotune"``).
        distributed: train in the ``torch.distributed`` process group of this process (initialised
            before, e.g. by ``sasnet_components.utils.init_process_group`` under ``torchrun``), the
            network wrapped in ``DistributedDataParallel``.
        image_key, label_key, flag_key, id_key, location_key, view_key, shape_key: batch keys.
        kwargs: further arguments of ``monai.engines.SupervisedTrainer`` (``epoch_length``,
            ``train_handlers``, ``amp``, ``postprocessing``, ``key_train_metric`` ...).

    Raises:
        ValueError: a batch without labeled samples, or missing keys (named); ``use_plc`` or an
            enabled SAR handler with a network without a low-level decoder; ``distributed`` without
            a process group, or a process group of several processes without ``distributed``; a
            network already wrapped in ``DistributedDataParallel``.
    """

    def __init__(
        self,
        device: Union[str, torch.device],
        max_epochs: int,
        train_data_loader: Iterable,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        sar_fusion: SARFusion,
        seg_loss: Optional[Callable] = None,
        plc_loss: Optional[Callable] = None,
        src_loss: Optional[Callable] = None,
        beta: float = 0.5,
        consistency: float = 1.0,
        rampup_length: float = 40.0,
        rampup_interval: int = 150,
        sdm_backend: str = "auto",
        use_plc: bool = True,
        use_src: bool = True,
        max_iterations: Optional[int] = None,
        amp_dtype: str = "float16",
        channels_last: bool = False,
        compile: Union[bool, str] = False,
        distributed: bool = False,
        image_key: str = Keys.IMAGE,
        label_key: str = Keys.LABEL,
        flag_key: str = "labeled",
        id_key: str = "case_id",
        location_key: str = "crop_start",
        view_key: str = "view",
        shape_key: str = "case_shape",
        **kwargs: Any,
    ) -> None:
        seg_loss = SegLoss() if seg_loss is None else seg_loss
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=seg_loss,
            **kwargs,
        )
        if rampup_interval < 1:
            raise InvalidInputError(f"`rampup_interval` must be >= 1 iteration, got {rampup_interval}.")
        self.sar_fusion = sar_fusion
        self.plc_loss = PLCLoss() if plc_loss is None else plc_loss
        self.src_loss = SRCLoss() if src_loss is None else src_loss
        self.beta = float(beta)
        self.consistency = float(consistency)
        self.rampup_length = float(rampup_length)
        self.rampup_interval = int(rampup_interval)
        self.sdm_backend = check_option(sdm_backend, SDM_BACKENDS, "`sdm_backend`")
        for name, value in (("use_plc", use_plc), ("use_src", use_src)):
            if not isinstance(value, bool):
                raise InvalidInputError(f"`{name}` must be True or False, got {value!r}.")
        self.use_plc = use_plc
        self.use_src = use_src
        self.amp_dtype = _AMP_DTYPES[check_option(amp_dtype, tuple(_AMP_DTYPES), "`amp_dtype`")]
        if not isinstance(channels_last, bool):
            raise InvalidInputError(f"`channels_last` must be True or False, got {channels_last!r}.")
        self.memory_format = _channels_last(network) if channels_last else None
        if self.memory_format is not None:
            network.to(memory_format=self.memory_format)
        self.ddp = self._wrap_distributed(network, distributed, device, use_src)
        self.train_network = _compiled(network if self.ddp is None else self.ddp, compile)
        self.stage_timer: Optional[Callable[[str], ContextManager]] = None
        if getattr(network, "decoder_low", True) is None and (use_plc or getattr(sar_fusion, "enabled", True)):
            raise InvalidInputError(
                "PLC and SAR need both branches, the network has no low-level decoder: pass use_plc=False and a "
                "SARFusion with enabled=False (LA bundle: with `--low_level_branch false` also pass `--plc false --sar false`)."
            )
        self.keys = {
            "image": image_key,
            "label": label_key,
            "flag": flag_key,
            "id": id_key,
            "location": location_key,
            "view": view_key,
            "shape": shape_key,
        }
        self.max_iterations = max_iterations
        if max_iterations is not None:
            available = max_epochs * (self.state.epoch_length or 0)
            if not 1 <= max_iterations <= available:
                raise InvalidInputError(
                    f"`max_iterations` must be in [1, max_epochs * epoch_length = {available}], got {max_iterations}."
                )
            if max_iterations < available:  # stop inside the last epoch; otherwise it ends normally
                self.add_event_handler(Events.ITERATION_COMPLETED(once=int(max_iterations)), lambda engine: engine.terminate())
        sar_fusion.attach(self)
        self.add_event_handler(Events.EPOCH_STARTED, self._set_sampler_epoch)

    @staticmethod
    def _wrap_distributed(
        network: torch.nn.Module, distributed: bool, device: Union[str, torch.device], use_src: bool
    ) -> Optional[DistributedDataParallel]:
        """`network` in ``DistributedDataParallel`` when `distributed`, else None (after the checks)."""
        if isinstance(network, DistributedDataParallel):
            raise InvalidInputError(
                "pass the network itself with `distributed=True`: the trainer wraps it in DistributedDataParallel "
                "(after channels_last, before compile) and saves and validates the plain network."
            )
        if not isinstance(distributed, bool):
            raise InvalidInputError(f"`distributed` must be True or False, got {distributed!r}.")
        if not distributed:
            if is_distributed():
                raise InvalidInputError(
                    f"this process is one of {dist.get_world_size()} of a process group but the trainer is not "
                    "`distributed`: each process would train a model of its own; pass distributed=True "
                    "(configs/multi_gpu_train.yaml of the bundles sets it)."
                )
            return None
        if not (dist.is_available() and dist.is_initialized()):
            raise InvalidInputError(
                "`distributed=True` needs the torch.distributed process group of this process: start the processes "
                "with torchrun and layer configs/multi_gpu_train.yaml (it initialises the group)."
            )
        device = torch.device(device)
        # no buffer sync before each forward: rank 0's buffers are given to every process after each step instead
        # (torch >= 2.13 names it `forward_sync_buffers`, `broadcast_buffers` before)
        parameters = inspect.signature(DistributedDataParallel.__init__).parameters
        no_forward_sync = {"forward_sync_buffers" if "forward_sync_buffers" in parameters else "broadcast_buffers": False}
        return DistributedDataParallel(
            network,
            device_ids=[device] if device.type == "cuda" else None,
            find_unused_parameters=not use_src,  # the regression heads take no gradient without SRC
            **no_forward_sync,
        )

    def run(self) -> None:  # type: ignore[override]
        """Train (continuing from the current state). MONAI's grad scaler only for float16 autocast on CUDA:
        bfloat16 has float32's range and needs no loss scaling."""
        scaled = self.amp and self.amp_dtype == torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=torch.device(self.state.device).type == "cuda") if scaled else None
        super(Trainer, self).run()  # MONAI's Workflow.run: Trainer.run would make its own scaler

    @staticmethod
    def _set_sampler_epoch(engine: "SemiSupervisedTrainer") -> None:
        """Keep a batch sampler with ``set_epoch`` in step with the engine, also when a run resumes
        inside an epoch (then the batches of that epoch already done are skipped)."""
        sampler = getattr(engine.data_loader, "batch_sampler", None)
        if not hasattr(sampler, "set_epoch"):
            return
        done = engine.state.iteration % engine.state.epoch_length if engine.state.epoch_length else 0
        if not done:
            sampler.set_epoch(engine.state.epoch - 1)
            return
        if "start" not in inspect.signature(sampler.set_epoch).parameters:
            raise TypeError(
                f"resuming inside an epoch (iteration {engine.state.iteration}, {done} of {engine.state.epoch_length} "
                f"batches done) needs a batch sampler whose set_epoch takes `start` (TwoStreamBatchSampler), "
                f"got {type(sampler).__name__}."
            )
        sampler.set_epoch(engine.state.epoch - 1, start=done)

    def state_dict(self) -> Dict[str, Any]:
        """Ignite's engine state (iteration, epoch length, ...) plus the AMP grad scaler's state when it is enabled."""
        state = super().state_dict()
        if self.scaler is not None and self.scaler.is_enabled():
            state["grad_scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` of a run with the same epoch length.

        Raises:
            ValueError: the saved epoch length differs from this trainer's (another number of labeled
                cases or labeled batch size: the run would not continue the saved one).
        """
        state = dict(state_dict)
        scaler = state.pop("grad_scaler", None)
        saved, mine = state.get("epoch_length"), self.state.epoch_length
        if saved is not None and mine is not None and int(saved) != int(mine):
            raise InvalidInputError(
                f"the checkpoint was written with {saved} iterations per epoch, this run has {mine} "
                "(labeled cases // labeled batch size): resume with the num_labeled and labeled_batch_size of the saved run."
            )
        super().load_state_dict(state)
        if scaler is not None and self.scaler is not None and self.scaler.is_enabled():
            self.scaler.load_state_dict(scaler)

    def gamma(self, iteration: int) -> float:
        """Consistency weight at `iteration` (1-based): ``consistency * sigmoid_rampup(iteration // interval, L)``."""
        return self.consistency * sigmoid_rampup(iteration // self.rampup_interval, self.rampup_length)

    def _stage(self, name: str) -> ContextManager:
        """The :attr:`stage_timer`'s context for stage `name`, or a no-op."""
        return nullcontext() if self.stage_timer is None else self.stage_timer(name)

    def _iteration(self, engine: "SemiSupervisedTrainer", batchdata: Dict[str, Any]) -> Dict[str, Any]:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        k = engine.keys
        missing = [key for key in k.values() if key not in batchdata]
        if missing:
            raise ValueError(f"the training batch lacks keys {missing}; it has {sorted(map(str, batchdata))}.")
        device, non_blocking = engine.state.device, engine.non_blocking
        with engine._stage("transfer"):
            inputs = batchdata[k["image"]].to(device=device, non_blocking=non_blocking)
            if engine.memory_format is not None:
                inputs = inputs.contiguous(memory_format=engine.memory_format)
            targets = batchdata[k["label"]].to(device=device, non_blocking=non_blocking)
        labeled = torch.as_tensor(batchdata[k["flag"]], dtype=torch.bool).reshape(-1).cpu()
        num_labeled = int(labeled.sum())
        if not num_labeled:
            raise ValueError("a training batch has no labeled sample; use TwoStreamBatchSampler with labeled_batch_size >= 1.")
        # the labeled samples: a slice when they come first (TwoStreamBatchSampler), no index copy to the device
        lab_idx = slice(0, num_labeled) if bool(labeled[:num_labeled].all()) else labeled.nonzero().reshape(-1).to(device)
        engine.state.output = {Keys.IMAGE: inputs, Keys.LABEL: targets}

        def _compute_pred_loss() -> None:
            with engine._stage("forward"):
                out = engine.train_network(inputs)
            engine.state.output[Keys.PRED] = out
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            one_branch = out.seg_low is None
            with engine._stage("seg"):
                seg_low = None if one_branch else out.seg_low.float()
                prob_high = torch.softmax(out.seg_high.float(), dim=1)
                prob_low = None if seg_low is None else torch.softmax(seg_low, dim=1)
                loss_seg = engine.loss_function(
                    None if seg_low is None else seg_low[lab_idx], out.seg_high.float()[lab_idx], targets[lab_idx]
                )
            with engine._stage("sar"):
                if prob_low is None:  # one branch: its own probability is the ensemble
                    ensemble = prob_high
                else:
                    ensemble = engine.sar_fusion.fuse(
                        prob_low,
                        prob_high,
                        labeled=labeled,
                        label=targets,
                        case_ids=batchdata[k["id"]],
                        crop_starts=batchdata[k["location"]],
                        views=batchdata[k["view"]],
                        case_shapes=batchdata[k["shape"]],
                    )
            sdm = None
            if engine.use_src:
                with engine._stage("sdm"):
                    sdm = ensemble_to_sdm(ensemble.detach(), backend=engine.sdm_backend)  # once per iteration
            terms = {}
            with engine._stage("plc_src"):
                if engine.use_plc:
                    terms["loss_plc"] = engine.plc_loss(prob_low, prob_high)
                if sdm is not None:
                    reg_low = None if out.reg_low is None else out.reg_low.float()
                    terms["loss_src"] = engine.src_loss(reg_low, out.reg_high.float(), sdm)
                gamma = engine.gamma(engine.state.iteration)
                loss = engine.beta * loss_seg
                if terms:
                    loss = loss + gamma * sum(terms.values())
            engine.state.output[Keys.PRED] = ensemble.detach()
            engine.state.output[Keys.LOSS] = loss
            # detached tensors, read on the host only when logged (no wait for the device here)
            engine.state.output.update(
                loss_seg=loss_seg.detach(), **{name: t.detach() for name, t in terms.items()}, gamma=gamma
            )
            engine.fire_event(IterationEvents.LOSS_COMPLETED)

        engine.train_network.train()  # the network, inside its DDP / compiled wrappers
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        autocast = (
            torch.autocast(device_type=torch.device(device).type, **{**engine.amp_kwargs, "dtype": engine.amp_dtype})
            if engine.amp
            else nullcontext()
        )
        with autocast:
            _compute_pred_loss()
        loss = engine.state.output[Keys.LOSS]
        scaler = engine.scaler if engine.amp else None
        with engine._stage("backward"):
            (loss if scaler is None else scaler.scale(loss)).backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        with engine._stage("optimizer"):
            if scaler is None:
                engine.optimizer.step()
            else:
                scaler.step(engine.optimizer)
                scaler.update()
            if engine.ddp is not None and is_distributed():
                _broadcast_buffers(engine.network)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
