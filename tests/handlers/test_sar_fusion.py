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


# ---------------------------------------------------------------------- uint8 memory
QUANT = 1 / 510  # largest error of a uint8 code, half a step of 1 / 255


def _fg_ones(foreground, shape=(1, 2, 2)):
    """Probabilities `(1, 2, *shape)` and an all-foreground label: the confidence is the foreground probability."""
    prob = _probs(foreground).reshape(1, 2, *shape)
    return prob, torch.ones(1, 1, *shape, dtype=torch.long)


def test_uint8_hand_values_paper_mode():
    sar = SARFusion(alpha=0.5, mode="paper", dtype="uint8")
    fg = [0.3, 0.0, 1.0, 0.5]
    prob, label = _fg_ones(fg)
    fused = _fuse(sar, prob, prob, label=label)
    # a fresh memory holds 128, read as 128 / 255 = 0.5 + 1 / 510
    assert sar.memory["a"].dtype == torch.uint8
    assert sar.memory["a"][1:].unique().tolist() == [128]
    assert 128 / 255 - 0.5 == pytest.approx(QUANT)
    expected = [_fg_fused(p, p, 128 / 255, 128 / 255) for p in fg]
    assert fused[0, 1].flatten().tolist() == pytest.approx(expected, abs=1e-6)
    # 0.3 -> round(76.5) = 77 (half up), 0 -> 0, 1 -> 255, 0.5 -> round(127.5) = 128
    assert sar.memory["a"][0, 0].flatten().tolist() == [77, 0, 255, 128]
    assert sar.memory["a"][0, 1].flatten().tolist() == [77, 0, 255, 128]
    sar.epoch_completed()
    # epoch 2: Cbar = (C_{i-1} + C_{i-2}) / 2 = (code / 255 + 128 / 255) / 2, e.g. 0.3 -> (77 + 128) / 510 = 0.40196
    captured = {}
    original = sar._read
    sar._read = lambda *args: captured.setdefault("w", original(*args))
    flat, flat_label = _fg_ones([0.5] * 4)
    _fuse(sar, flat, flat, label=flat_label)
    weight = captured["w"]
    assert weight.dtype == torch.float32
    expected = [(c + 128) / 510 for c in (77, 0, 255, 128)]
    assert weight[0].flatten().tolist() == pytest.approx(expected, abs=1e-7)
    assert weight[0, 0, 0, 0].item() == pytest.approx(0.40196, abs=1e-5)


def test_uint8_running_mode_rounds_after_averaging():
    sar = SARFusion(mode="running", dtype="uint8")
    prob, label = _fg_ones([0.3] * 4)
    _fuse(sar, prob, prob, label=label)  # first sight: M = code(0.3) = 77
    assert sar.memory["a"].flatten().tolist() == [77] * 8
    prob, label = _fg_ones([1.0] * 4)
    _fuse(sar, prob, prob, label=label)  # M = code((77 / 255 + 1) / 2) = code(166 / 255) = 166
    assert sar.memory["a"].flatten().tolist() == [166] * 8


@pytest.mark.parametrize("mode", ["paper", "running"])
def test_uint8_quantisation_error_is_at_most_half_a_step(mode):
    torch.manual_seed(0)
    shape = (1, 64, 64)
    fg = torch.rand(shape)
    fg.view(-1)[:4] = torch.tensor([0.0, 1.0, 0.5, 0.3])
    sar = SARFusion(mode=mode, dtype="uint8")
    prob = torch.stack([1 - fg, fg]).unsqueeze(0)
    label = torch.ones(1, 1, *shape, dtype=torch.long)
    sar.fuse(prob, prob, [True], label, ["q"], [[0, 0, 0]], [IDENTITY], [list(shape)])
    stored = sar.memory["q"][0, 0] if mode == "paper" else sar.memory["q"][0]
    error = (stored.float() / 255 - fg).abs().max().item()
    assert error <= QUANT + 1e-7
    assert error > 0.99 * QUANT  # 4096 random values reach the bound


def test_uint8_fusion_is_close_to_float32_fusion():
    """Random probabilities over three epochs: the weights differ by at most 1 / 510, so every logit
    ``(1 + alpha * w) * p`` by at most alpha / 510 and the fused probabilities by less than that."""
    torch.manual_seed(1)
    case_shape = [6, 5, 4]
    handlers = {name: SARFusion(alpha=0.5, mode="paper", dtype=name) for name in ("uint8", "float32")}
    worst = 0.0
    for _ in range(3):
        low = torch.softmax(torch.randn(2, 3, 3, 5, 4), dim=1)
        high = torch.softmax(torch.randn(2, 3, 3, 5, 4), dim=1)
        label = torch.randint(0, 3, (2, 1, 3, 5, 4))
        args = ([True, True], label, ["a", "b"], [[0, 0, 0], [3, 0, 0]], [IDENTITY] * 2, [case_shape] * 2)
        fused = {name: sar.fuse(low, high, *args) for name, sar in handlers.items()}
        worst = max(worst, (fused["uint8"] - fused["float32"]).abs().max().item())
        for sar in handlers.values():
            sar.epoch_completed()
    assert 0 < worst <= 0.5 / 510


def test_uint8_memory_takes_half_the_bytes_of_float16():
    sizes = {}
    for name in ("float16", "uint8"):
        sar = SARFusion(mode="paper", dtype=name)
        _fuse(sar, _probs(LOW_1).reshape(1, 2, 1, 2, 2), _probs(HIGH_1).reshape(1, 2, 1, 2, 2))
        memory = sar.memory["a"]
        assert memory.shape == (3, 2, *CASE_SHAPE)
        sizes[name] = memory.numel() * memory.element_size()
    assert sizes == {"float16": 48, "uint8": 24}


def test_uint8_state_dict_round_trip_and_conversion(caplog):
    torch.manual_seed(2)
    prob = torch.softmax(torch.randn(1, 2, 1, 2, 2), dim=1)
    saved = {}
    for name in ("uint8", "float16"):
        sar = SARFusion(mode="paper", dtype=name)
        _fuse(sar, prob, prob)
        sar.epoch_completed()
        state = torch.load(_saved(sar.state_dict()), weights_only=True)
        assert state["dtype"] == name and state["memory"]["a"].dtype == _DTYPE[name]
        saved[name] = (sar, state)

    # same storage type: exact
    restored = SARFusion(mode="paper", dtype="uint8")
    restored.load_state_dict(saved["uint8"][1])
    assert torch.equal(restored.memory["a"], saved["uint8"][0].memory["a"])

    # float16 -> uint8 and uint8 -> float16: converted, values within the quantisation error
    with caplog.at_level("INFO", logger="sasnet_components.handlers.sar_fusion"):
        to_uint8 = SARFusion(mode="paper", dtype="uint8")
        to_uint8.load_state_dict(saved["float16"][1])
    assert "saved as ['float16'], converted to uint8" in caplog.text
    f16 = saved["float16"][0].memory["a"].float()
    assert to_uint8.memory["a"].dtype == torch.uint8
    assert (to_uint8.memory["a"].float() / 255 - f16).abs().max().item() <= QUANT + 1e-6
    to_float16 = SARFusion(mode="paper", dtype="float16")
    to_float16.load_state_dict(saved["uint8"][1])
    codes = saved["uint8"][0].memory["a"].float() / 255
    assert to_float16.memory["a"].dtype == torch.float16
    torch.testing.assert_close(to_float16.memory["a"].float(), codes, atol=2.5e-4, rtol=0)  # float16 rounding
    # the fusions of the converted memories agree with the originals within the quantisation error
    low, high = _probs([0.3] * 4).reshape(1, 2, 1, 2, 2), _probs([0.6] * 4).reshape(1, 2, 1, 2, 2)
    torch.testing.assert_close(_fuse(to_uint8, low, high), _fuse(saved["float16"][0], low, high), atol=QUANT, rtol=0)


_DTYPE = {"uint8": torch.uint8, "float16": torch.float16, "float32": torch.float32}


def test_dtype_must_be_known():
    with pytest.raises(ValueError, match=r"`dtype` must be one of \['float16', 'float32', 'uint8'\], got 'int8'"):
        SARFusion(dtype="int8")


# ---------------------------------------------------------------------- host-device synchronisation
def test_unchecked_labels_read_no_device_value():
    """On the meta device any read of a value (``.item()``, ``bool()``, ``.tolist()``, boolean indexing)
    fails: with ``check_labels=False`` and CPU crop starts, views and shapes, fuse reads none."""
    prob = _probs(LOW_1).reshape(1, 2, 1, 2, 2).repeat(3, 1, 1, 1, 1)
    label = LABEL.repeat(3, 1, 1, 1, 1)
    args = (
        torch.tensor([True, False, True]),
        label.to("meta"),
        ["a", "u", "b"],
        torch.zeros(3, 3, dtype=torch.long),
        torch.tensor([IDENTITY] * 3),
        torch.tensor([CASE_SHAPE] * 3),
    )
    for mode in ("paper", "running"):
        sar = SARFusion(mode=mode, dtype="uint8", check_labels=False)
        for _ in range(2):
            out = sar.fuse(prob.to("meta"), prob.to("meta"), *args)
            sar.epoch_completed()
        assert out.shape == prob.shape and out.device.type == "meta"
        assert sar.memory["a"].device.type == "meta" and "u" not in sar.memory
    with pytest.raises((RuntimeError, NotImplementedError)):  # the check reads the device
        SARFusion(check_labels=True).fuse(prob.to("meta"), prob.to("meta"), *args)


def test_unchecked_labels_give_the_same_fusion():
    prob_low = _probs(LOW_1).reshape(1, 2, 1, 2, 2)
    prob_high = _probs(HIGH_1).reshape(1, 2, 1, 2, 2)
    checked, unchecked = SARFusion(), SARFusion(check_labels=False)
    for _ in range(2):
        expected = _fuse(checked, prob_low, prob_high)
        torch.testing.assert_close(_fuse(unchecked, prob_low, prob_high), expected, atol=0, rtol=0)
        checked.epoch_completed(), unchecked.epoch_completed()
    with pytest.raises(ValueError, match=r"`check_labels` must be True or False, got 1"):
        SARFusion(check_labels=1)


def test_labeled_samples_apart_in_the_batch_fuse_as_alone():
    torch.manual_seed(3)
    low = torch.softmax(torch.randn(3, 2, 1, 2, 2), dim=1)
    high = torch.softmax(torch.randn(3, 2, 1, 2, 2), dim=1)
    label = torch.randint(0, 2, (3, 1, 1, 2, 2))
    together = SARFusion(dtype="float32")
    fused = together.fuse(
        low, high, [True, False, True], label, ["a", "u", "c"], [[0, 0, 0]] * 3, [IDENTITY] * 3, [CASE_SHAPE] * 3
    )
    for i, case in ((0, "a"), (2, "c")):
        alone = SARFusion(dtype="float32")
        expected = _fuse(alone, low[i : i + 1], high[i : i + 1], label=label[i : i + 1], case=case)
        torch.testing.assert_close(fused[i : i + 1], expected, atol=0, rtol=0)
        torch.testing.assert_close(together.memory[case], alone.memory[case], atol=0, rtol=0)
    torch.testing.assert_close(fused[1], 0.5 * (low[1] + high[1]), atol=0, rtol=0)


@pytest.mark.cuda
@pytest.mark.parametrize("mode", ["paper", "running"])
def test_unchecked_fusion_does_not_synchronise_on_cuda(mode):
    torch.manual_seed(4)
    low = torch.softmax(torch.randn(3, 2, 1, 2, 2), dim=1).cuda()
    high = torch.softmax(torch.randn(3, 2, 1, 2, 2), dim=1).cuda()
    label = torch.randint(0, 2, (3, 1, 1, 2, 2)).cuda()
    args = (
        torch.tensor([True, False, True]),
        label,
        ["a", "u", "b"],
        torch.zeros(3, 3, dtype=torch.long),
        torch.tensor([IDENTITY] * 3),
        torch.tensor([CASE_SHAPE] * 3),
    )
    sar = SARFusion(mode=mode, dtype="uint8", check_labels=False)
    on_cpu = SARFusion(mode=mode, dtype="uint8")
    cpu_args = (args[0], label.cpu(), *args[2:])
    sar.fuse(low, high, *args)  # allocates the memory
    on_cpu.fuse(low.cpu(), high.cpu(), *cpu_args)
    sar.epoch_completed(), on_cpu.epoch_completed()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = sar.fuse(low, high, *args)
        sar.epoch_completed()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.device == low.device and sar.memory["a"].device == low.device
    torch.testing.assert_close(out.cpu(), on_cpu.fuse(low.cpu(), high.cpu(), *cpu_args), atol=1e-6, rtol=0)


def test_uint8_running_memory_stays_within_two_half_steps_of_float32():
    """Each stored average adds at most 1 / 510 and halves the earlier error: at most 2 / 510 = 1 / 255."""
    torch.manual_seed(5)
    shape = (1, 32, 32)
    handlers = {name: SARFusion(mode="running", dtype=name) for name in ("uint8", "float32")}
    label = torch.ones(1, 1, *shape, dtype=torch.long)
    worst = 0.0
    for _ in range(50):
        fg = torch.rand(shape)
        prob = torch.stack([1 - fg, fg]).unsqueeze(0)
        for sar in handlers.values():
            sar.fuse(prob, prob, [True], label, ["a"], [[0, 0, 0]], [IDENTITY], [list(shape)])
        error = handlers["uint8"].memory["a"].float() / 255 - handlers["float32"].memory["a"]
        worst = max(worst, error.abs().max().item())
    assert QUANT < worst <= 2 * QUANT + 1e-6
