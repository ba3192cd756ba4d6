"""Inference of the LA bundle on a folder of NIfTI files through ``monai.bundle`` (CPU, tiny random network)."""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import run
from monai.data import CacheDataset, MetaTensor

import sasnet_components.data
from sasnet_components import DualBranchVNet
from sasnet_components.data.inference import SplitPredictiond, case_id_of, inference_datalist

CONFIGS = Path(__file__).resolve().parents[2] / "bundles" / "la" / "configs"
CONFIG = [str(CONFIGS / "train.yaml"), str(CONFIGS / "inference.yaml")]


def _rotated_affine() -> np.ndarray:
    """30 degrees about z, spacing (0.8, 1.1, 2.0), x and y flipped (LPS-like), shifted origin."""
    t = np.deg2rad(30.0)
    rotation = np.array([[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([-0.8, -1.1, 2.0])
    affine[:3, 3] = [10.0, -5.0, 3.0]
    return affine


def _write(path: Path, shape, affine) -> None:
    data = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    nib.save(nib.Nifti1Image(data, affine), str(path))


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    torch.save(DualBranchVNet(n_filters=2).state_dict(), folder / "model.pt")
    return str(folder)


def _overrides(ckpt_dir: str, input_dir: Path, output_dir: Path, **extra) -> dict:
    tiny = {
        "input_dir": str(input_dir),
        "output_dir": str(output_dir),
        "ckpt_dir": ckpt_dir,
        "device": "cpu",
        "amp": False,
        "patch_size": [32, 32, 16],
        "network_def#n_filters": 2,
        "num_workers": 0,
        "sw_batch_size": 2,
        "inference_spacing": [1.5, 1.5, 1.5],  # keeps the test fast; resampling and its inverse still happen
    }
    tiny.update(extra)
    return tiny


def test_outputs_have_the_input_geometry(ckpt_dir, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    affine = _rotated_affine()
    _write(inputs / "rotated.nii.gz", (37, 29, 13), affine)
    _write(inputs / "plain.nii", (20, 21, 22), np.diag([1.0, 1.0, 1.0, 1.0]))
    out = tmp_path / "out"
    run("run", config_file=CONFIG, **_overrides(ckpt_dir, inputs, out, save_probability="true", save_uncertainty=True))

    for name, case in (("rotated.nii.gz", "rotated"), ("plain.nii", "plain")):
        image = nib.load(str(inputs / name))
        paths = [out / f"{case}_seg.nii.gz", out / "probability" / f"{case}_prob.nii.gz", out / "uncertainty" / f"{case}_uncertainty.nii.gz"]
        seg, prob, unc = (nib.load(str(p)) for p in paths)
        for written in (seg, prob, unc):
            assert written.shape == image.shape
            np.testing.assert_allclose(written.affine, image.affine, atol=1e-5)
            assert nib.aff2axcodes(written.affine) == nib.aff2axcodes(image.affine)
        assert nib.aff2axcodes(image.affine) != ("R", "A", "S") or case == "plain"
        assert seg.get_data_dtype() == np.uint8
        s, p, u = seg.get_fdata(), prob.get_fdata(), unc.get_fdata()
        assert set(np.unique(s)) <= {0.0, 1.0}
        assert 0.0 <= p.min() and p.max() <= 1.0 and 0.0 <= u.min() and u.max() <= 1.0
        clear = np.abs(p - 0.5) > 1e-4  # two classes: argmax of (1 - p, p) is p > 0.5
        np.testing.assert_array_equal(s[clear], (p[clear] > 0.5).astype(float))
    assert not any(p.name.endswith("_seg.nii.gz") for p in inputs.iterdir())  # nothing written into the input folder


def test_rerun_skips_done_cases_unless_overwrite(ckpt_dir, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    _write(inputs / "a.nii.gz", (20, 20, 10), np.diag([1.0, 1.0, 2.0, 1.0]))
    out = tmp_path / "out"
    label = out / "a_seg.nii.gz"
    run("inferring", config_file=CONFIG, **_overrides(ckpt_dir, inputs, out))
    first = os.stat(label).st_mtime_ns
    assert not (out / "probability").exists()  # only on request

    run("inferring", config_file=CONFIG, **_overrides(ckpt_dir, inputs, out, overwrite="false"))
    assert os.stat(label).st_mtime_ns == first
    assert "1 already done" in capsys.readouterr().out

    run("inferring", config_file=CONFIG, **_overrides(ckpt_dir, inputs, out, save_probability=True))
    assert (out / "probability" / "a_prob.nii.gz").is_file()  # a requested output was missing: redone

    second = os.stat(label).st_mtime_ns
    run("inferring", config_file=CONFIG, **_overrides(ckpt_dir, inputs, out, overwrite="true"))
    assert os.stat(label).st_mtime_ns != second


def _refusal(info) -> str:
    """The message of the SystemExit a refused input ends the run with (printed to stderr, exit status 1)."""
    assert isinstance(info.value.code, str), info.value.code
    return info.value.code


def test_unreadable_inputs_are_reported_and_skipped(ckpt_dir, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "broken.nii.gz").write_bytes(b"not a nifti file" * 8)
    _write(inputs / "good.nii.gz", (20, 20, 10), np.eye(4))
    _write(inputs / "whole.nii.gz", (24, 24, 12), np.eye(4))
    raw = gzip.decompress((inputs / "whole.nii.gz").read_bytes())
    (inputs / "truncated.nii.gz").write_bytes(gzip.compress(raw[: len(raw) // 2]))  # header fine, data cut
    (inputs / "whole.nii.gz").unlink()
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        run("inferring", config_file=CONFIG, **_overrides(ckpt_dir, inputs, out))
    log = capsys.readouterr().out
    assert re.search(r"ERROR - skipping input 'broken.nii.gz' .*: cannot read it: .*\(\w+\)", log)
    assert re.search(r"ERROR - skipping input 'truncated.nii.gz' .*: cannot read it: .*\(\w+\)", log)
    assert re.search(r"case 1/1: good", log)
    assert sorted(p.name for p in out.iterdir()) == ["good_seg.nii.gz"]
    assert re.match(r"inference: 2 of 3 inputs not segmented .*'broken.nii.gz'.*'truncated.nii.gz'", _refusal(info))


def test_non_finite_input_is_refused_the_others_segmented(ckpt_dir, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    _write(inputs / "good.nii.gz", (20, 20, 10), np.eye(4))
    image = np.random.default_rng(0).normal(size=(20, 20, 10)).astype(np.float32)
    image[2:4, 2:4, 2:4] = np.nan  # 2 * 2 * 2 = 8 of 4000 voxels
    nib.save(nib.Nifti1Image(image, np.eye(4)), str(inputs / "holes.nii.gz"))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        run("inferring", config_file=CONFIG, **_overrides(ckpt_dir, inputs, out))
    message = _refusal(info)
    assert message.startswith("inference: 1 of 2 inputs not segmented (no output written for them): ")
    assert f"'holes.nii.gz' ({inputs / 'holes.nii.gz'}): 8 non-finite voxels (8 NaN, 0 infinite) of 4000" in message
    assert re.search(r"ERROR - skipping input 'holes.nii.gz' .*8 non-finite voxels", capsys.readouterr().out)
    assert sorted(p.name for p in out.iterdir()) == ["good_seg.nii.gz"]  # and no empty segmentation of holes
    # a run with only good inputs ends normally and says where the outputs are
    (inputs / "holes.nii.gz").unlink()
    run("inferring", config_file=CONFIG, **_overrides(ckpt_dir, inputs, out, overwrite=True))
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"inference: 1 of 1 inputs segmented, outputs in {out}"


def _raised(error, match, fn, *args, **kwargs) -> None:
    with pytest.raises(Exception) as info:
        fn(*args, **kwargs)
    chain, exc = [], info.value
    while exc is not None:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    assert any(isinstance(e, error) and re.search(match, str(e)) for e in chain), [repr(e) for e in chain]


def test_bad_folders_and_flags_get_clear_errors(ckpt_dir, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    _write(inputs / "a.nii.gz", (8, 8, 8), np.eye(4))
    for out in (inputs, inputs / "out"):
        _raised(ValueError, rf"output_dir '{re.escape(str(out))}' and input_dir '{re.escape(str(inputs))}'",
                run, "inferring", config_file=CONFIG, **_overrides(ckpt_dir, inputs, out))
    missing = tmp_path / "nowhere"
    _raised(FileNotFoundError, re.escape(str(missing)), run, "inferring", config_file=CONFIG, **_overrides(ckpt_dir, missing, tmp_path / "o"))
    _raised(ValueError, r"maybe", run, "inferring", config_file=CONFIG,
            **_overrides(ckpt_dir, inputs, tmp_path / "o", save_probability="maybe"))
    assert not (inputs / "out").exists()


def test_unusable_output_folder_is_refused_before_the_model_is_loaded(tmp_path, monkeypatch):
    inputs = tmp_path / "in"
    inputs.mkdir()
    _write(inputs / "a.nii.gz", (8, 8, 8), np.eye(4))
    no_model = str(tmp_path / "models")  # loading a model from here would fail: the checks come first

    def build_network(*args, **kwargs):
        raise AssertionError("the network was built before the output folder was checked")

    monkeypatch.setattr(DualBranchVNet, "__init__", build_network)
    blocker = tmp_path / "results.txt"
    blocker.write_text("a file, not a folder")
    for out in (blocker, blocker / "segmentations"):
        message = rf"output folder '{re.escape(str(out))}' cannot be used: '{re.escape(str(blocker))}' is a file"
        _raised(NotADirectoryError, message, run, "inferring", config_file=CONFIG, **_overrides(no_model, inputs, out))
    assert blocker.read_text() == "a file, not a folder"
    # a folder without write permission (root writes anyway, so the permission is simulated)
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != read_only and real_access(path, mode, **kw))
    for out in (read_only, read_only / "segmentations"):
        message = rf"output folder '{re.escape(str(out))}' cannot be used: no permission to write in '{re.escape(str(read_only))}'"
        _raised(PermissionError, message, run, "inferring", config_file=CONFIG, **_overrides(no_model, inputs, out))
    assert list(read_only.iterdir()) == []


def test_inference_reads_no_training_data(ckpt_dir, tmp_path, monkeypatch):
    inputs = tmp_path / "in"
    inputs.mkdir()
    _write(inputs / "a.nii.gz", (20, 21, 22), np.eye(4))

    def refuse(*args, **kwargs):
        raise AssertionError("inferring built training or evaluation data")

    monkeypatch.setattr(CacheDataset, "__init__", refuse)
    for name in ("semi_supervised_datalists", "evaluation_datalist"):
        monkeypatch.setattr(sasnet_components.data, name, refuse)
    # no datalist there: inference must not need one
    run("inferring", config_file=CONFIG, dataset_dir=str(tmp_path / "absent"), **_overrides(ckpt_dir, inputs, tmp_path / "out"))
    assert (tmp_path / "out" / "a_seg.nii.gz").is_file()


def test_datalist_order_ids_and_duplicates(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("b.nii", "a.nii.gz", "c.nii.gz"):
        _write(inputs / name, (4, 4, 4), np.eye(4))
    (inputs / "notes.txt").write_text("ignored")
    out = tmp_path / "out"
    (out / "probability").mkdir(parents=True)
    (out / "c_seg.nii.gz").write_bytes(b"x")
    items = inference_datalist(inputs, out)
    assert [i["case_id"] for i in items] == ["a", "b"]  # sorted; c is done
    assert items[0]["image"] == str(inputs / "a.nii.gz")
    # c is missing its probability output: not done when the probability is requested
    assert len(inference_datalist(inputs, out, outputs=[["", "seg"], ["probability", "prob"]])) == 3
    assert case_id_of("x/case.1.nii.gz") == "case.1"
    _write(inputs / "a.nii", (4, 4, 4), np.eye(4))
    with pytest.raises(ValueError, match="share the case id 'a'"):
        inference_datalist(inputs, out)


def test_split_prediction_by_hand():
    # channels: background 0.3 / foreground 0.7 / disagreement 0.2 at voxel 0; 0.9 / 0.1 / 0.0 at voxel 1
    pred = MetaTensor(torch.tensor([[0.3, 0.9], [0.7, 0.1], [0.2, 0.0]]).reshape(3, 2, 1, 1), affine=torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0])))
    out = SplitPredictiond(keys="pred", num_classes=2)({"pred": pred})
    assert out["label"].flatten().tolist() == [1, 0] and out["label"].dtype == torch.uint8
    torch.testing.assert_close(out["probability"].flatten(), torch.tensor([0.7, 0.1]))
    torch.testing.assert_close(out["uncertainty"].flatten(), torch.tensor([0.2, 0.0]))
    torch.testing.assert_close(out["label"].affine, pred.affine)
    with pytest.raises(ValueError, match=r"`pred` must have shape \(3, \*spatial\).*got shape \(2, 2, 1, 1\)"):
        SplitPredictiond(keys="pred", num_classes=2)({"pred": pred[:2]})
