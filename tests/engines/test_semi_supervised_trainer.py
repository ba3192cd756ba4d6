"""Tests of the SASNet training engine: the ramp-up and full iterations of ``SemiSupervisedTrainer``.

The end-to-end tests train a tiny ``DualBranchVNet(n_filters=2)`` on CPU with batches of 4 patches
of 16^3 voxels: 2 labeled (cases "a", "b", a foreground cube) and 2 unlabeled ("u1", "u2").
"""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from ignite.engine import Events
from monai.engines.utils import IterationEvents
from torch.utils.data import DataLoader

from sasnet_components.data.samplers import TwoStreamBatchSampler
from sasnet_components.engines.semi_supervised_trainer import SemiSupervisedTrainer, sigmoid_rampup
from sasnet_components.handlers.sar_fusion import SARFusion
from sasnet_components.losses.plc import PLCLoss
from sasnet_components.losses.seg import SegLoss
from sasnet_components.losses.src import SRCLoss, ensemble_to_sdm
from sasnet_components.networks.dual_branch_vnet import DualBranchVNet

SIZE = 16


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny convolutions run fastest on one thread (and do not stall when other work shares the CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------- sigmoid_rampup
@pytest.mark.parametrize(
    "t, length, expected",
    [
        (0, 40, math.exp(-5.0)),  # phase 1: exp(-5 * 1^2)
        (20, 40, math.exp(-1.25)),  # phase 1/2: exp(-5 / 4)
        (10, 40, math.exp(-2.8125)),  # phase 3/4: exp(-5 * 9 / 16)
        (40, 40, 1.0),
        (100, 40, 1.0),  # clipped after the ramp-up
        (-3, 40, math.exp(-5.0)),  # clipped before it
        (0, 0, 1.0),  # no ramp-up
        (7, 0, 1.0),
    ],
)
def test_sigmoid_rampup(t, length, expected):
    assert sigmoid_rampup(t, length) == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------------- helpers
def _batch(seed: int, unlabeled_label: int = 0, labeled=(True, True, False, False)) -> dict:
    g = torch.Generator().manual_seed(seed)
    label = torch.zeros(4, 1, SIZE, SIZE, SIZE, dtype=torch.uint8)
    label[:, :, 4:12, 4:12, 4:12] = 1  # an 8^3 foreground cube
    image = torch.rand(4, 1, SIZE, SIZE, SIZE, generator=g) + label.float()  # brighter cube
    for i, flag in enumerate(labeled):
        if not flag:
            label[i] = unlabeled_label
    return {
        "image": image,
        "label": label,
        "labeled": torch.tensor(labeled),
        "case_id": ["a", "b", "u1", "u2"],
        "crop_start": torch.zeros(4, 3, dtype=torch.long),
        "view": torch.tensor([[0, 1, 2]] * 4),
        "case_shape": torch.full((4, 3), SIZE, dtype=torch.long),
    }


def _trainer(loader, max_epochs: int = 2, epoch_length=2, **kwargs):
    torch.manual_seed(0)
    net = DualBranchVNet(n_filters=2)
    sar = SARFusion()
    args = dict(
        device="cpu",
        max_epochs=max_epochs,
        train_data_loader=loader,
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9),
        sar_fusion=sar,
        rampup_interval=1,
        rampup_length=4,
        epoch_length=epoch_length,
        decollate=False,
    )
    args.update(kwargs)
    return SemiSupervisedTrainer(**args)


def _record(trainer) -> list:
    outputs = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(dict(e.state.output)))
    return outputs


# ---------------------------------------------------------------------- end to end
def test_two_epochs_outputs_losses_and_memory():
    trainer = _trainer([_batch(0), _batch(1)], beta=0.5, consistency=0.5)
    before = {k: v.clone() for k, v in trainer.network.state_dict().items()}
    counts = Counter()
    for event in ("FORWARD_COMPLETED", "LOSS_COMPLETED", "BACKWARD_COMPLETED", "MODEL_COMPLETED"):
        trainer.add_event_handler(getattr(IterationEvents, event), lambda e, name=event: counts.update([name]))
    outputs = _record(trainer)
    trainer.run()

    assert trainer.state.iteration == 4 and trainer.state.epoch == 2
    # each iteration event fired once per iteration
    assert counts == {name: 4 for name in ("FORWARD_COMPLETED", "LOSS_COMPLETED", "BACKWARD_COMPLETED", "MODEL_COMPLETED")}
    for out in outputs:
        assert {"image", "label", "pred", "loss", "loss_seg", "loss_plc", "loss_src", "gamma"} <= set(out)
        # loss terms stay detached 0-dim tensors on the device (read when logged), gamma is a float
        for key in ("loss_seg", "loss_plc", "loss_src"):
            assert out[key].shape == () and not out[key].requires_grad and math.isfinite(float(out[key]))
        assert isinstance(out["gamma"], float)
        assert tuple(out["pred"].shape) == (4, 2, SIZE, SIZE, SIZE)
    # gamma(i) = 0.5 * exp(-5 (1 - i/4)^2) for iterations i = 1..4 (interval 1, length 4):
    # 0.5 * exp(-2.8125), 0.5 * exp(-1.25), 0.5 * exp(-0.3125), 0.5
    expected = [0.5 * math.exp(-2.8125), 0.5 * math.exp(-1.25), 0.5 * math.exp(-0.3125), 0.5]
    assert [out["gamma"] for out in outputs] == pytest.approx(expected, rel=1e-12)
    assert [out["gamma"] for out in outputs] == [0.5 * sigmoid_rampup(i, 4) for i in range(1, 5)]
    last = trainer.state.output
    assert float(last["loss"]) == pytest.approx(
        0.5 * float(last["loss_seg"]) + last["gamma"] * (float(last["loss_plc"]) + float(last["loss_src"])), abs=1e-5
    )
    # the network was trained
    after = trainer.network.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if after[k].is_floating_point())
    # the SAR memory holds the labeled cases only, and rolled once per epoch
    assert sorted(trainer.sar_fusion.memory) == ["a", "b"]
    assert tuple(trainer.sar_fusion.memory["a"].shape) == (3, 2, SIZE, SIZE, SIZE)
    assert trainer.sar_fusion.epoch == 2


def test_unlabeled_placeholder_labels_are_never_read():
    # 255 is no class index: any read of the unlabeled samples' labels by the losses or the memory would fail
    trainer = _trainer([_batch(0, unlabeled_label=255), _batch(1, unlabeled_label=255)], max_epochs=1)
    outputs = _record(trainer)
    trainer.run()
    assert trainer.state.iteration == 2
    assert all(math.isfinite(float(out["loss"])) for out in outputs)
    assert sorted(trainer.sar_fusion.memory) == ["a", "b"]


def test_same_losses_whatever_the_placeholder():
    runs = []
    for placeholder in (0, 255):
        trainer = _trainer([_batch(0, unlabeled_label=placeholder)], max_epochs=1, epoch_length=1)
        trainer.run()
        runs.append(float(trainer.state.output["loss"]))
    assert runs[0] == runs[1]


def test_batch_without_labeled_sample():
    trainer = _trainer([_batch(0, labeled=(False, False, False, False))], max_epochs=1, epoch_length=1)
    with pytest.raises(ValueError, match="a training batch has no labeled sample"):
        trainer.run()


def test_batch_missing_crop_start():
    batch = _batch(0)
    del batch["crop_start"]
    trainer = _trainer([batch], max_epochs=1, epoch_length=1)
    with pytest.raises(ValueError, match=r"the training batch lacks keys \['crop_start'\]"):
        trainer.run()


def test_max_iterations_stops_inside_an_epoch():
    trainer = _trainer([_batch(0), _batch(1)], max_epochs=2, max_iterations=3)
    outputs = _record(trainer)
    trainer.run()
    assert trainer.state.iteration == 3 and len(outputs) == 3


def test_max_iterations_equal_to_all_iterations_runs_every_epoch():
    trainer = _trainer([_batch(0), _batch(1)], max_epochs=2, max_iterations=4)
    trainer.run()
    assert trainer.state.iteration == 4 and trainer.sar_fusion.epoch == 2


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(max_iterations=0), r"`max_iterations` must be in \[1, max_epochs \* epoch_length = 2\], got 0"),
        (dict(max_iterations=3), r"`max_iterations` must be in \[1, max_epochs \* epoch_length = 2\], got 3"),
        (dict(rampup_interval=0), "`rampup_interval` must be >= 1 iteration, got 0"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _trainer([_batch(0), _batch(1)], max_epochs=1, **kwargs)  # 2 iterations available


def test_decollated_output_still_carries_the_losses():
    from sasnet_components.utils.bundle import training_stats

    trainer = _trainer([_batch(0)], max_epochs=1, epoch_length=1, decollate=True)
    trainer.run()
    stats = training_stats(trainer.state.output)
    assert set(stats) == {"loss", "loss_seg", "loss_plc", "loss_src", "gamma"}
    assert stats["gamma"] == pytest.approx(math.exp(-5 * (1 - 1 / 4) ** 2))


# ---------------------------------------------------------------------- with TwoStreamBatchSampler
def _dataset():
    """6 samples: labeled a, b, c, d and unlabeled u1, u2 (the dataset index is the image value)."""
    items = []
    for index, case in enumerate(["a", "b", "c", "d", "u1", "u2"]):
        labeled = index < 4
        label = torch.zeros(1, SIZE, SIZE, SIZE, dtype=torch.uint8)
        if labeled:
            label[:, 4:12, 4:12, 4:12] = 1
        items.append(
            {
                "image": torch.full((1, SIZE, SIZE, SIZE), float(index)),
                "label": label,
                "labeled": torch.tensor(labeled),
                "case_id": case,
                "crop_start": torch.zeros(3, dtype=torch.long),
                "view": torch.tensor([0, 1, 2]),
                "case_shape": torch.full((3,), SIZE, dtype=torch.long),
            }
        )
    return items


def _seen_indices(trainer) -> list:
    seen = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.output["image"][:, 0, 0, 0, 0].long().tolist())
    )
    return seen


def test_sampler_epochs_follow_the_engine_also_when_resuming():
    def loader():
        return DataLoader(_dataset(), batch_sampler=TwoStreamBatchSampler([0, 1, 2, 3], [4, 5], 4, 2, seed=11))

    reference = TwoStreamBatchSampler([0, 1, 2, 3], [4, 5], 4, 2, seed=11)
    expected = [list(reference) for _ in range(3)]  # epochs 0, 1, 2: 2 batches each

    trainer = _trainer(loader(), max_epochs=3, epoch_length=None)
    seen = _seen_indices(trainer)
    trainer.run()
    assert seen == expected[0] + expected[1] + expected[2]

    # resume after epoch 1 (as CheckpointLoader restores the trainer state) with a fresh sampler
    resumed = _trainer(loader(), max_epochs=3, epoch_length=None)
    resumed.load_state_dict({"iteration": 2, "epoch_length": 2, "max_epochs": 3})
    seen = _seen_indices(resumed)
    resumed.run()
    assert seen == expected[1] + expected[2]

    # resume inside epoch 1, after its first batch: its second batch comes next, not its first
    resumed = _trainer(loader(), max_epochs=3, epoch_length=None)
    resumed.load_state_dict({"iteration": 3, "epoch_length": 2, "max_epochs": 3})
    seen = _seen_indices(resumed)
    resumed.run()
    assert seen == expected[1][1:] + expected[2]


def test_resume_inside_an_epoch_needs_a_sampler_that_can_start_there():
    trainer = _trainer(DataLoader(_dataset(), batch_size=2), max_epochs=2, epoch_length=None)
    trainer.load_state_dict({"iteration": 1, "epoch_length": 3, "max_epochs": 2})  # no set_epoch: nothing to skip
    trainer.data_loader.batch_sampler.set_epoch = lambda epoch: None  # a sampler with set_epoch(epoch) only
    with pytest.raises(TypeError, match=r"resuming inside an epoch \(iteration 1, 1 of 3 batches done\)"):
        trainer.run()


def test_checkpoint_of_another_epoch_length_is_refused():
    trainer = _trainer([_batch(0), _batch(1)], max_epochs=2, epoch_length=2)
    with pytest.raises(ValueError, match=r"written with 4 iterations per epoch, this run has 2"):
        trainer.load_state_dict({"iteration": 4, "epoch_length": 4, "max_epochs": 2})


def test_grad_scaler_state_round_trips():
    trainer = _trainer([_batch(0)], max_epochs=1, epoch_length=1)
    assert "grad_scaler" not in trainer.state_dict()  # no AMP: nothing to save
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    trainer.scaler.scale(torch.ones(()))  # the scale exists once used
    trainer.scaler.update(512.0)
    state = trainer.state_dict()
    assert state["grad_scaler"]["scale"] == 512.0
    resumed = _trainer([_batch(0)], max_epochs=1, epoch_length=1)
    resumed.scaler = torch.amp.GradScaler("cpu")
    resumed.load_state_dict(state)
    assert resumed.scaler.get_scale() == 512.0 and resumed.state.iteration == 0


@pytest.mark.parametrize("amp_dtype", ["bfloat16", "float16"])
def test_amp_iteration_runs_in_the_autocast_type(amp_dtype):
    # the network runs in amp_dtype (autocast works on CPU too); bfloat16 has no grad scaler, float16 MONAI's
    # (which disables itself without CUDA); the losses take float32 probabilities
    trainer = _trainer([_batch(0), _batch(1)], max_epochs=1, amp=True, amp_dtype=amp_dtype)
    before = [p.detach().clone() for p in trainer.network.parameters()]
    forward, outputs = _forward_record(trainer), _record(trainer)
    trainer.run()
    assert (trainer.scaler is None) == (amp_dtype == "bfloat16")
    assert all(t.dtype == getattr(torch, amp_dtype) for t in forward[0])
    assert len(outputs) == 2 and all(o["loss"].dtype == torch.float32 and torch.isfinite(o["loss"]) for o in outputs)
    assert any(not torch.equal(b, p) for b, p in zip(before, trainer.network.parameters()))
    assert "grad_scaler" not in trainer.state_dict()  # none, or disabled without CUDA


def test_bfloat16_loss_is_the_float32_loss_within_its_precision():
    # same weights, same batch, same dropout draws: bfloat16 keeps 8 bits of mantissa (relative error ~ 2^-8
    # per operation), so the first loss agrees with float32's to a few per cent, not to float32's precision
    losses = {}
    for amp in (False, True):
        trainer = _trainer([_batch(0)], max_epochs=1, epoch_length=1, amp=amp, amp_dtype="bfloat16")
        outputs = _record(trainer)
        torch.manual_seed(3)
        trainer.run()
        losses[amp] = float(outputs[0]["loss"])
    assert losses[True] == pytest.approx(losses[False], rel=0.05) and losses[True] != losses[False]


def test_channels_last_gives_the_same_training_within_float_tolerance():
    # One iteration without dropout and without SRC. Dropout masks are drawn in memory order, so a
    # channels-last network drops other voxels than a contiguous one (the same distribution, not the same
    # draws); SRC's target thresholds the ensemble at 0.5, so a rounding difference can flip a voxel of it.
    # Both are legitimate differences of a run, not of the arithmetic this test checks.
    weights = {}
    for channels_last in (False, True):
        torch.manual_seed(0)
        net = DualBranchVNet(n_filters=2, dropout=0.0)
        optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        trainer = _trainer(
            [_batch(0)], 1, 1, channels_last=channels_last, network=net, optimizer=optimizer, use_src=False
        )
        torch.manual_seed(3)
        trainer.run()
        weights[channels_last] = [p.detach() for p in trainer.network.parameters()]
        if channels_last:
            conv = next(p for p in trainer.network.parameters() if p.ndim == 5 and p.shape[1] > 1)
            assert conv.is_contiguous(memory_format=torch.channels_last_3d)
    for a, b in zip(weights[False], weights[True]):
        assert (a - b).abs().max() <= 1e-5, (a - b).abs().max()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"amp_dtype": "float64"}, "amp_dtype"),
        ({"channels_last": "yes"}, "channels_last"),
        ({"compile": "fastest"}, "compile"),
        ({"sdm_backend": "cuda"}, "sdm_backend"),
    ],
)
def test_speed_options_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _trainer([_batch(0)], **kwargs)


# ---------------------------------------------------------------------- ablations
def _forward_record(trainer) -> list:
    """The network's train-mode output of every iteration, before the update."""
    outputs = []

    def keep(engine):
        out = engine.state.output["pred"]
        outputs.append([None if t is None else t.detach().clone() for t in out])

    trainer.add_event_handler(IterationEvents.FORWARD_COMPLETED, keep)
    return outputs


def _plain_mean(low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    return 0.5 * (torch.softmax(low, dim=1) + torch.softmax(high, dim=1))


def test_without_plc_the_term_is_absent_and_the_loss_is_seg_and_src():
    batch = _batch(0)
    trainer = _trainer([batch], max_epochs=1, epoch_length=1, sar_fusion=SARFusion(enabled=False), use_plc=False, beta=0.5)
    forward, outputs = _forward_record(trainer), _record(trainer)
    trainer.run()
    out, (seg_low, seg_high, reg_low, reg_high) = outputs[0], forward[0]
    assert "loss_plc" not in out and {"loss_seg", "loss_src", "gamma"} <= set(out)
    seg = SegLoss()(seg_low[:2], seg_high[:2], batch["label"][:2])
    src = SRCLoss()(reg_low, reg_high, ensemble_to_sdm(_plain_mean(seg_low, seg_high)))
    gamma = sigmoid_rampup(1, 4)  # iteration 1, interval 1, length 4, consistency 1
    assert float(out["loss_seg"]) == pytest.approx(seg.item(), rel=1e-6)
    assert float(out["loss_src"]) == pytest.approx(src.item(), rel=1e-6)
    assert out["loss"].item() == pytest.approx(0.5 * seg.item() + gamma * src.item(), rel=1e-6)
    assert torch.allclose(out["pred"], _plain_mean(seg_low, seg_high))  # SAR off: the plain mean
    assert trainer.sar_fusion.memory == {}


def test_without_src_no_distance_map_is_computed(monkeypatch):
    import sasnet_components.engines.semi_supervised_trainer as module

    def refuse(*args, **kwargs):
        raise AssertionError("a signed distance map was computed")

    monkeypatch.setattr(module, "ensemble_to_sdm", refuse)
    batch = _batch(0)
    trainer = _trainer([batch], max_epochs=1, epoch_length=1, use_src=False, beta=0.5)
    forward, outputs = _forward_record(trainer), _record(trainer)
    trainer.run()
    out, (seg_low, seg_high, _, _) = outputs[0], forward[0]
    assert "loss_src" not in out and "loss_plc" in out
    seg = SegLoss()(seg_low[:2], seg_high[:2], batch["label"][:2])
    plc = PLCLoss()(torch.softmax(seg_low, dim=1), torch.softmax(seg_high, dim=1))
    assert out["loss"].item() == pytest.approx(0.5 * seg.item() + sigmoid_rampup(1, 4) * plc.item(), rel=1e-6)
    from sasnet_components.utils.bundle import training_stats

    assert set(training_stats(out)) == {"loss", "loss_seg", "loss_plc", "gamma"}


def test_supervised_only_loss_is_beta_times_seg():
    labeled_only = {k: v[:2] for k, v in _batch(0, labeled=(True, True, False, False)).items()}
    trainer = _trainer(
        [labeled_only], max_epochs=1, epoch_length=1, sar_fusion=SARFusion(enabled=False), use_plc=False, use_src=False, beta=1.0
    )
    forward, outputs = _forward_record(trainer), _record(trainer)
    trainer.run()
    out, (seg_low, seg_high, _, _) = outputs[0], forward[0]
    assert not {"loss_plc", "loss_src"} & set(out)
    assert out["loss"].item() == pytest.approx(SegLoss()(seg_low, seg_high, labeled_only["label"]).item(), rel=1e-6)


def test_one_branch_trains_its_high_level_decoder_alone():
    batch = _batch(0)
    torch.manual_seed(0)
    net = DualBranchVNet(n_filters=2, low_level_branch=False)
    trainer = _trainer([batch], max_epochs=1, epoch_length=1, network=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.01),
                       sar_fusion=SARFusion(enabled=False), use_plc=False, beta=0.5)
    forward, outputs = _forward_record(trainer), _record(trainer)
    trainer.run()
    out, (seg_low, seg_high, reg_low, reg_high) = outputs[0], forward[0]
    assert seg_low is None and reg_low is None
    prob_high = torch.softmax(seg_high, dim=1)
    assert torch.equal(out["pred"], prob_high)  # the ensemble of one branch
    seg = SegLoss()(None, seg_high[:2], batch["label"][:2])
    src = SRCLoss()(None, reg_high, ensemble_to_sdm(prob_high))
    assert out["loss"].item() == pytest.approx(0.5 * seg.item() + sigmoid_rampup(1, 4) * src.item(), rel=1e-6)


@pytest.mark.parametrize("kwargs", [{"use_plc": False}, {"sar_fusion": SARFusion(enabled=False)}])
def test_one_branch_refuses_plc_and_sar(kwargs):
    net = DualBranchVNet(n_filters=2, low_level_branch=False)
    with pytest.raises(ValueError, match=r"PLC and SAR need both branches"):
        _trainer([_batch(0)], network=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.01), **kwargs)


def test_switches_must_be_bools():
    with pytest.raises(ValueError, match=r"`use_src` must be True or False, got 'false'"):
        _trainer([_batch(0)], use_src="false")
