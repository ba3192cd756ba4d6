"""Tests of the LA dataset preparation (``sasnet_components.data.la`` and ``scripts/prepare_la.py``).

All data are small synthetic volumes written to ``tmp_path``: an h5 "community" layout with 12
cases of shape (20, 18, 8), and raw challenge-style nrrd cases.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
from pathlib import Path

import h5py
import nibabel as nib
import nrrd
import numpy as np
import pytest

from sasnet_components.data.la import (
    build_datalist,
    detect_layout,
    label_crop_box,
    prepare_la,
    preprocess_raw_case,
    read_id_list,
)

REPO = Path(__file__).resolve().parents[2]
SHAPE = (20, 18, 8)
IDS = [f"case{i:02d}" for i in range(12)]
TRAIN_IDS = IDS[:10]
DATALIST_KEYS = {
    "name",
    "spacing",
    "source_layout",
    "num_labeled",
    "protocol_note",
    "labeled",
    "unlabeled",
    "validation",
    "test",
}


def _write_h5(path: Path, image: np.ndarray, label: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("image", data=image)
        f.create_dataset("label", data=label)


def _h5_path(root: Path, case_id: str) -> Path:
    return root / "2018LA_Seg_Training Set" / case_id / "mri_norm2.h5"


@pytest.fixture
def h5_root(tmp_path: Path) -> tuple[Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """12 cases; train.list = case00..case09, test.list = case10, case11; case11 is absent."""
    root = tmp_path / "LA"
    rng = np.random.default_rng(0)
    arrays = {}
    for case_id in IDS[:11]:
        image = rng.normal(size=SHAPE).astype(np.float32)
        label = (rng.random(SHAPE) > 0.7).astype(np.uint8)
        _write_h5(_h5_path(root, case_id), image, label)
        arrays[case_id] = (image, label)
    # trailing whitespace and empty lines must be ignored
    (root / "train.list").write_text("\n".join(f"{i}  " for i in TRAIN_IDS) + "\n\n")
    (root / "test.list").write_text("case10\r\ncase11\n")
    return root, arrays


def _load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(str(path))
    return np.asanyarray(img.dataobj), img.affine


def _nifti_files(out: Path) -> list[Path]:
    return sorted(out.glob("*/*.nii.gz"))


def _load_script():
    spec = importlib.util.spec_from_file_location("prepare_la_script", REPO / "scripts" / "prepare_la.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------
# h5 layout
# ---------------------------------------------------------------------------------------------


def test_h5_datalist_counts_order_and_content(h5_root, tmp_path):
    root, arrays = h5_root
    out = tmp_path / "out"
    datalist = prepare_la(root, out, num_labeled=3, num_validation=2)

    on_disk = json.loads((out / "datalist.json").read_text())
    assert on_disk == datalist
    assert set(datalist) == DATALIST_KEYS
    assert datalist["name"] == "LA" and datalist["source_layout"] == "h5" and datalist["num_labeled"] == 3
    assert datalist["spacing"] == [0.625, 0.625, 0.625]
    # labeled = first 3 of train.list, unlabeled = the other 7, validation = last 2 (also unlabeled)
    assert [e["case_id"] for e in datalist["labeled"]] == ["case00", "case01", "case02"]
    assert [e["case_id"] for e in datalist["unlabeled"]] == TRAIN_IDS[3:]
    assert [e["case_id"] for e in datalist["validation"]] == ["case08", "case09"]
    assert all(e in datalist["unlabeled"] for e in datalist["validation"])
    assert "also stay in the unlabeled pool" in datalist["protocol_note"].lower()
    # only the present test case, in its own folders
    assert datalist["test"] == [
        {"case_id": "case10", "image": "imagesTs/case10.nii.gz", "label": "labelsTs/case10.nii.gz"}
    ]
    assert datalist["labeled"][0] == {
        "case_id": "case00",
        "image": "imagesTr/case00.nii.gz",
        "label": "labelsTr/case00.nii.gz",
    }
    for split in ("labeled", "unlabeled", "test"):
        for entry in datalist[split]:
            image, affine = _load(out / entry["image"])  # relative to the datalist's folder
            label, label_affine = _load(out / entry["label"])
            expected_image, expected_label = arrays[entry["case_id"]]
            assert image.dtype == np.float32 and label.dtype == np.uint8
            np.testing.assert_array_equal(image, expected_image)
            np.testing.assert_array_equal(label, expected_label)
            np.testing.assert_allclose(affine, np.diag([0.625, 0.625, 0.625, 1.0]))
            np.testing.assert_allclose(label_affine, affine)
    assert len(_nifti_files(out)) == 2 * 11
    # no temporary file left behind
    assert not list(out.rglob(".sasnet-tmp.*"))  # no temporary file left


def test_h5_rerun_skips_complete_cases(h5_root, tmp_path, caplog):
    root, arrays = h5_root
    out = tmp_path / "out"
    prepare_la(root, out, num_labeled=3, num_validation=2)
    datalist_bytes = (out / "datalist.json").read_bytes()
    mtimes = {p: p.stat().st_mtime_ns for p in _nifti_files(out)}

    with caplog.at_level(logging.INFO, logger="sasnet_components.data.la"):
        prepare_la(root, out, num_labeled=3, num_validation=2)
    assert "0 written, 11 skipped" in caplog.text
    assert (out / "datalist.json").read_bytes() == datalist_bytes
    assert {p: p.stat().st_mtime_ns for p in _nifti_files(out)} == mtimes

    # a damaged output file is detected by its checksum and rewritten; the rest is skipped
    damaged = out / "labelsTr" / "case04.nii.gz"
    damaged.write_bytes(damaged.read_bytes()[:20])
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sasnet_components.data.la"):
        prepare_la(root, out, num_labeled=3, num_validation=2)
    assert "1 written, 10 skipped" in caplog.text
    np.testing.assert_array_equal(_load(damaged)[0], arrays["case04"][1])

    # overwrite=True rewrites every file (mtimes set to 0 beforehand become fresh)
    for p in _nifti_files(out):
        os.utime(p, ns=(0, 0))
    prepare_la(root, out, num_labeled=3, num_validation=2, overwrite=True)
    assert all(p.stat().st_mtime_ns > 0 for p in _nifti_files(out))


def test_h5_rerun_with_other_num_labeled_rewrites_only_the_datalist(h5_root, tmp_path, caplog):
    root, _ = h5_root
    out = tmp_path / "out"
    prepare_la(root, out, num_labeled=3, num_validation=2)
    with caplog.at_level(logging.INFO, logger="sasnet_components.data.la"):
        datalist = prepare_la(root, out, num_labeled=5, num_validation=0)
    assert "0 written, 11 skipped" in caplog.text
    assert [len(datalist[k]) for k in ("labeled", "unlabeled", "validation", "test")] == [5, 5, 0, 1]
    assert json.loads((out / "datalist.json").read_text())["num_labeled"] == 5


@pytest.mark.parametrize("where", ["equal", "inside", "contains"])
def test_refuses_output_overlapping_input(h5_root, where):
    root, _ = h5_root
    out = {"equal": root, "inside": root / "prepared", "contains": root.parent}[where]
    with pytest.raises(ValueError, match="`output_dir` .* must not be, lie inside or contain `input_dir`"):
        prepare_la(root, out, num_labeled=3, num_validation=2)
    assert not (root / "prepared").exists()


def test_missing_input_dir_names_path_and_layouts(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere' does not exist.*community h5 layout.*raw challenge"):
        prepare_la(missing, tmp_path / "out")


def test_input_without_either_layout(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no LA case files.*mri_norm2.h5.*lgemri.nrrd"):
        detect_layout(tmp_path / "empty")


def test_missing_train_list(h5_root, tmp_path):
    root, _ = h5_root
    (root / "train.list").unlink()
    with pytest.raises(FileNotFoundError, match="train.list' does not exist"):
        prepare_la(root, tmp_path / "out", num_labeled=3, num_validation=2)


def test_missing_training_case(h5_root, tmp_path):
    root, _ = h5_root
    _h5_path(root, "case03").unlink()
    with pytest.raises(FileNotFoundError, match="case 'case03' .*case03/mri_norm2.h5"):
        prepare_la(root, tmp_path / "out", num_labeled=3, num_validation=2)


def test_shape_mismatch(h5_root, tmp_path):
    root, _ = h5_root
    _write_h5(_h5_path(root, "case01"), np.zeros(SHAPE, np.float32), np.zeros((20, 18, 7), np.uint8))
    with pytest.raises(ValueError, match=r"case 'case01'.*image \(20, 18, 8\) and label \(20, 18, 7\)"):
        prepare_la(root, tmp_path / "out", num_labeled=3, num_validation=2)


def test_label_values_outside_binary(h5_root, tmp_path):
    root, _ = h5_root
    label = np.zeros(SHAPE, np.uint8)
    label[0, 0, 0] = 2
    _write_h5(_h5_path(root, "case02"), np.zeros(SHAPE, np.float32), label)
    with pytest.raises(ValueError, match=r"case 'case02': label values must be in \{0, 1\}, got \[0, 2\]"):
        prepare_la(root, tmp_path / "out", num_labeled=3, num_validation=2)


@pytest.mark.parametrize(
    "num_labeled, num_validation, match",
    [
        (11, 2, r"`num_labeled` must be an integer in \[1, 10\].*got 11"),
        (0, 2, r"`num_labeled` must be an integer in \[1, 10\].*got 0"),
        (3, 11, r"`num_validation` must be an integer in \[0, 10\].*got 11"),
    ],
)
def test_bad_split_numbers(h5_root, tmp_path, num_labeled, num_validation, match):
    root, _ = h5_root
    with pytest.raises(ValueError, match=match):
        prepare_la(root, tmp_path / "out", num_labeled=num_labeled, num_validation=num_validation)
    assert not (tmp_path / "out").exists()  # checked before anything is written


def test_read_id_list(tmp_path):
    path = tmp_path / "ids.list"
    path.write_text("  a \n\nb\t\n\n")
    assert read_id_list(path) == ["a", "b"]
    path.write_text("a\nb\na\n")
    with pytest.raises(ValueError, match=r"must not repeat ids, got duplicates \['a'\]"):
        read_id_list(path)


def test_build_datalist_overlap_warning():
    # 4 training cases, 3 labeled, 2 validation: case "c" is labeled and validation
    dl = build_datalist(["a", "b", "c", "d"], [], num_labeled=3, num_validation=2)
    assert [e["case_id"] for e in dl["validation"]] == ["c", "d"]
    assert "overlap the labeled ids" in dl["protocol_note"]


def test_cli_script(h5_root, tmp_path):
    root, _ = h5_root
    module = _load_script()
    args = ["--input_dir", str(root), "--output_dir", str(tmp_path / "cli")]
    datalist = module.main(args + ["--num_labeled", "3", "--num_validation", "2", "--overwrite", "False"])
    assert [len(datalist[k]) for k in ("labeled", "unlabeled", "validation", "test")] == [3, 7, 2, 1]
    assert module.parse_args(args + ["--overwrite"]).overwrite is True
    defaults = module.parse_args(["--input_dir", str(root)])
    assert defaults.output_dir == "data/la" and defaults.num_labeled == 16 and defaults.num_validation == 8
    assert defaults.overwrite is False and defaults.seed == 0 and defaults.layout == "auto"


def test_progress_bar_of_the_cases(h5_root, tmp_path, capsys):
    root, _ = h5_root
    prepare_la(root, tmp_path / "quiet", num_labeled=3, num_validation=2)
    assert "preparing" not in capsys.readouterr().err  # off by default
    prepare_la(root, tmp_path / "bar", num_labeled=3, num_validation=2, progress=True)
    err = capsys.readouterr().err
    assert "preparing:   0%|" in err and " 0/11 [" in err  # 10 train.list + 1 test.list cases
    module = _load_script()
    args = ["--input_dir", str(root)]
    assert module.parse_args(args).progress is False  # auto, and stderr is not a terminal here
    assert module.parse_args(args + ["--progress", "true"]).progress is True
    with pytest.raises(SystemExit):
        module.parse_args(args + ["--progress", "sometimes"])
    assert "`progress` must be auto, true or false" in capsys.readouterr().err


def _break_case03_and_case05(root: Path, arrays) -> None:
    """case03: not an h5 file; case05: 3 * 2 * 2 = 12 NaN voxels in its image."""
    _h5_path(root, "case03").write_bytes(b"not an h5 file" * 10)
    image = arrays["case05"][0].copy()
    image[0:3, 0:2, 0:2] = np.nan
    _write_h5(_h5_path(root, "case05"), image, arrays["case05"][1])


def test_unreadable_and_non_finite_cases_are_refused_the_others_prepared(h5_root, tmp_path, caplog):
    root, arrays = h5_root
    _break_case03_and_case05(root, arrays)
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="sasnet_components.data.la"):
        with pytest.raises(ValueError) as info:
            prepare_la(root, out, num_labeled=3, num_validation=2)
    message = str(info.value)
    corrupt = re.escape(str(_h5_path(root.resolve(), "case03")))
    assert message.startswith("2 of 11 cases refused, datalist.json not written: ")
    assert re.search(rf"case 'case03': cannot read '{corrupt}': .*signature.* \(OSError\)", message)
    assert "case 'case05': image has 12 non-finite voxels (12 NaN, 0 infinite) of 2880" in message
    assert "remove their ids from train.list / test.list" in message
    # each refusal is also logged when it happens; the other 9 cases are prepared and recorded
    logged = "\n".join(f"{r.levelname} {r.message}" for r in caplog.records)
    assert re.search(r"ERROR case case05 \(train\) refused: case 'case05': image has 12 non-finite", logged)
    others = sorted(set(IDS[:11]) - {"case03", "case05"})
    assert sorted(json.loads((out / "manifest.json").read_text())["cases"]) == others
    assert sorted(p.name[: -len(".nii.gz")] for p in _nifti_files(out) if p.parent.name.startswith("images")) == others
    assert not (out / "datalist.json").exists()  # no protocol list silently short of a case

    # once the sources are fixed, a re-run prepares only these two and writes the datalist
    for case_id in ("case03", "case05"):
        _write_h5(_h5_path(root, case_id), *arrays[case_id])
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sasnet_components.data.la"):
        datalist = prepare_la(root, out, num_labeled=3, num_validation=2)
    assert "2 written, 9 skipped" in caplog.text
    assert [len(datalist[k]) for k in ("labeled", "unlabeled", "validation", "test")] == [3, 7, 2, 1]


def test_cli_ends_with_the_refused_cases_and_a_nonzero_exit(h5_root, tmp_path, capsys):
    root, arrays = h5_root
    _break_case03_and_case05(root, arrays)
    script = _load_script()
    with pytest.raises(SystemExit) as info:
        script.main(["--input_dir", str(root), "--output_dir", str(tmp_path / "out"), "--num_labeled", "3"])
    assert info.value.code == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.match(r"prepare_la.py: error: 2 of 11 cases refused, datalist.json not written: .*case03.*case05", last)
    # a mistake in the arguments ends the same way, without a traceback
    with pytest.raises(SystemExit) as info:
        script.main(["--input_dir", str(tmp_path / "nowhere"), "--output_dir", str(tmp_path / "out")])
    assert info.value.code == 1
    last = capsys.readouterr().err.splitlines()[-1]
    assert re.match(r"prepare_la.py: error: `input_dir` '.*nowhere' does not exist", last)


def test_a_datalist_not_written_by_prepare_la_is_refused(h5_root, tmp_path):
    root, _ = h5_root
    out = tmp_path / "out"
    out.mkdir()
    datalist_path = out / "datalist.json"
    datalist_path.write_text('{"mine": true}\n')
    refusal = rf"'{re.escape(str(datalist_path))}' exists and was not written by prepare_la.*--overwrite"
    with pytest.raises(FileExistsError, match=refusal):
        prepare_la(root, out, num_labeled=3, num_validation=2)
    assert datalist_path.read_text() == '{"mine": true}\n'
    assert not (out / "imagesTr").exists()  # refused before any case is written
    prepare_la(root, out, num_labeled=3, num_validation=2, overwrite=True)
    assert json.loads(datalist_path.read_text())["num_labeled"] == 3
    # its own datalist (SHA-256 in the manifest) is replaced without --overwrite ...
    prepare_la(root, out, num_labeled=5, num_validation=2)
    assert json.loads(datalist_path.read_text())["num_labeled"] == 5
    # ... but not once someone has edited it
    datalist_path.write_text(datalist_path.read_text().replace('"num_labeled": 5', '"num_labeled": 4'))
    with pytest.raises(FileExistsError, match="exists and was not written by prepare_la"):
        prepare_la(root, out, num_labeled=3, num_validation=2)
    assert json.loads(datalist_path.read_text())["num_labeled"] == 4


# ---------------------------------------------------------------------------------------------
# raw layout
# ---------------------------------------------------------------------------------------------


def _zscore(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return ((x - x.mean()) / x.std()).astype(np.float32)


def test_preprocess_raw_small_image_is_clipped_to_the_image():
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 200, size=(60, 50, 6)).astype(np.uint8)
    laendo = np.zeros((60, 50, 6), np.uint8)
    laendo[20:30, 15:25, 2:4] = 255
    laendo[0, 0, 0] = 1  # not 255: background after binarisation
    image, label, box = preprocess_raw_case(raw, laendo, np.random.default_rng(0), return_box=True)
    # x: lo=20, hi=29, extent 9 -> pad (112 - 9) // 2 = 51 -> [20-51-m, 29+51+m) clipped to [0, 60)
    # y: lo=15, hi=24 -> [0, 50); the whole in-plane image is kept and z is untouched
    assert box == ((0, 60), (0, 50))
    assert image.shape == (60, 50, 6) and image.dtype == np.float32
    np.testing.assert_allclose(image, _zscore(raw), rtol=0, atol=1e-6)
    assert abs(float(image.mean())) < 1e-5 and abs(float(image.std()) - 1.0) < 1e-5
    assert label.dtype == np.uint8
    np.testing.assert_array_equal(label, (laendo == 255).astype(np.uint8))


def test_preprocess_raw_crop_uses_raw_volume_statistics():
    rng = np.random.default_rng(2)
    raw = rng.integers(0, 1000, size=(160, 160, 4)).astype(np.int16)
    laendo = np.zeros(raw.shape, np.uint8)
    laendo[70:90, 75:85, 1:3] = 255
    image, label, ((x0, x1), (y0, y1)) = preprocess_raw_case(raw, laendo, np.random.default_rng(5), return_box=True)
    # x: lo=70, hi=89, extent 19, pad (112-19)//2 = 46 -> x0 = 24 - m in [5, 14], x1 = 135 + m in [145, 154]
    # y: lo=75, hi=84, extent 9,  pad (112-9)//2 = 51  -> y0 = 24 - m in [5, 14], y1 = 135 + m in [145, 154]
    assert 5 <= x0 <= 14 and 145 <= x1 <= 154 and 5 <= y0 <= 14 and 145 <= y1 <= 154
    np.testing.assert_allclose(image, _zscore(raw)[x0:x1, y0:y1], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(label, (laendo[x0:x1, y0:y1] == 255).astype(np.uint8))
    assert image.shape == (x1 - x0, y1 - y0, 4)  # z not cropped
    # the cropped image is not re-normalised: its mean is that of the crop in raw statistics
    assert abs(float(image.mean()) - float(_zscore(raw)[x0:x1, y0:y1].mean())) < 1e-5
    # same draws replayed by hand: x low, x high, y low, y high, each integers(10, 20)
    replay_rng = np.random.default_rng(5)
    replay = [int(replay_rng.integers(10, 20)) for _ in range(4)]
    assert (x0, x1, y0, y1) == (24 - replay[0], 135 + replay[1], 24 - replay[2], 135 + replay[3])


def test_label_crop_box_margins_cover_10_to_19_and_no_widening_when_wide():
    label = np.zeros((300, 300, 1), np.uint8)
    label[100:221, 140:160, 0] = 1  # x extent 220 - 100 = 120 >= 112: no widening
    rng = np.random.default_rng(0)
    lows, highs = set(), set()
    for _ in range(300):
        (x0, x1), _ = label_crop_box(label, rng)
        lows.add(100 - x0)
        highs.add(x1 - 220)
    assert lows == set(range(10, 20)) and highs == set(range(10, 20))
    # clipping at the image border: foreground touching index 0 keeps x0 = 0
    edge = np.zeros((50, 300, 1), np.uint8)
    edge[0:5, 140:160, 0] = 1
    (x0, x1), _ = label_crop_box(edge, np.random.default_rng(0))
    assert (x0, x1) == (0, 50)


def test_preprocess_raw_bad_input():
    with pytest.raises(ValueError, match=r"same shape, got image \(4, 4, 2\) and label \(4, 4, 3\)"):
        preprocess_raw_case(np.zeros((4, 4, 2)), np.zeros((4, 4, 3)), np.random.default_rng(0))
    laendo = np.eye(4, dtype=np.uint8)[..., None].repeat(2, axis=2)  # values 0 and 1, no 255
    with pytest.raises(ValueError, match=r"must contain atrium voxels of value 255, got values \[0, 1\]"):
        preprocess_raw_case(np.arange(32.0).reshape(4, 4, 2), laendo, np.random.default_rng(0))


def _write_raw_case(folder: Path, seed: int, spacing: float = 0.7, shape=(160, 160, 4)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 255, size=shape).astype(np.uint8)
    laendo = np.zeros(shape, np.uint8)
    laendo[70 + seed : 90 + seed, 75:85, 1:3] = 255
    folder.mkdir(parents=True, exist_ok=True)
    header = {"space": "left-posterior-superior", "space directions": np.diag([spacing, spacing, spacing])}
    nrrd.write(str(folder / "lgemri.nrrd"), raw, header)
    nrrd.write(str(folder / "laendo.nrrd"), laendo, header)
    return raw


def test_raw_layout_without_lists(tmp_path, caplog):
    root = tmp_path / "raw"
    raws = {f"r{i}": _write_raw_case(root / "Training Set" / f"r{i}", i) for i in (2, 0, 1)}
    assert detect_layout(root) == "raw"
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="sasnet_components.data.la"):
        datalist = prepare_la(root, out, num_labeled=1, num_validation=1, seed=3)
    assert "no train.list" in caplog.text and "reproducible" in caplog.text
    assert datalist["source_layout"] == "raw"
    np.testing.assert_allclose(datalist["spacing"], [0.7, 0.7, 0.7])
    # all case folders, sorted, are training cases
    assert [e["case_id"] for e in datalist["labeled"] + datalist["unlabeled"]] == ["r0", "r1", "r2"]
    assert [e["case_id"] for e in datalist["validation"]] == ["r2"] and datalist["test"] == []
    manifest = json.loads((out / "manifest.json").read_text())["cases"]
    for case_id, raw in raws.items():
        (x0, x1), (y0, y1) = manifest[case_id]["crop_box"]
        image, affine = _load(out / "imagesTr" / f"{case_id}.nii.gz")
        label, _ = _load(out / "labelsTr" / f"{case_id}.nii.gz")
        np.testing.assert_allclose(image, _zscore(raw)[x0:x1, y0:y1], rtol=0, atol=1e-6)
        assert label.dtype == np.uint8 and set(np.unique(label).tolist()) == {0, 1}
        np.testing.assert_allclose(affine, np.diag([0.7, 0.7, 0.7, 1.0]))

    # reproducible: same seed -> identical files; another seed -> other crop boxes
    prepare_la(root, tmp_path / "same", num_labeled=1, num_validation=1, seed=3)
    prepare_la(root, tmp_path / "other", num_labeled=1, num_validation=1, seed=4)
    for case_id in raws:
        for sub in ("imagesTr", "labelsTr"):
            a, _ = _load(out / sub / f"{case_id}.nii.gz")
            b, _ = _load(tmp_path / "same" / sub / f"{case_id}.nii.gz")
            np.testing.assert_array_equal(a, b)
    other = json.loads((tmp_path / "other" / "manifest.json").read_text())["cases"]
    assert [other[i]["crop_box"] for i in raws] != [manifest[i]["crop_box"] for i in raws]

    # a changed seed invalidates the cached cases of an existing output folder
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sasnet_components.data.la"):
        prepare_la(root, out, num_labeled=1, num_validation=1, seed=4)
    assert "3 written, 0 skipped" in caplog.text


def test_raw_layout_with_lists_and_default_spacing(tmp_path):
    root = tmp_path / "raw"
    for i in (0, 1, 2):
        _write_raw_case(root / f"r{i}", i)
    # a case without a spacing in its header gets 0.625 mm
    nrrd.write(str(root / "r0" / "lgemri.nrrd"), nrrd.read(str(root / "r0" / "lgemri.nrrd"))[0])
    (root / "train.list").write_text("r1\nr0\n")
    (root / "test.list").write_text("r2\nr9\n")
    out = tmp_path / "out"
    datalist = prepare_la(root, out, num_labeled=1, num_validation=1)
    assert [e["case_id"] for e in datalist["labeled"]] == ["r1"]
    assert [e["case_id"] for e in datalist["unlabeled"]] == ["r0"]
    assert datalist["test"] == [{"case_id": "r2", "image": "imagesTs/r2.nii.gz", "label": "labelsTs/r2.nii.gz"}]
    np.testing.assert_allclose(_load(out / "imagesTr" / "r0.nii.gz")[1], np.diag([0.625, 0.625, 0.625, 1.0]))
    np.testing.assert_allclose(_load(out / "imagesTr" / "r1.nii.gz")[1], np.diag([0.7, 0.7, 0.7, 1.0]))


def test_raw_layout_shape_mismatch(tmp_path):
    root = tmp_path / "raw"
    _write_raw_case(root / "r0", 0)
    nrrd.write(str(root / "r0" / "laendo.nrrd"), np.zeros((160, 160, 3), np.uint8))
    with pytest.raises(ValueError, match=r"case 'r0'.*image \(160, 160, 4\) and label \(160, 160, 3\)"):
        prepare_la(root, tmp_path / "out", num_labeled=1, num_validation=0)


def test_detect_layout_prefers_h5(h5_root):
    root, _ = h5_root
    assert detect_layout(root) == "h5"


def test_raw_case_with_non_finite_voxels_is_refused(tmp_path):
    root = tmp_path / "raw"
    _write_raw_case(root / "r0", 0)
    raw = _write_raw_case(root / "r1", 1).astype(np.float32)
    raw[0, 0, 0:2] = np.nan
    raw[1, 0, 0] = -np.inf  # 2 NaN + 1 infinite
    nrrd.write(str(root / "r1" / "lgemri.nrrd"), raw)
    message = r"1 of 2 cases refused.*case 'r1': image has 3 non-finite voxels \(2 NaN, 1 infinite\)"
    with pytest.raises(ValueError, match=message):
        prepare_la(root, tmp_path / "out", num_labeled=1, num_validation=0)
    assert (tmp_path / "out" / "imagesTr" / "r0.nii.gz").is_file()
