"""Tests of the shared data-preparation core (``sasnet_components.data.prepare``).

``test_la_outputs_are_unchanged_*`` pin every file that :func:`~sasnet_components.data.la.prepare_la`
writes for small synthetic h5 and raw nrrd inputs (SHA-256 of each NIfTI file and of the datalist,
and the manifest's case records without absolute paths and mtimes), as they were before LA
preparation moved onto the core.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pytest

from sasnet_components.data import make_synthetic_la
from sasnet_components.data.la import prepare_la
from sasnet_components.data.prepare import CaseData, CaseReader, CaseSource, prepare_cases, read_id_lists
from sasnet_components.utils.errors import MissingInputError

# expected outputs of prepare_la for _prepare_h5 / _prepare_raw, recorded before the refactoring
_H5_FILES = {'datalist.json': '282515f9f950aadd5fec50bb757f06d39fde81a6f4adaba578ff55fa42f05ac7',
 'imagesTr/SYN000.nii.gz': 'a9270354d1f0b6b1eec1a31b5c86e00e9e8fa1be31ae6968361063d42a196135',
 'imagesTr/SYN001.nii.gz': 'afb85a1797f09cdda6423d18a9b29ec49df39d894bda489d878cb3197bddef38',
 'imagesTr/SYN002.nii.gz': 'b8d4d38e6746e0869018681ed14e25bec4354eafd25aaa1fae07436f6c0d9071',
 'imagesTr/SYN003.nii.gz': 'a46f78f3ce432135727a56db57566b0515c560724b906635da6395dc3699ff76',
 'imagesTr/SYN004.nii.gz': 'ca3a13fdcdbcf5e2cbe363a4dba83a2c261f7b9865bfcd94f08b12ae20085e8a',
 'imagesTs/SYN005.nii.gz': '12af5c8b4bcc213e76c9af71605037a38ab3d0907fe225962a85f5c1a6b787cd',
 'imagesTs/SYN006.nii.gz': '7b96dedc60f40431caf4f2e12675992d4eee10077941155115ed55738e4d3215',
 'labelsTr/SYN000.nii.gz': 'd960e73828f4777bbf8d93add36d09104d9737e85859355261d7f3be7258ac4e',
 'labelsTr/SYN001.nii.gz': 'fe956cd66442e840f8365e92b91acfe9b4f427f020b513a9abe14ecf0628f985',
 'labelsTr/SYN002.nii.gz': '8bfd98df0b0d86e7ed4141aade48ac47af607fd47124724e115f9b5f2dd432b4',
 'labelsTr/SYN003.nii.gz': '56c57018dfbf958b9cee0583b9371874876d31730470001ee4db4382717ea5f0',
 'labelsTr/SYN004.nii.gz': 'c16e4ce9f4d96c0ad658cf5153abedc9bc97d785c1b4e032b3531b0d771d0ac9',
 'labelsTs/SYN005.nii.gz': 'b85e69b88c653a60ad83127998d0db2ab49ad2d2e0fc0b329a36e494fd703410',
 'labelsTs/SYN006.nii.gz': 'dddd9ad10e10c652243116d740ef9f257faf49e83f7d52a395954f298a330e0b'}
_H5_RECORDS = {'SYN000': {'split': 'train',
            'source_layout': 'h5',
            'source_size': 21248,
            'image': 'imagesTr/SYN000.nii.gz',
            'label': 'labelsTr/SYN000.nii.gz',
            'shape': [24, 20, 8],
            'spacing': [0.625, 0.625, 0.625],
            'image_sha256': 'a9270354d1f0b6b1eec1a31b5c86e00e9e8fa1be31ae6968361063d42a196135',
            'label_sha256': 'd960e73828f4777bbf8d93add36d09104d9737e85859355261d7f3be7258ac4e'},
 'SYN001': {'split': 'train',
            'source_layout': 'h5',
            'source_size': 21248,
            'image': 'imagesTr/SYN001.nii.gz',
            'label': 'labelsTr/SYN001.nii.gz',
            'shape': [24, 20, 8],
            'spacing': [0.625, 0.625, 0.625],
            'image_sha256': 'afb85a1797f09cdda6423d18a9b29ec49df39d894bda489d878cb3197bddef38',
            'label_sha256': 'fe956cd66442e840f8365e92b91acfe9b4f427f020b513a9abe14ecf0628f985'},
 'SYN002': {'split': 'train',
            'source_layout': 'h5',
            'source_size': 21248,
            'image': 'imagesTr/SYN002.nii.gz',
            'label': 'labelsTr/SYN002.nii.gz',
            'shape': [24, 20, 8],
            'spacing': [0.625, 0.625, 0.625],
            'image_sha256': 'b8d4d38e6746e0869018681ed14e25bec4354eafd25aaa1fae07436f6c0d9071',
            'label_sha256': '8bfd98df0b0d86e7ed4141aade48ac47af607fd47124724e115f9b5f2dd432b4'},
 'SYN003': {'split': 'train',
            'source_layout': 'h5',
            'source_size': 21248,
            'image': 'imagesTr/SYN003.nii.gz',
            'label': 'labelsTr/SYN003.nii.gz',
            'shape': [24, 20, 8],
            'spacing': [0.625, 0.625, 0.625],
            'image_sha256': 'a46f78f3ce432135727a56db57566b0515c560724b906635da6395dc3699ff76',
            'label_sha256': '56c57018dfbf958b9cee0583b9371874876d31730470001ee4db4382717ea5f0'},
 'SYN004': {'split': 'train',
            'source_layout': 'h5',
            'source_size': 21248,
            'image': 'imagesTr/SYN004.nii.gz',
            'label': 'labelsTr/SYN004.nii.gz',
            'shape': [24, 20, 8],
            'spacing': [0.625, 0.625, 0.625],
            'image_sha256': 'ca3a13fdcdbcf5e2cbe363a4dba83a2c261f7b9865bfcd94f08b12ae20085e8a',
            'label_sha256': 'c16e4ce9f4d96c0ad658cf5153abedc9bc97d785c1b4e032b3531b0d771d0ac9'},
 'SYN005': {'split': 'test',
            'source_layout': 'h5',
            'source_size': 21248,
            'image': 'imagesTs/SYN005.nii.gz',
            'label': 'labelsTs/SYN005.nii.gz',
            'shape': [24, 20, 8],
            'spacing': [0.625, 0.625, 0.625],
            'image_sha256': '12af5c8b4bcc213e76c9af71605037a38ab3d0907fe225962a85f5c1a6b787cd',
            'label_sha256': 'b85e69b88c653a60ad83127998d0db2ab49ad2d2e0fc0b329a36e494fd703410'},
 'SYN006': {'split': 'test',
            'source_layout': 'h5',
            'source_size': 21248,
            'image': 'imagesTs/SYN006.nii.gz',
            'label': 'labelsTs/SYN006.nii.gz',
            'shape': [24, 20, 8],
            'spacing': [0.625, 0.625, 0.625],
            'image_sha256': '7b96dedc60f40431caf4f2e12675992d4eee10077941155115ed55738e4d3215',
            'label_sha256': 'dddd9ad10e10c652243116d740ef9f257faf49e83f7d52a395954f298a330e0b'}}
_RAW_FILES = {'datalist.json': 'da5f82cec025141f1861d5f80b545f52fd0c3d0c1d0bba8634dd99ad172791fb',
 'imagesTr/r0.nii.gz': 'ff2e1e1ae957be157f32f54bdd06f22b560888c5b9ef01502684222428348926',
 'imagesTr/r1.nii.gz': 'bdc4f471d2bf4b85df7982883b1f10860a6bd6902e3dccb9a21fbc60dfa6535d',
 'imagesTr/r2.nii.gz': '13b441fe9afdaa00c01fc04aff3b261f21f715f141a4ce07762bcd6ac432f367',
 'imagesTs/t0.nii.gz': 'b6e50693d05243afe3a4e290dbf0b7ffe245dee2bacb3b8457239166a5f36961',
 'labelsTr/r0.nii.gz': '3fdf80f3041330e0375f14ffb37e456af82227ef30de7f786f203a44312b3a1c',
 'labelsTr/r1.nii.gz': '61d43fa505c65df43caeb011621ca2c31c974a1413bfd1456bd10bc7369cd1e0',
 'labelsTr/r2.nii.gz': '0501a9466595c3c7d6455d8cbd84bace06df37ccee6af83610cbcfd6bde10dd4',
 'labelsTs/t0.nii.gz': '70d6673b5c95e386070ed2791eda73a2889db533fe72410022719b8949489ea1'}
_RAW_RECORDS = {'r2': {'split': 'train',
        'source_layout': 'raw',
        'source_size': 84557,
        'image': 'imagesTr/r2.nii.gz',
        'label': 'labelsTr/r2.nii.gz',
        'seed': 5,
        'raw_shape': [170, 165, 3],
        'crop_box': [[0, 140], [2, 143]],
        'shape': [140, 141, 3],
        'spacing': [0.8, 0.8, 0.8],
        'image_sha256': '13b441fe9afdaa00c01fc04aff3b261f21f715f141a4ce07762bcd6ac432f367',
        'label_sha256': '0501a9466595c3c7d6455d8cbd84bace06df37ccee6af83610cbcfd6bde10dd4'},
 'r0': {'split': 'train',
        'source_layout': 'raw',
        'source_size': 84557,
        'image': 'imagesTr/r0.nii.gz',
        'label': 'labelsTr/r0.nii.gz',
        'seed': 5,
        'raw_shape': [170, 165, 3],
        'crop_box': [[0, 142], [9, 144]],
        'shape': [142, 135, 3],
        'spacing': [0.7, 0.7, 0.7],
        'image_sha256': 'ff2e1e1ae957be157f32f54bdd06f22b560888c5b9ef01502684222428348926',
        'label_sha256': '3fdf80f3041330e0375f14ffb37e456af82227ef30de7f786f203a44312b3a1c'},
 'r1': {'split': 'train',
        'source_layout': 'raw',
        'source_size': 84557,
        'image': 'imagesTr/r1.nii.gz',
        'label': 'labelsTr/r1.nii.gz',
        'seed': 5,
        'raw_shape': [170, 165, 3],
        'crop_box': [[0, 141], [1, 140]],
        'shape': [141, 139, 3],
        'spacing': [0.7, 0.7, 0.7],
        'image_sha256': 'bdc4f471d2bf4b85df7982883b1f10860a6bd6902e3dccb9a21fbc60dfa6535d',
        'label_sha256': '61d43fa505c65df43caeb011621ca2c31c974a1413bfd1456bd10bc7369cd1e0'},
 't0': {'split': 'test',
        'source_layout': 'raw',
        'source_size': 84557,
        'image': 'imagesTs/t0.nii.gz',
        'label': 'labelsTs/t0.nii.gz',
        'seed': 5,
        'raw_shape': [170, 165, 3],
        'crop_box': [[4, 146], [1, 146]],
        'shape': [142, 145, 3],
        'spacing': [0.7, 0.7, 0.7],
        'image_sha256': 'b6e50693d05243afe3a4e290dbf0b7ffe245dee2bacb3b8457239166a5f36961',
        'label_sha256': '70d6673b5c95e386070ed2791eda73a2889db533fe72410022719b8949489ea1'}}

# manifest fields that depend on where and when the test runs
_VOLATILE = ("source", "source_mtime_ns")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _digests(out: Path) -> tuple[dict[str, str], dict[str, dict]]:
    """SHA-256 of every output file but the manifest, and the manifest's case records without volatile fields."""
    files = {p.relative_to(out).as_posix(): _sha256(p) for p in sorted(out.rglob("*")) if p.is_file()}
    files.pop("manifest.json")
    manifest = json.loads((out / "manifest.json").read_text())
    records = {k: {f: v for f, v in r.items() if f not in _VOLATILE} for k, r in manifest["cases"].items()}
    return files, records


def _prepare_h5(root: Path) -> Path:
    raw = make_synthetic_la(str(root / "h5"), num_train=5, num_test=2, shape=(24, 20, 8), seed=3)
    out = root / "out"
    prepare_la(raw, out, num_labeled=2, num_validation=1)
    return out


def _write_raw_case(folder: Path, seed: int, spacing: float, shape=(170, 165, 3)) -> None:
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 255, size=shape).astype(np.uint8)
    laendo = np.zeros(shape, np.uint8)
    laendo[60 + seed : 80 + seed, 70:80, 1:3] = 255
    folder.mkdir(parents=True, exist_ok=True)
    header = {"space": "left-posterior-superior", "space directions": np.diag([spacing, spacing, spacing])}
    nrrd.write(str(folder / "lgemri.nrrd"), raw, header)
    nrrd.write(str(folder / "laendo.nrrd"), laendo, header)


def _prepare_raw(root: Path) -> Path:
    src = root / "raw"
    for i in range(4):
        _write_raw_case(src / "Training Set" / f"r{i}", i, 0.7 if i != 2 else 0.8)
    _write_raw_case(src / "Testing Set" / "t0", 7, 0.7)
    (src / "train.list").write_text("r2\nr0\nr1\n")
    (src / "test.list").write_text("t0\nt9\n")
    out = root / "out"
    prepare_la(src, out, num_labeled=1, num_validation=1, seed=5)
    return out


def test_la_outputs_are_unchanged_h5(tmp_path):
    files, records = _digests(_prepare_h5(tmp_path))
    assert files == _H5_FILES
    assert records == _H5_RECORDS


def test_la_outputs_are_unchanged_raw(tmp_path):
    files, records = _digests(_prepare_raw(tmp_path))
    assert files == _RAW_FILES
    assert records == _RAW_RECORDS


# ---------------------------------------------------------------------------------------------
# the core with a tiny reader: <root>/<id>/image.npy (+ label.npy), 1 mm, shape (2, 3, 4)
# ---------------------------------------------------------------------------------------------


class NpyReader(CaseReader):
    """Cases ``<root>/<id>/image.npy`` and optional ``label.npy``; ``scale`` multiplies the image."""

    name, layout = "Toy", "npy"

    def __init__(self, scale: float = 1.0, affine=None) -> None:
        self.scale = scale
        self.affine = affine

    @property
    def parameters(self):
        return {"scale": self.scale}

    def default_ids(self, root):
        return sorted(p.name for p in root.iterdir() if p.is_dir()), []

    def find_cases(self, root, train_ids, test_ids):
        sources, missing = [], []
        for split, ids in (("train", train_ids), ("test", test_ids)):
            for case_id in ids:
                folder = root / case_id
                if (folder / "image.npy").is_file():
                    stamp = tuple(p for p in (folder / "image.npy", folder / "label.npy") if p.is_file())
                    sources.append(CaseSource(case_id, split, folder, stamp=stamp))
                elif split == "train":
                    raise MissingInputError(f"case '{case_id}': expected '{folder / 'image.npy'}'.")
                else:
                    missing.append(case_id)
        return sources, missing

    def read_case(self, source):
        image = np.load(source.path / "image.npy") * self.scale
        label_path = source.path / "label.npy"
        label = np.load(label_path) if label_path.is_file() else None
        return CaseData(image, label, (1.0, 2.0, 3.0), {"mean": float(image.mean())}, self.affine)


TOY_SHAPE = (2, 3, 4)


def _toy_case(root: Path, case_id: str, value: float, label: bool = True) -> None:
    folder = root / case_id
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "image.npy", np.full(TOY_SHAPE, value, np.float32))
    if label:
        np.save(folder / "label.npy", (np.arange(24).reshape(TOY_SHAPE) % 2).astype(np.uint8))


@pytest.fixture
def toy(tmp_path):
    """Cases a, b, c, d (image value 0, 1, 2, 3); d is kept for the test split."""
    root = tmp_path / "toy"
    for i, case_id in enumerate("abcd"):
        _toy_case(root, case_id, float(i))
    return root, tmp_path / "out"


def _run(root, out, reader=None, train=("a", "b", "c"), test=("d", "z"), **kwargs):
    kwargs = {"num_labeled": 1, "num_validation": 1, **kwargs}
    train, test = (None if ids is None else list(ids) for ids in (train, test))
    return prepare_cases(reader or NpyReader(), root, out, train, test, **kwargs)


def _mtimes(out: Path) -> dict[str, int]:
    return {p.relative_to(out).as_posix(): p.stat().st_mtime_ns for p in out.glob("*/*.nii.gz")}


def test_core_writes_cases_manifest_and_datalist(toy):
    root, out = toy
    datalist = _run(root, out)
    assert datalist == json.loads((out / "datalist.json").read_text())
    assert datalist["name"] == "Toy" and datalist["source_layout"] == "npy" and datalist["spacing"] == [1.0, 2.0, 3.0]
    assert [e["case_id"] for e in datalist["labeled"]] == ["a"]
    assert [e["case_id"] for e in datalist["unlabeled"]] == ["b", "c"]
    assert datalist["validation"] == [{"case_id": "c", "image": "imagesTr/c.nii.gz", "label": "labelsTr/c.nii.gz"}]
    assert datalist["test"] == [{"case_id": "d", "image": "imagesTs/d.nii.gz", "label": "labelsTs/d.nii.gz"}]
    assert "test = the 1 of 2 test.list ids whose data is present" in datalist["protocol_note"]
    image = nib.load(str(out / "imagesTr" / "b.nii.gz"))
    np.testing.assert_array_equal(np.asanyarray(image.dataobj), np.ones(TOY_SHAPE, np.float32))
    np.testing.assert_allclose(image.affine, np.diag([1.0, 2.0, 3.0, 1.0]))
    record = json.loads((out / "manifest.json").read_text())["cases"]["b"]
    folder = root.resolve() / "b"
    assert record["source"] == str(folder) and record["source_layout"] == "npy"
    # two stamp files: sizes and mtimes as lists, in order
    assert record["source_size"] == [(folder / "image.npy").stat().st_size, (folder / "label.npy").stat().st_size]
    assert record["scale"] == 1.0 and record["mean"] == 1.0  # parameters, then the reader's extra fields
    assert record["shape"] == [2, 3, 4] and record["spacing"] == [1.0, 2.0, 3.0]
    assert record["image_sha256"] == _sha256(out / "imagesTr" / "b.nii.gz")
    assert record["label_sha256"] == _sha256(out / "labelsTr" / "b.nii.gz")


def test_core_refused_case_is_named_and_the_others_are_written(toy):
    root, out = toy
    (root / "b" / "image.npy").write_bytes(b"not a npy file")
    with pytest.raises(ValueError) as info:
        _run(root, out)
    message = str(info.value)
    # the reader's message does not name the case: the core adds it
    assert message.startswith(f"1 of 4 cases refused, datalist.json not written: case 'b' ('{root.resolve() / 'b'}'): ")
    assert "remove their ids from train.list / test.list" in message
    assert sorted(_mtimes(out)) == [
        "imagesTr/a.nii.gz", "imagesTr/c.nii.gz", "imagesTs/d.nii.gz",
        "labelsTr/a.nii.gz", "labelsTr/c.nii.gz", "labelsTs/d.nii.gz",
    ]  # fmt: skip
    assert sorted(json.loads((out / "manifest.json").read_text())["cases"]) == ["a", "c", "d"]
    assert not (out / "datalist.json").exists()


def test_core_non_finite_voxels_are_refused_naming_the_case(toy):
    root, out = toy
    image = np.zeros(TOY_SHAPE, np.float32)
    image[0, 0, 0] = np.nan
    np.save(root / "c" / "image.npy", image)
    expected = f"case 'c': image has 1 non-finite voxel (1 NaN, 0 infinite) of 24 in '{root.resolve() / 'c'}'"
    with pytest.raises(ValueError, match=re.escape(f"1 of 4 cases refused, datalist.json not written: {expected}")):
        _run(root, out)
    assert (out / "imagesTr" / "a.nii.gz").is_file() and not (out / "imagesTr" / "c.nii.gz").exists()


def test_core_label_shape_is_checked(toy):
    root, out = toy
    np.save(root / "a" / "label.npy", np.zeros((2, 3, 5), np.uint8))
    with pytest.raises(ValueError, match=r"case 'a': label shape \(2, 3, 5\) must be the image's spatial shape"):
        _run(root, out)


def test_core_rerun_skips_complete_cases_and_rewrites_changed_ones(toy, caplog):
    root, out = toy
    _run(root, out)
    before = _mtimes(out)
    datalist_bytes = (out / "datalist.json").read_bytes()
    with caplog.at_level(logging.INFO, logger="sasnet_components.data.prepare"):
        _run(root, out)
    assert "0 written, 4 skipped" in caplog.text
    assert _mtimes(out) == before and (out / "datalist.json").read_bytes() == datalist_bytes

    # a changed source file (another size / mtime) is read and written again; the others are skipped
    _toy_case(root, "b", 7.0)
    os.utime(root / "b" / "image.npy", ns=(1, 1))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sasnet_components.data.prepare"):
        _run(root, out)
    assert "1 written, 3 skipped" in caplog.text
    np.testing.assert_array_equal(np.asanyarray(nib.load(str(out / "imagesTr" / "b.nii.gz")).dataobj), 7.0)
    assert {k: v for k, v in _mtimes(out).items() if "/b." not in k} == {
        k: v for k, v in before.items() if "/b." not in k
    }

    # a damaged output is rewritten; other reader parameters rewrite every case
    (out / "labelsTs" / "d.nii.gz").write_bytes(b"damaged")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sasnet_components.data.prepare"):
        _run(root, out)
    assert "1 written, 3 skipped" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sasnet_components.data.prepare"):
        _run(root, out, reader=NpyReader(scale=2.0))
    assert "4 written, 0 skipped" in caplog.text


@pytest.mark.parametrize("where", ["equal", "inside", "contains"])
def test_core_refuses_output_overlapping_input(toy, where):
    root, _ = toy
    out = {"equal": root, "inside": root / "prepared", "contains": root.parent}[where]
    with pytest.raises(ValueError, match="`output_dir` .* must not be, lie inside or contain `input_dir`"):
        _run(root, out)
    assert not (root / "prepared").exists() and not (root / "imagesTr").exists()


def test_core_refuses_a_datalist_written_by_someone_else(toy):
    root, out = toy
    out.mkdir()
    (out / "datalist.json").write_text("{}\n")
    with pytest.raises(FileExistsError, match="datalist.json' exists and was not written by prepare_toy"):
        _run(root, out, program="prepare_toy")
    assert (out / "datalist.json").read_text() == "{}\n" and not (out / "imagesTr").exists()
    _run(root, out, overwrite=True)
    assert json.loads((out / "datalist.json").read_text())["name"] == "Toy"
    _run(root, out, num_labeled=2)  # its own datalist is replaced
    assert json.loads((out / "datalist.json").read_text())["num_labeled"] == 2


def test_core_cases_without_label_and_reader_affine(toy):
    root, out = toy
    (root / "b" / "label.npy").unlink()
    affine = np.array([[0.0, 1.0, 0, 5], [2.0, 0, 0, 6], [0, 0, 3.0, 7], [0, 0, 0, 1]])
    datalist = _run(root, out, reader=NpyReader(affine=affine))
    assert datalist["unlabeled"][0] == {"case_id": "b", "image": "imagesTr/b.nii.gz"}
    assert not (out / "labelsTr" / "b.nii.gz").exists()
    record = json.loads((out / "manifest.json").read_text())["cases"]["b"]
    assert record["label"] is None and record["label_sha256"] is None
    np.testing.assert_allclose(nib.load(str(out / "imagesTr" / "a.nii.gz")).affine, affine)
    assert _run(root, out, reader=NpyReader(affine=affine)) == datalist  # skipped, same datalist
    # a labeled (or validation) case must have a label
    with pytest.raises(ValueError, match=r"labeled and validation cases need a label, got none for \['b'\]"):
        _run(root, out / "other", train=("b", "a", "c"))


def test_core_default_ids_and_list_checks(toy):
    root, out = toy
    datalist = _run(root, out, train=None, test=None, num_validation=0)  # the reader's default: a, b, c, d
    assert [e["case_id"] for e in datalist["labeled"] + datalist["unlabeled"]] == ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match=r"ids must not be in both the training and the test list, got \['a'\]"):
        _run(root, out, test=("a",))
    with pytest.raises(FileNotFoundError, match="case 'x': expected"):
        _run(root, out, train=("a", "x"))
    with pytest.raises(ValueError, match=r"`num_labeled` must be an integer in \[1, 3\]"):
        _run(root, tmp := out.parent / "never", num_labeled=4)
    assert not tmp.exists()


def test_read_id_lists(toy):
    root, _ = toy
    reader = NpyReader()
    assert read_id_lists(reader, root) == (["a", "b", "c", "d"], [])  # no list: the reader's default ids
    (root / "train.list").write_text("c\na\n")
    assert read_id_lists(reader, root) == (["c", "a"], [])
    (root / "test.list").write_text("d\n")
    assert read_id_lists(reader, root) == (["c", "a"], ["d"])
    with pytest.raises(FileNotFoundError, match="training id list '.*nowhere.list' does not exist"):
        read_id_lists(reader, root, train_list=root / "nowhere.list")
    with pytest.raises(FileNotFoundError, match="`test_list` '.*nowhere.list' does not exist"):
        read_id_lists(reader, root, test_list=root / "nowhere.list")
    (root / "train.list").unlink()
    with pytest.raises(FileNotFoundError, match="the npy layout needs a train.list"):
        read_id_lists(_NoDefaults(), root)


class _NoDefaults(NpyReader):
    default_ids = CaseReader.default_ids
