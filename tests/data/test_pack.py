"""Tests of the dataset pack (parts + manifest), its unpack, and file chunks."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from sasnet_components.data import decode_image, encode_image, join_file, pack_dataset, split_file, unpack_dataset
from sasnet_components.data.la import build_datalist
from sasnet_components.utils.errors import InvalidInputError, MissingInputError, OutputExistsError

TRAIN = [f"C{i:02d}" for i in range(8)]  # labeled C00-C02, validation C06-C07 (also unlabeled), unlabeled C03-C07
TEST = ["T00"]
SPACING = (0.625, 0.7, 1.25)


def _load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(str(path))
    return np.asarray(img.dataobj), img.affine


def _grid_dataset(root: Path, shape=(12, 10, 8), seed: int = 0) -> Path:
    """A prepared dataset whose images are z-scored integer intensities (a uniform grid of < 256 levels)."""
    rng = np.random.default_rng(seed)
    for case_id in TRAIN + TEST:
        split = "Ts" if case_id in TEST else "Tr"
        raw = rng.integers(0, 150, shape).astype(np.float64)
        image = ((raw - raw.mean()) / raw.std()).astype(np.float32)
        label = (raw > 100).astype(np.uint8)
        for folder, array in ((f"images{split}", image), (f"labels{split}", label)):
            (root / folder).mkdir(parents=True, exist_ok=True)
            img = nib.Nifti1Image(array, np.diag(list(SPACING) + [1.0]))
            img.header.set_xyzt_units("mm")
            nib.save(img, str(root / folder / f"{case_id}.nii.gz"))
    datalist = build_datalist(TRAIN, TEST, num_labeled=3, num_validation=2, spacing=SPACING)
    (root / "datalist.json").write_text(json.dumps(datalist, indent=2))
    return root


@pytest.fixture(scope="module")
def grid_dir(tmp_path_factory) -> Path:
    return _grid_dataset(tmp_path_factory.mktemp("grid") / "prepared")


@pytest.fixture(scope="module")
def grid_pack(grid_dir, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("grid_pack") / "pack"
    return out, pack_dataset(grid_dir, out, workers=2)


def _nii(datalist: dict) -> dict:
    """The datalist with ``.nii.gz`` paths as ``.nii``, as unpack writes them by default."""
    out = json.loads(json.dumps(datalist))
    for role in ("labeled", "unlabeled", "validation", "test"):
        for item in out[role]:
            for key in ("image", "label"):
                item[key] = item[key].replace(".nii.gz", ".nii")
    return out


def _restricted(datalist: dict, ids: set) -> dict:
    out = dict(datalist)
    for role in ("labeled", "unlabeled", "validation", "test"):
        out[role] = [item for item in datalist[role] if item["case_id"] in ids]
    out["num_labeled"] = len(out["labeled"])
    return out


# --- encoding -----------------------------------------------------------------------------------


def test_encode_by_hand():
    """A 2x2x2 volume on the grid -1.25 + 0.25 * k: codes, offset and step as computed by hand."""
    codes = np.array([[[0, 1], [2, 3]], [[4, 8], [12, 255]]], dtype=np.uint8)
    image = (-1.25 + 0.25 * codes.astype(np.float64)).astype(np.float32)
    payload, info = encode_image(image)
    assert info["encoding"] == "grid8" and info["levels"] == 8
    assert info["offset"] == -1.25 and info["step"] == pytest.approx(0.25, abs=1e-12)
    np.testing.assert_array_equal(payload, codes)
    assert info["max_error"] == 0.0
    np.testing.assert_array_equal(decode_image(payload, info), image)


def test_encode_constant_and_grid16():
    payload, info = encode_image(np.full((2, 2, 2), 3.5, np.float32))
    assert info["encoding"] == "grid8" and info["offset"] == 3.5 and payload.max() == 0
    image = (0.1 * np.arange(300, dtype=np.float64) - 7.0).astype(np.float32).reshape(3, 10, 10)
    payload, info = encode_image(image)
    assert info["encoding"] == "grid16" and payload.dtype == np.uint16 and payload.max() == 299
    assert np.abs(decode_image(payload, info) - image).max() < 1e-4


def test_encode_off_grid_falls_back_to_raw():
    image = np.random.default_rng(0).normal(size=(4, 5, 6)).astype(np.float32)
    payload, info = encode_image(image)
    assert info["encoding"] == "raw" and info["max_error"] == 0.0 and info["dtype"] == "<f4"
    assert payload is image


# --- pack / unpack -------------------------------------------------------------------------------


def test_round_trip_on_grid(grid_dir, grid_pack, tmp_path):
    pack_dir, manifest = grid_pack
    assert manifest["raw_cases"] == [] and len(manifest["parts"]) == 1
    result = unpack_dataset(pack_dir, tmp_path / "out", workers=2)
    assert result["missing"] == [] and result["bad_parts"] == {}
    original = json.loads((grid_dir / "datalist.json").read_text())
    written = json.loads((tmp_path / "out" / "datalist.json").read_text())
    assert written == _nii(original)
    for case in manifest["cases"]:
        assert case["image"]["max_error"] < 1e-4
        for key in ("image", "label"):
            before, affine_before = _load(grid_dir / case[key]["path"])
            after, affine_after = _load(tmp_path / "out" / case[key]["path"].replace(".nii.gz", ".nii"))
            assert after.dtype == before.dtype and after.shape == before.shape
            np.testing.assert_array_equal(affine_after, affine_before)
            if key == "label":
                np.testing.assert_array_equal(after, before)
            else:
                assert np.abs(after - before).max() < 1e-4


def test_round_trip_gzip_keeps_the_datalist(grid_dir, grid_pack, tmp_path):
    unpack_dataset(grid_pack[0], tmp_path / "out", gzip=True)
    assert json.loads((tmp_path / "out" / "datalist.json").read_text()) == json.loads(
        (grid_dir / "datalist.json").read_text()
    )
    assert (tmp_path / "out" / "imagesTs" / "T00.nii.gz").is_file()


def test_off_grid_volumes_round_trip_exactly(dataset_dir, tmp_path):
    """The conftest dataset (normal noise, not on a grid) is stored raw and comes back bit for bit."""
    manifest = pack_dataset(dataset_dir, tmp_path / "pack")
    assert sorted(manifest["raw_cases"]) == sorted(c["case_id"] for c in manifest["cases"])
    unpack_dataset(tmp_path / "pack", tmp_path / "out")
    for case in manifest["cases"]:
        assert case["image"]["encoding"] == "raw"
        before, _ = _load(Path(dataset_dir) / case["image"]["path"])
        after, _ = _load(tmp_path / "out" / case["image"]["path"].replace(".nii.gz", ".nii"))
        np.testing.assert_array_equal(after, before)


def test_order_and_part_size(grid_dir, grid_pack, tmp_path):
    lengths = sorted(c["length"] for c in grid_pack[1]["cases"])
    part_mib = (lengths[-1] * 2.5) / 2**20  # two cases per part at most
    manifest = pack_dataset(grid_dir, tmp_path / "pack", part_size_mib=part_mib, name="tiny")
    assert [c["case_id"] for c in manifest["cases"]] == ["C00", "C01", "C02", "C06", "C07", "C03", "C04", "C05", "T00"]
    assert manifest["cases"][3]["roles"] == ["validation", "unlabeled"]
    assert len(manifest["parts"]) >= 4
    for part in manifest["parts"]:
        size = (tmp_path / "pack" / part["file"]).stat().st_size
        assert size == part["size"] <= part_mib * 2**20
    assert manifest["parts"][0]["file"] == "tiny.part01"
    offsets = {}
    for case in manifest["cases"]:
        assert case["offset"] == offsets.get(case["part"], 0)
        offsets[case["part"]] = case["offset"] + case["length"]
    too_small = lengths[-1] / 2 / 2**20
    with pytest.raises(InvalidInputError, match="choose a larger part size"):
        pack_dataset(grid_dir, tmp_path / "pack2", part_size_mib=too_small)


def _small_parts(grid_dir, grid_pack, out) -> dict:
    per_case = max(c["length"] for c in grid_pack[1]["cases"])
    return pack_dataset(grid_dir, out, part_size_mib=per_case * 5.5 / 2**20)  # part 1: labeled + validation


def test_missing_part_gives_the_subset(grid_dir, grid_pack, tmp_path):
    manifest = _small_parts(grid_dir, grid_pack, tmp_path / "pack")
    assert manifest["parts"][0]["cases"] == ["C00", "C01", "C02", "C06", "C07"]
    assert len(manifest["parts"]) == 2
    # part 2 holds the test case: refused, then allowed
    part2 = tmp_path / "pack" / manifest["parts"][1]["file"]
    part2.rename(tmp_path / "elsewhere")
    with pytest.raises(InvalidInputError, match=r"la\.part02: missing.*\['T00'\]"):
        unpack_dataset(tmp_path / "pack", tmp_path / "out")
    result = unpack_dataset(tmp_path / "pack", tmp_path / "out", allow_partial=True)
    assert result["missing"] == ["C03", "C04", "C05", "T00"]
    assert result["bad_parts"] == {"la.part02": "missing"}
    written = json.loads((tmp_path / "out" / "datalist.json").read_text())
    original = json.loads((grid_dir / "datalist.json").read_text())
    assert written == _nii(_restricted(original, {"C00", "C01", "C02", "C06", "C07"}))
    assert not (tmp_path / "out" / "imagesTr" / "C03.nii").exists()
    # only the part files given count; a manifest alone finds the parts next to it
    part2 = (tmp_path / "elsewhere").rename(part2)
    manifest_file = tmp_path / "pack" / "la.manifest.json"
    result = unpack_dataset([manifest_file, tmp_path / "pack" / "la.part01"], tmp_path / "o2", allow_partial=True)
    assert len(result["present"]) == 5 and result["bad_parts"] == {"la.part02": "missing"}
    assert len(unpack_dataset(manifest_file, tmp_path / "o3")["present"]) == 9
    moved = tmp_path / "moved"
    moved.mkdir()
    result = unpack_dataset([manifest_file, tmp_path / "pack" / "la.part01", part2.rename(moved / part2.name)],
                            tmp_path / "o4")
    assert len(result["present"]) == 9


def test_flipped_byte_is_named(grid_dir, grid_pack, tmp_path):
    manifest = _small_parts(grid_dir, grid_pack, tmp_path / "pack")
    part1 = tmp_path / "pack" / "la.part01"
    data = bytearray(part1.read_bytes())
    data[len(data) // 2] ^= 0x01
    part1.write_bytes(bytes(data))
    with pytest.raises(InvalidInputError, match=r"la\.part01: corrupt: SHA-256.*'C00', 'C01', 'C02', 'C06', 'C07'"):
        unpack_dataset(tmp_path / "pack", tmp_path / "out")
    result = unpack_dataset(tmp_path / "pack", tmp_path / "out", allow_partial=True)
    assert result["present"] == manifest["parts"][1]["cases"]
    assert "la.part01" in result["bad_parts"]
    part1.write_bytes(bytes(data[:-3]))  # truncated
    with pytest.raises(InvalidInputError, match="la.part01: corrupt: .* bytes, expected"):
        unpack_dataset(tmp_path / "pack", tmp_path / "out")


def test_unpack_is_idempotent(grid_pack, tmp_path):
    out = tmp_path / "out"
    unpack_dataset(grid_pack[0], out)
    image = out / "imagesTr" / "C04.nii"
    label = out / "labelsTr" / "C04.nii"
    before = image.stat().st_mtime_ns
    os.utime(label, ns=(1, 1))
    label.write_bytes(b"damaged")
    unpack_dataset(grid_pack[0], out)
    assert image.stat().st_mtime_ns == before  # verified, kept
    assert nib.load(str(label)).shape == (12, 10, 8)  # rewritten
    # another pack with the same file names: every file is rewritten from it
    other = _grid_dataset(tmp_path / "other", seed=1)
    pack_dataset(other, tmp_path / "other_pack")
    unpack_dataset(tmp_path / "other_pack", out)
    np.testing.assert_array_equal(_load(out / "labelsTr" / "C04.nii")[0], _load(other / "labelsTr" / "C04.nii.gz")[0])


def test_output_folder_checks(grid_dir, grid_pack, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="not empty"):
        pack_dataset(grid_dir, foreign)
    with pytest.raises(OutputExistsError, match="not empty"):
        unpack_dataset(grid_pack[0], foreign)
    with pytest.raises(InvalidInputError, match="must not be, lie inside or contain"):
        pack_dataset(grid_dir, grid_dir / "pack")
    with pytest.raises(InvalidInputError, match="must not be, lie inside or contain"):
        unpack_dataset(grid_pack[0], grid_pack[0])
    with pytest.raises(MissingInputError, match="datalist"):
        pack_dataset(tmp_path / "foreign", tmp_path / "p")
    with pytest.raises(MissingInputError, match="no pack manifest"):
        unpack_dataset(foreign, tmp_path / "o")
    with pytest.raises(InvalidInputError, match="`name` must be a file name stem"):
        pack_dataset(grid_dir, tmp_path / "p", name="../la")
    # re-packing into its own earlier output is allowed
    pack_dataset(grid_dir, grid_pack[0])


def test_labels_outside_uint8_are_refused(tmp_path):
    root = _grid_dataset(tmp_path / "prepared", shape=(4, 4, 4))
    bad = nib.Nifti1Image(np.full((4, 4, 4), 300, np.int16), np.eye(4))
    nib.save(bad, str(root / "labelsTr" / "C05.nii.gz"))
    with pytest.raises(InvalidInputError, match=r"case 'C05'.*integers in \[0, 255\]"):
        pack_dataset(root, tmp_path / "pack")


# --- chunks -------------------------------------------------------------------------------------


def test_split_join_round_trip(tmp_path):
    data = np.random.default_rng(0).bytes(2_500_000)
    (tmp_path / "model.pt").write_bytes(data)
    manifest = split_file(tmp_path / "model.pt", tmp_path / "chunks", chunk_mib=1)
    assert [c["size"] for c in manifest["chunks"]] == [2**20, 2**20, 2_500_000 - 2 * 2**20]
    assert [c["file"] for c in manifest["chunks"]] == ["model.pt.chunk01", "model.pt.chunk02", "model.pt.chunk03"]
    out = join_file(tmp_path / "chunks" / "model.pt.chunks.json", tmp_path / "back" / "model.pt")
    assert out.read_bytes() == data
    # a folder as output: the original name in it
    assert join_file(tmp_path / "chunks" / "model.pt.chunks.json", tmp_path / "back").name == "model.pt"


def test_split_join_empty_file(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    manifest = split_file(tmp_path / "empty", tmp_path / "chunks")
    assert len(manifest["chunks"]) == 1 and manifest["size"] == 0
    assert join_file(tmp_path / "chunks" / "empty.chunks.json", tmp_path / "e").read_bytes() == b""


def test_join_refuses_corrupt_or_missing_chunk(tmp_path):
    (tmp_path / "model.pt").write_bytes(np.random.default_rng(1).bytes(300_000))
    split_file(tmp_path / "model.pt", tmp_path / "chunks", chunk_mib=0.1)
    chunk = tmp_path / "chunks" / "model.pt.chunk02"
    data = bytearray(chunk.read_bytes())
    data[7] ^= 0xFF
    chunk.write_bytes(bytes(data))
    target = tmp_path / "out" / "model.pt"
    with pytest.raises(InvalidInputError, match="chunk .*model.pt.chunk02' is corrupt"):
        join_file(tmp_path / "chunks" / "model.pt.chunks.json", target)
    assert not target.exists() and os.listdir(tmp_path / "out") == []
    chunk.unlink()
    with pytest.raises(MissingInputError, match="chunk 'model.pt.chunk02' of 'model.pt' is missing"):
        join_file(tmp_path / "chunks" / "model.pt.chunks.json", target)
    with pytest.raises(MissingInputError, match="does not exist"):
        split_file(tmp_path / "nothing", tmp_path / "chunks")


def test_paths_outside_the_dataset_folder_are_refused(grid_dir, tmp_path):
    # a datalist naming a file by an absolute path or through '..' would be unpacked outside the output folder
    root = shutil.copytree(grid_dir, tmp_path / "copy")
    datalist = json.loads((root / "datalist.json").read_text())
    case = datalist["unlabeled"][0]
    for bad in (str(root / case["image"]), "../" + case["image"]):
        changed = json.loads(json.dumps(datalist))
        changed["unlabeled"][0]["image"] = bad
        (root / "datalist.json").write_text(json.dumps(changed))
        with pytest.raises(InvalidInputError, match=r"must be relative to the dataset folder, without '\.\.'"):
            pack_dataset(root, tmp_path / "pack")


def test_cases_without_case_id_keep_their_roles(grid_dir, tmp_path):
    # the id then comes from the image file name, when packing and when writing the unpacked datalist
    root = shutil.copytree(grid_dir, tmp_path / "copy")
    datalist = json.loads((root / "datalist.json").read_text())
    for role in ("labeled", "unlabeled", "validation", "test"):
        for item in datalist.get(role, []):
            item.pop("case_id", None)
    (root / "datalist.json").write_text(json.dumps(datalist))
    pack_dataset(root, tmp_path / "pack")
    unpack_dataset(tmp_path / "pack", tmp_path / "out")
    assert json.loads((tmp_path / "out" / "datalist.json").read_text()) == _nii(datalist)
