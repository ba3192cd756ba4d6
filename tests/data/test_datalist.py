"""Tests of the protocol datalists built from a prepared datalist JSON (``sasnet_components.data.datalist``).

The datalist has a training pool of 6 cases (t0..t5; t0, t1 labeled), a monitoring list of the last
2 training ids (t4, t5) and a test list of 2 ids (s0, s1); all referenced files are empty files.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from sasnet_components.data.datalist import evaluation_datalist, semi_supervised_datalists

TRAIN_IDS = [f"t{i}" for i in range(6)]
TEST_IDS = ["s0", "s1"]


def _item(case_id: str) -> dict:
    return {"case_id": case_id, "image": f"imagesTr/{case_id}.nii.gz", "label": f"labelsTr/{case_id}.nii.gz"}


def _write(root: Path, test_ids=TEST_IDS, create_files: bool = True, drop=()) -> Path:
    datalist = {
        "name": "LA",
        "spacing": [0.625, 0.625, 0.625],
        "source_layout": "h5",
        "num_labeled": 2,
        "protocol_note": "synthetic",
        "labeled": [_item(i) for i in TRAIN_IDS[:2]],
        "unlabeled": [_item(i) for i in TRAIN_IDS[2:]],
        "validation": [_item(i) for i in TRAIN_IDS[-2:]],
        "test": [_item(i) for i in test_ids],
    }
    for key in drop:
        del datalist[key]
    root.mkdir(parents=True, exist_ok=True)
    if create_files:
        for case_id in TRAIN_IDS + list(test_ids):
            for folder in ("imagesTr", "labelsTr"):
                (root / folder).mkdir(exist_ok=True)
                (root / folder / f"{case_id}.nii.gz").touch()
    path = root / "datalist.json"
    path.write_text(json.dumps(datalist))
    return path


@pytest.fixture
def datalist_file(tmp_path: Path) -> Path:
    return _write(tmp_path / "la")


def _ids(items):
    return [item["case_id"] for item in items]


def test_default_split(datalist_file: Path):
    out = semi_supervised_datalists(str(datalist_file))
    assert out["protocol"] == "default"
    assert _ids(out["train"]) == TRAIN_IDS  # labeled first, in datalist order
    assert out["labeled_indices"] == [0, 1] and out["unlabeled_indices"] == [2, 3, 4, 5]
    assert out["num_labeled"] == 2 and out["num_unlabeled"] == 4
    assert [item["labeled"] for item in out["train"]] == [True, True, False, False, False, False]
    # labeled items keep their label, unlabeled items lose it
    for item in out["train"][:2]:
        assert item["label"] == str(datalist_file.parent.resolve() / "labelsTr" / f"{item['case_id']}.nii.gz")
    assert all("label" not in item for item in out["train"][2:])
    assert out["train"][2]["image"] == str(datalist_file.parent.resolve() / "imagesTr" / "t2.nii.gz")
    # monitoring cases stay in the unlabeled pool by default
    assert _ids(out["validation"]) == ["t4", "t5"]
    assert all("label" in item for item in out["validation"])


@pytest.mark.parametrize("num_labeled", [1, 3, 4])
def test_resplit_with_num_labeled(datalist_file: Path, num_labeled: int):
    out = semi_supervised_datalists(str(datalist_file), num_labeled=num_labeled)
    labeled, unlabeled = out["train"][:num_labeled], out["train"][num_labeled:]
    # the first N of labeled + unlabeled are labeled
    assert _ids(labeled) == TRAIN_IDS[:num_labeled] and _ids(unlabeled) == TRAIN_IDS[num_labeled:]
    assert all(item["labeled"] is True and "label" in item for item in labeled)
    assert all(item["labeled"] is False and "label" not in item for item in unlabeled)
    assert out["labeled_indices"] == list(range(num_labeled))
    assert out["unlabeled_indices"] == list(range(num_labeled, 6))
    assert (out["num_labeled"], out["num_unlabeled"]) == (num_labeled, 6 - num_labeled)


def test_select_best_removes_validation_from_unlabeled(datalist_file: Path):
    out = semi_supervised_datalists(str(datalist_file), select_best=True)
    # t4, t5 select the checkpoint: they leave the unlabeled pool
    assert _ids(out["train"]) == ["t0", "t1", "t2", "t3"]
    assert out["unlabeled_indices"] == [2, 3] and out["num_unlabeled"] == 2
    assert _ids(out["validation"]) == ["t4", "t5"]


def test_validation_cases_leave_the_unlabeled_pool_when_asked(datalist_file: Path, caplog):
    with caplog.at_level("INFO"):
        out = semi_supervised_datalists(str(datalist_file), validation_unlabeled=False)
    # t4, t5 are evaluated: their images are not trained on either
    assert _ids(out["train"]) == ["t0", "t1", "t2", "t3"]
    assert out["unlabeled_indices"] == [2, 3] and out["num_unlabeled"] == 2
    assert _ids(out["validation"]) == ["t4", "t5"]
    assert "2 unlabeled training cases, 2 validation cases (removed from the unlabeled pool: validation_unlabeled false)" in caplog.text


def test_select_best_with_validation_among_labeled_raises(datalist_file: Path):
    with pytest.raises(ValueError, match=r"validation cases \['t4'\] are among the 5 labeled training cases"):
        semi_supervised_datalists(str(datalist_file), num_labeled=5, select_best=True)


@pytest.mark.parametrize("protocol, num_labeled, leaked", [("default", 5, "['t4']"), ("default", 6, "['t4', 't5']")])
def test_validation_among_labeled_raises_under_every_protocol(datalist_file: Path, protocol, num_labeled, leaked):
    # also without checkpoint selection: validating on trained labels is not honest
    with pytest.raises(ValueError, match=rf"validation cases {re.escape(leaked)} are among the {num_labeled} labeled training cases: .*not honest.*`num_labeled: all` \(the 4 labeled"):
        semi_supervised_datalists(str(datalist_file), num_labeled=num_labeled, protocol=protocol)


def test_paper_protocol_may_label_the_monitoring_cases(datalist_file: Path):
    # under 'paper' the validation list is the test list: t4, t5 are ordinary training cases
    out = semi_supervised_datalists(str(datalist_file), num_labeled=6, protocol="paper")
    assert out["num_labeled"] == 6 and out["num_unlabeled"] == 0


@pytest.mark.parametrize("all_", ["all", "ALL", " all "])
def test_num_labeled_all_labels_every_case_outside_validation(datalist_file: Path, all_):
    out = semi_supervised_datalists(str(datalist_file), num_labeled=all_)
    assert _ids(out["train"]) == TRAIN_IDS  # t0..t3 labeled, the validation cases t4, t5 unlabeled
    assert out["num_labeled"] == 4 and out["labeled_indices"] == [0, 1, 2, 3]
    assert [item["labeled"] for item in out["train"]] == [True] * 4 + [False] * 2
    assert all("label" not in item for item in out["train"][4:])
    # with selection, or without the unlabeled stream, the validation cases are not training cases at all
    assert _ids(semi_supervised_datalists(str(datalist_file), num_labeled="all", select_best=True)["train"]) == TRAIN_IDS[:4]
    assert _ids(semi_supervised_datalists(str(datalist_file), num_labeled="all", unlabeled=False)["train"]) == TRAIN_IDS[:4]
    # 'paper' validates on the test list: every labeled case of the pool
    assert semi_supervised_datalists(str(datalist_file), num_labeled="all", protocol="paper")["num_labeled"] == 6


def test_num_labeled_all_skips_cases_without_a_label(tmp_path: Path):
    path = _write(tmp_path / "la")
    datalist = json.loads(path.read_text())
    del datalist["unlabeled"][0]["label"]  # t2 has no label
    path.write_text(json.dumps(datalist))
    out = semi_supervised_datalists(str(path), num_labeled="all")
    assert _ids(out["train"]) == ["t0", "t1", "t3", "t2", "t4", "t5"]  # labeled first
    assert out["labeled_indices"] == [0, 1, 2] and out["unlabeled_indices"] == [3, 4, 5]


@pytest.mark.parametrize("num_labeled", ["some", "2.5", True, 2.5])
def test_num_labeled_neither_all_nor_an_integer(datalist_file: Path, num_labeled):
    with pytest.raises(ValueError, match=r"`num_labeled` must be an integer >= 1 or 'all', got "):
        semi_supervised_datalists(str(datalist_file), num_labeled=num_labeled)


@pytest.mark.parametrize("num_labeled", [None, 3, "all"])
def test_without_unlabeled_stream_no_unlabeled_item(datalist_file: Path, num_labeled):
    out = semi_supervised_datalists(str(datalist_file), num_labeled=num_labeled, unlabeled=False)
    assert all(item["labeled"] for item in out["train"]) and out["unlabeled_indices"] == [] and out["num_unlabeled"] == 0
    assert out["labeled_indices"] == list(range(len(out["train"])))
    if num_labeled != "all":  # t3 is an unlabeled case: its image is neither checked nor read
        (datalist_file.parent / "imagesTr" / "t3.nii.gz").unlink()
        assert semi_supervised_datalists(str(datalist_file), num_labeled=num_labeled, unlabeled=False)["num_unlabeled"] == 0


def test_paper_protocol_validates_on_test(datalist_file: Path):
    out = semi_supervised_datalists(str(datalist_file), protocol="paper")
    assert out["protocol"] == "paper"
    assert _ids(out["validation"]) == TEST_IDS
    assert _ids(out["train"]) == TRAIN_IDS  # the monitoring cases stay unlabeled training cases
    assert out["validation"][0]["label"] == str(datalist_file.parent.resolve() / "labelsTr" / "s0.nii.gz")


def test_paper_protocol_without_test_cases(tmp_path: Path):
    path = _write(tmp_path / "la", test_ids=[])
    with pytest.raises(ValueError, match="protocol 'paper' validates on the test list, but datalist .* has no test cases"):
        semi_supervised_datalists(str(path), protocol="paper")
    # the default protocol does not need them
    assert semi_supervised_datalists(str(path))["num_labeled"] == 2


def test_relative_datalist_path_gives_absolute_paths(datalist_file: Path, monkeypatch):
    monkeypatch.chdir(datalist_file.parent.parent)
    out = semi_supervised_datalists(os.path.join("la", "datalist.json"))
    for item in out["train"] + out["validation"]:
        assert os.path.isabs(item["image"])
    assert out["train"][0]["label"] == str(datalist_file.parent.resolve() / "labelsTr" / "t0.nii.gz")


def test_missing_datalist_names_prepare_script(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"does not exist; create it with `python scripts/prepare_la.py"):
        semi_supervised_datalists(str(tmp_path / "nothing.json"))
    with pytest.raises(FileNotFoundError, match=r"scripts/prepare_la.py"):
        evaluation_datalist(str(tmp_path / "nothing.json"))


def test_missing_list_key(tmp_path: Path):
    path = _write(tmp_path / "la", drop=("test",))
    with pytest.raises(KeyError, match=r"lacks \['test'\]"):
        semi_supervised_datalists(str(path))


@pytest.mark.parametrize("num_labeled", [0, 7])
def test_num_labeled_out_of_range(datalist_file: Path, num_labeled: int):
    with pytest.raises(ValueError, match=rf"`num_labeled` must be in \[1, 6\] .* or 'all', got {num_labeled}"):
        semi_supervised_datalists(str(datalist_file), num_labeled=num_labeled)


def test_num_labeled_needs_labels(tmp_path: Path):
    path = _write(tmp_path / "la")
    datalist = json.loads(path.read_text())
    del datalist["unlabeled"][0]["label"]  # t2 has no label
    path.write_text(json.dumps(datalist))
    with pytest.raises(ValueError, match=r"`num_labeled`=3 needs labels for cases \['t2'\]"):
        semi_supervised_datalists(str(path), num_labeled=3)


def test_missing_referenced_file(datalist_file: Path):
    missing = datalist_file.parent / "imagesTr" / "t3.nii.gz"
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=r"case t3: image file .*t3\.nii\.gz.* does not exist"):
        semi_supervised_datalists(str(datalist_file))
    # without the check the lists are still built
    assert semi_supervised_datalists(str(datalist_file), check_files=False)["num_unlabeled"] == 4


def test_unlabeled_label_files_are_not_required(datalist_file: Path):
    (datalist_file.parent / "labelsTr" / "t2.nii.gz").unlink()  # t2 is unlabeled: its label is never read
    assert semi_supervised_datalists(str(datalist_file))["num_unlabeled"] == 4


def test_unknown_protocol(datalist_file: Path):
    with pytest.raises(ValueError, match=r"^`protocol` must be one of \['default', 'paper'\], got 'honest'.$") as info:
        semi_supervised_datalists(str(datalist_file), protocol="honest")
    assert "'default'" in str(info.value) and "'paper'" in str(info.value)


# ---------------------------------------------------------------------- evaluation_datalist
@pytest.mark.parametrize("name, ids", [("validation", ["t4", "t5"]), ("test", TEST_IDS), ("labeled", ["t0", "t1"])])
def test_evaluation_datalist(datalist_file: Path, monkeypatch, name, ids):
    monkeypatch.chdir(datalist_file.parent)
    items = evaluation_datalist("datalist.json", name)  # relative path: items still absolute
    assert _ids(items) == ids
    for item in items:
        assert os.path.isabs(item["image"]) and os.path.isabs(item["label"])
        assert item["label"] == str(datalist_file.parent.resolve() / "labelsTr" / f"{item['case_id']}.nii.gz")


def test_evaluation_datalist_empty_list(tmp_path: Path):
    path = _write(tmp_path / "la", test_ids=[])
    with pytest.raises(ValueError, match=r"the 'test' list of .* is empty; nothing to evaluate"):
        evaluation_datalist(str(path), "test")


def test_evaluation_datalist_unknown_list(datalist_file: Path):
    with pytest.raises(ValueError, match=r"^the evaluation list \(`eval_list`\) must be one of .*, got 'unlabeled' \(did you mean 'labeled'\?\).$") as info:
        evaluation_datalist(str(datalist_file), "unlabeled")
    assert all(f"'{name}'" in str(info.value) for name in ("validation", "test", "labeled"))


def test_evaluation_datalist_item_without_label(tmp_path: Path):
    path = _write(tmp_path / "la")
    datalist = json.loads(path.read_text())
    del datalist["validation"][1]["label"]
    path.write_text(json.dumps(datalist))
    with pytest.raises(ValueError, match=r"cases \['t5'\] of the 'validation' list have no label"):
        evaluation_datalist(str(path))
