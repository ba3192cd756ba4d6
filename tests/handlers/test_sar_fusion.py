from __future__ import annotations

import io
import math

import pytest
import torch
from ignite.engine import Engine

from sasnet_components.handlers.sar_fusion import SARFusion

# A case of 4 voxels, shape (1, 2, 2): v0 = (0,0,0), v1 = (0,0,1), v2 = (0,1,0), v3 = (0,1,1).
CASE_SHAPE = [1, 2, 2]
LABEL = torch.tensor([0, 1, 1, 0]).reshape(1, 1, 1, 2, 2)
IDENTITY = [0, 1, 2]


def _probs(foreground):
    """Two-class probabilities `(1, 2, *shape)` from foreground probabilities."""
    fg = torch.tensor(foreground, dtype=torch.float32)
    return torch.stack([1 - fg, fg]).unsqueeze(0)


def _fg_fused(p_low, p_high, c_low, c_high, alpha=0.5):
    """Foreground of softmax((1 + a*c_low) * P_low + (1 + a*c_high) * P_high) for one voxel, by hand."""
    w_low, w_high = 1 + alpha * c_low, 1 + alpha * c_high
    background = w_low * (1 - p_low) + w_high * (1 - p_high)
    foreground = w_low * p_low + w_high * p_high
    return 1 / (1 + math.exp(background - foreground))


def _fuse(sar, low, high, label=LABEL, start=(0, 0, 0), view=IDENTITY, case="a"):
    return sar.fuse(
        low, high, labeled=[True], label=label, case_ids=[case], crop_starts=[list(start)], views=[view], case_shapes=[CASE_SHAPE]
    )


LOW_1, HIGH_1 = [0.2, 0.6, 0.9, 0.5], [0.4, 0.8, 0.3, 0.1]
# confidences = probability of the true class (labels 0, 1, 1, 0)
C1_LOW, C1_HIGH = [0.8, 0.6, 0.9, 0.5], [0.6, 0.8, 0.3, 0.9]


def test_paper_mode_two_and_three_epochs():
    sar = SARFusion(alpha=0.5, mode="paper", dtype="float32")

    # epoch 1: memory is 0.5 everywhere, so both weights are 1 + 0.5 * 0.5 = 1.25
    fused = _fuse(sar, _probs(LOW_1).reshape(1, 2, 1, 2, 2), _probs(HIGH_1).reshape(1, 2, 1, 2, 2))
    expected = [_fg_fused(l, h, 0.5, 0.5) for l, h in zip(LOW_1, HIGH_1)]
    assert fused[0, 1].flatten().tolist() == pytest.approx(expected, abs=1e-6)
    assert expected[0] == pytest.approx(1 / (1 + math.exp(1.0)))  # v0: 1.25 * (1.4 - 0.6) = 1
    sar.epoch_completed()

    # epoch 2: only v2, v3 are covered (crop (1, 1, 2) at (0, 1, 0)); Cbar = (C1 + 0.5) / 2
    low_2, high_2 = [0.7, 0.2], [0.6, 0.4]  # foreground at v2, v3
    fused = _fuse(
        sar,
        _probs(low_2).reshape(1, 2, 1, 1, 2),
        _probs(high_2).reshape(1, 2, 1, 1, 2),
        label=LABEL[..., 1:, :],
        start=(0, 1, 0),
    )
    cbar_low = [(C1_LOW[v] + 0.5) / 2 for v in (2, 3)]  # 0.7, 0.5
    cbar_high = [(C1_HIGH[v] + 0.5) / 2 for v in (2, 3)]  # 0.4, 0.7
    expected = [_fg_fused(low_2[k], high_2[k], cbar_low[k], cbar_high[k]) for k in range(2)]
    assert fused[0, 1].flatten().tolist() == pytest.approx(expected, abs=1e-6)
    sar.epoch_completed()

    # after two epochs: C_{i-1} = C2 (v0, v1 uncovered keep C1), C_{i-2} = C1
    c2_low = [0.8, 0.6, 0.7, 0.8]  # v2 label 1 -> 0.7, v3 label 0 -> 1 - 0.2
    c2_high = [0.6, 0.8, 0.6, 0.6]
    memory = sar.state_dict()["memory"]["a"]
    assert memory[1, 0].flatten().tolist() == pytest.approx(c2_low)
    assert memory[1, 1].flatten().tolist() == pytest.approx(c2_high)
    assert memory[2, 0].flatten().tolist() == pytest.approx(C1_LOW)
    assert memory[2, 1].flatten().tolist() == pytest.approx(C1_HIGH)

    # epoch 3: Cbar = (C2 + C1) / 2
    low_3, high_3 = [0.5, 0.5, 0.5, 0.5], [0.1, 0.9, 0.9, 0.1]
    fused = _fuse(sar, _probs(low_3).reshape(1, 2, 1, 2, 2), _probs(high_3).reshape(1, 2, 1, 2, 2))
    expected = [
        _fg_fused(low_3[v], high_3[v], (c2_low[v] + C1_LOW[v]) / 2, (c2_high[v] + C1_HIGH[v]) / 2) for v in range(4)
    ]
    assert fused[0, 1].flatten().tolist() == pytest.approx(expected, abs=1e-6)
    sar.epoch_completed()
    memory = sar.state_dict()["memory"]["a"]
    assert memory[1, 0].flatten().tolist() == pytest.approx([0.5, 0.5, 0.5, 0.5])  # C3 low
    assert memory[1, 1].flatten().tolist() == pytest.approx([0.9, 0.9, 0.9, 0.9])  # C3 high
    assert memory[2, 0].flatten().tolist() == pytest.approx(c2_low)
    assert sar.epoch == 3


def test_running_mode_reads_before_update_and_averages_where_seen():
    sar = SARFusion(alpha=0.5, mode="running", dtype="float32")
    low, high = _probs(LOW_1).reshape(1, 2, 1, 2, 2), _probs(HIGH_1).reshape(1, 2, 1, 2, 2)
    _fuse(sar, low, high)  # first sight: M = C1
    memory = sar.state_dict()["memory"]["a"]
    assert memory[0].flatten().tolist() == pytest.approx(C1_LOW)
    assert memory[1].flatten().tolist() == pytest.approx(C1_HIGH)

    # second iteration (same epoch, no roll needed): weights are M = C1, then M = (C1 + C) / 2
    low_2 = [0.0, 1.0, 1.0, 0.0]  # perfect: confidence 1 everywhere
    fused = _fuse(sar, _probs(low_2).reshape(1, 2, 1, 2, 2), high)
    expected = [_fg_fused(low_2[v], HIGH_1[v], C1_LOW[v], C1_HIGH[v]) for v in range(4)]
    assert fused[0, 1].flatten().tolist() == pytest.approx(expected, abs=1e-6)
    memory = sar.state_dict()["memory"]["a"]
    assert memory[0].flatten().tolist() == pytest.approx([(c + 1) / 2 for c in C1_LOW])
    assert memory[1].flatten().tolist() == pytest.approx(C1_HIGH)
    sar.epoch_completed()  # no effect on a running memory
    assert sar.state_dict()["memory"]["a"][0].flatten().tolist() == pytest.approx([(c + 1) / 2 for c in C1_LOW])


def test_view_maps_patch_voxels_to_case_voxels():
    # case (2, 3, 1); the patch is the crop seen with axes 0 and 1 swapped: patch shape (3, 2, 1)
    sar = SARFusion(mode="paper", dtype="float32")
    case_shape = [2, 3, 1]
    label = torch.ones(1, 1, 3, 2, 1, dtype=torch.long)
    fg = torch.tensor([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]]).reshape(3, 2, 1)  # patch[j, i, 0]
    prob = torch.stack([1 - fg, fg]).unsqueeze(0)
    sar.fuse(prob, prob, [True], label, ["b"], [[0, 0, 0]], [[1, 0, 2]], [case_shape])
    sar.epoch_completed()
    memory = sar.state_dict()["memory"]["b"][1, 0, :, :, 0]  # C_{i-1} of the low branch, case space
    torch.testing.assert_close(memory, torch.tensor([[0.1, 0.3, 0.5], [0.2, 0.4, 0.6]]))

    # read back in the identity view at a crop of the case: weights come in case order
    captured = {}
    original = sar._read

    def spy(case, regions, perm):
        captured["w"] = original(case, regions, perm)
        return captured["w"]

    sar._read = spy
    ident = torch.full((1, 2, 2, 2, 1), 0.5)
    sar.fuse(ident, ident, [True], torch.zeros(1, 1, 2, 2, 1, dtype=torch.long), ["b"], [[0, 1, 0]], [[0, 1, 2]], [case_shape])
    # Cbar = (C_{i-1} + 0.5) / 2 at case voxels [:, 1:3]
    torch.testing.assert_close(captured["w"][0, :, :, 0], (torch.tensor([[0.3, 0.5], [0.4, 0.6]]) + 0.5) / 2)


def test_unlabeled_samples_average_and_placeholders_are_not_read():
    sar = SARFusion()
    low = _probs([0.2, 0.6, 0.9, 0.5]).reshape(1, 2, 1, 2, 2).repeat(2, 1, 1, 1, 1)
    high = _probs([0.4, 0.8, 0.3, 0.1]).reshape(1, 2, 1, 2, 2).repeat(2, 1, 1, 1, 1)
    label = torch.cat([LABEL, torch.full_like(LABEL, -1)])  # placeholder label of the unlabeled sample
    fused = sar.fuse(
        low, high, torch.tensor([True, False]), label, ["a", "unlabeled"], [[0, 0, 0]] * 2, [IDENTITY] * 2, [CASE_SHAPE] * 2
    )
    torch.testing.assert_close(fused[1], 0.5 * (low[1] + high[1]))
    assert list(sar.memory) == ["a"]
    only_unlabeled = sar.fuse(low, high, [False, False])
    torch.testing.assert_close(only_unlabeled, 0.5 * (low + high))


def test_multiclass_confidence_is_true_class_probability():
    sar = SARFusion(mode="paper", dtype="float32")
    prob = torch.tensor([[0.2, 0.5], [0.3, 0.1], [0.5, 0.4]]).reshape(1, 3, 1, 1, 2)  # 3 classes, 2 voxels
    label = torch.tensor([2, 0]).reshape(1, 1, 1, 1, 2)
    sar.fuse(prob, prob, [True], label, ["m"], [[0, 0, 0]], [IDENTITY], [[1, 1, 2]])
    sar.epoch_completed()
    assert sar.memory["m"][1, 0].flatten().tolist() == pytest.approx([0.5, 0.5])  # p(class 2), p(class 0)
    assert sar.memory["m"][1, 1].flatten().tolist() == pytest.approx([0.5, 0.5])


def test_gradient_flows_through_fusion_not_into_memory():
    sar = SARFusion()
    low = _probs(LOW_1).reshape(1, 2, 1, 2, 2).requires_grad_()
    high = _probs(HIGH_1).reshape(1, 2, 1, 2, 2).requires_grad_()
    _fuse(sar, low, high)[:, 1].sum().backward()
    assert low.grad.abs().sum() > 0 and high.grad.abs().sum() > 0
    assert not sar.memory["a"].requires_grad


def test_state_dict_round_trip_with_weights_only_load():
    sar = SARFusion(mode="paper")
    _fuse(sar, _probs(LOW_1).reshape(1, 2, 1, 2, 2), _probs(HIGH_1).reshape(1, 2, 1, 2, 2))
    sar.epoch_completed()
    buffer = io.BytesIO()
    torch.save({"sar": sar.state_dict()}, buffer)
    buffer.seek(0)
    restored = SARFusion(mode="paper")
    restored.load_state_dict(torch.load(buffer, weights_only=True)["sar"])
    assert restored.epoch == 1
    assert restored.memory["a"].dtype == torch.float16  # compact storage
    torch.testing.assert_close(restored.memory["a"], sar.memory["a"])
    low, high = _probs([0.3] * 4).reshape(1, 2, 1, 2, 2), _probs([0.6] * 4).reshape(1, 2, 1, 2, 2)
    torch.testing.assert_close(_fuse(restored, low, high), _fuse(sar, low, high))

    running = SARFusion(mode="running")
    _fuse(running, low, high)
    buffer = io.BytesIO()
    torch.save(running.state_dict(), buffer)
    buffer.seek(0)
    restored = SARFusion(mode="running")
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.seen["a"].all()


def test_state_dict_without_memory_restarts_it_with_a_warning(caplog):
    sar = SARFusion(mode="paper", checkpoint_memory=False)
    _fuse(sar, _probs(LOW_1).reshape(1, 2, 1, 2, 2), _probs(HIGH_1).reshape(1, 2, 1, 2, 2))
    sar.epoch_completed()
    state = sar.state_dict()
    assert (state["epoch"], state["memory_saved"], state["memory"], state["seen"]) == (1, False, {}, {})
    assert sar.memory["a"].shape == (3, 2, 1, 2, 2)  # the handler keeps its own memory
    restored = SARFusion(mode="paper")
    with caplog.at_level("WARNING", logger="sasnet_components.handlers.sar_fusion"):
        restored.load_state_dict(state)
    assert restored.epoch == 1 and restored.memory == {}
    assert "holds no SAR memory" in caplog.text and "not an exact continuation" in caplog.text
    # the next fusion reads a fresh memory: both weights 1 + 0.5 * 0.5, as in epoch 1
    fused = _fuse(restored, _probs(LOW_1).reshape(1, 2, 1, 2, 2), _probs(HIGH_1).reshape(1, 2, 1, 2, 2))
    expected = [_fg_fused(l, h, 0.5, 0.5) for l, h in zip(LOW_1, HIGH_1)]
    assert fused[0, 1].flatten().tolist() == pytest.approx(expected, abs=1e-3)
    assert SARFusion(mode="paper").state_dict()["memory_saved"] is True  # the default keeps the memory


def test_attached_to_an_engine_rolls_on_epoch_completed():
    sar = SARFusion(mode="paper", dtype="float32")
    confidences = iter([0.9, 0.8, 0.7, 0.6])  # one iteration per epoch

    def step(engine, batch):
        c = next(confidences)
        prob = _probs([1 - c, c, c, 1 - c]).reshape(1, 2, 1, 2, 2)  # true-class probability c everywhere
        _fuse(sar, prob, prob)

    engine = Engine(step)
    sar.attach(engine)
    sar.attach(engine)  # attaching twice registers one handler
    engine.run([0], max_epochs=3)
    assert sar.epoch == 3
    assert sar.memory["a"][1, 0].flatten().tolist() == pytest.approx([0.7] * 4)  # C_{i-1}
    assert sar.memory["a"][2, 0].flatten().tolist() == pytest.approx([0.8] * 4)  # C_{i-2}


def _engine_with_confidences(sar: SARFusion, confidences) -> Engine:
    """An engine whose iterations write a true-class probability of ``c`` everywhere, one value per iteration."""
    values = iter(confidences)

    def step(engine, batch):
        c = next(values)
        prob = _probs([1 - c, c, c, 1 - c]).reshape(1, 2, 1, 2, 2)
        _fuse(sar, prob, prob)

    engine = Engine(step)
    sar.attach(engine)
    return engine


def test_resumed_at_an_epoch_boundary_rolls_the_missing_epoch():
    # a checkpoint written at the last iteration of epoch 1 holds the memory before its roll
    saved = SARFusion(mode="paper", dtype="float32")
    _engine_with_confidences(saved, [0.9]).run([0], max_epochs=1, epoch_length=1)
    state = saved.state_dict()
    state["epoch"], state["memory"]["a"][1:] = 0, 0.5  # as it was before EPOCH_COMPLETED
    resumed = SARFusion(mode="paper", dtype="float32")
    resumed.load_state_dict(state)
    engine = _engine_with_confidences(resumed, [0.8])
    engine.load_state_dict({"iteration": 1, "epoch_length": 1, "max_epochs": 2})
    engine.run([0])
    assert resumed.epoch == 2  # the missing roll, then epoch 2's own
    assert resumed.memory["a"][1, 0].flatten().tolist() == pytest.approx([0.8] * 4)  # C_{i-1}
    assert resumed.memory["a"][2, 0].flatten().tolist() == pytest.approx([0.9] * 4)  # C_{i-2}, not 0.5


def test_memory_ahead_of_the_trainer_is_refused():
    sar = SARFusion()
    sar.epoch = 3
    engine = _engine_with_confidences(sar, [0.9])
    with pytest.raises(ValueError, match=r"rolled 3 epochs but the trainer starts iteration 1 after 0 complete epochs"):
        engine.run([0], max_epochs=1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"label": torch.full((1, 1, 1, 2, 2), 2)}, r"class indices in \[0, 2\), got values \[2\]"),
        ({"start": (0, 1, 0)}, r"does not fit in its case shape \[1, 2, 2\]"),
        ({"view": [0, 0, 2]}, r"must be a permutation of \[0, 1, 2\], got \[0, 0, 2\]"),
        ({"label": torch.zeros(1, 1, 2, 2)}, r"`label` must have shape \(1, 1, 1, 2, 2\)"),
    ],
)
def test_bad_input_raises(kwargs, match):
    sar = SARFusion()
    prob = _probs(LOW_1).reshape(1, 2, 1, 2, 2)
    with pytest.raises(ValueError, match=match):
        _fuse(sar, prob, prob, **kwargs)


def test_more_bad_input():
    sar = SARFusion()
    prob = _probs(LOW_1).reshape(1, 2, 1, 2, 2)
    with pytest.raises(ValueError, match="must have the same shape"):
        sar.fuse(prob, prob[..., :1], [False])
    with pytest.raises(ValueError, match="labeled samples need `label`"):
        sar.fuse(prob, prob, [True])
    _fuse(sar, prob, prob)
    with pytest.raises(ValueError, match=r"first seen with shape \[1, 2, 2\], now with \[1, 2, 3\]"):
        sar.fuse(prob, prob, [True], LABEL, ["a"], [[0, 0, 0]], [IDENTITY], [[1, 2, 3]])
    with pytest.raises(ValueError, match=r"SARFusion's `mode` must be one of \['paper', 'running'\], got 'averaged'."):
        SARFusion(mode="averaged")
    with pytest.raises(ValueError, match=r"`alpha` must be in \[0, 1\], got 2"):
        SARFusion(alpha=2)
    with pytest.raises(ValueError, match="saved in mode 'paper', this handler uses 'running'"):
        SARFusion(mode="running").load_state_dict(sar.state_dict())
    with pytest.raises(KeyError, match="missing"):
        SARFusion().load_state_dict({"mode": "paper"})


def test_disabled_fusion_is_the_plain_mean_and_leaves_the_memory_empty():
    sar = SARFusion(enabled=False)
    low, high = _probs(LOW_1).reshape(1, 2, 1, 2, 2), _probs(HIGH_1).reshape(1, 2, 1, 2, 2)
    for _ in range(3):  # also after epochs: nothing is read, written or rolled
        fused = _fuse(sar, low, high)
        sar.epoch_completed()
    # foreground of voxel v0: (0.2 + 0.4) / 2, v1 (0.6 + 0.8) / 2, v2 (0.9 + 0.3) / 2, v3 (0.5 + 0.1) / 2
    assert fused[0, 1].reshape(-1).tolist() == pytest.approx([0.3, 0.7, 0.6, 0.3])
    assert torch.equal(fused, 0.5 * (low + high))
    assert sar.memory == {} and sar.seen == {}
    # an enabled handler fuses differently on the same input (its weights 0.5 everywhere at first)
    assert not torch.allclose(_fuse(SARFusion(), low, high), fused)
    state = sar.state_dict()
    assert state["enabled"] is False and state["memory"] == {}
    restored = SARFusion(enabled=False)
    restored.load_state_dict(torch.load(_saved(state), weights_only=True))
    assert restored.enabled is False and restored.memory == {} and restored.epoch == 3


def _saved(state) -> io.BytesIO:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


def test_loading_the_state_of_a_handler_switched_otherwise_warns(caplog):
    sar = SARFusion()
    sar.load_state_dict(SARFusion(enabled=False).state_dict())
    assert sar.enabled is True  # this run's switch
    assert "SAR fusion was off, this run's is on" in caplog.text


def test_enabled_must_be_a_bool():
    with pytest.raises(ValueError, match=r"`enabled` must be True or False, got 'yes'"):
        SARFusion(enabled="yes")
