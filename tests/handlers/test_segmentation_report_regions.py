"""SegmentationReport with region masks (BraTS WT / TC / ET) and metrics.segmentation.region_metrics."""

from __future__ import annotations

import csv
import json
import math
import warnings

import pytest
import torch
from ignite.engine import Engine
from monai.data import MetaTensor

from sasnet_components import ClassRegionsd, SegmentationReport, region_metrics
from sasnet_components.handlers.segmentation_report import CSV_COLUMNS
from sasnet_components.metrics.segmentation import EmptyMaskWarning

NAMES = ["wt", "tc", "et"]


def _maps():
    """Class maps (1, 6, 6, 6) with classes 0..3.

    label: class 1 at [1:3, 1:3, 1:3] (8 voxels), class 2 at [3:5, 1:3, 1:3] (8), class 3 at [1:3, 3:5, 1:3] (8).
    case "same": pred == label -> Dice 1, HD95 0, ASD 0 in every region.
    case "mixed": pred = label with class 3 relabelled 2 and class 1 at [1:2, 1:3, 1:3] only (rest of
        class 1 -> 0): wt: pred 4 + 8 + 8 = 20 voxels inside gt's 24 -> Dice 40 / 44 = 10 / 11;
        tc: gt 1 | 3 = 16 voxels, pred 1 = 4 voxels -> Dice 8 / 20 = 0.4, Jaccard 4 / 16 = 0.25;
        et: gt 8 voxels, pred empty -> Dice 0, HD95 / ASD NaN, empty_prediction.
    case "no_et": label without class 3 (-> 0), pred the same -> et Dice / Jaccard NaN (both empty).
    """
    label = torch.zeros(1, 6, 6, 6, dtype=torch.long)
    label[0, 1:3, 1:3, 1:3] = 1
    label[0, 3:5, 1:3, 1:3] = 2
    label[0, 1:3, 3:5, 1:3] = 3
    mixed = label.clone()
    mixed[mixed == 3] = 2
    mixed[0, 2:3, 1:3, 1:3] = 0
    no_et = label.clone()
    no_et[no_et == 3] = 0
    return {"same": (label.clone(), label), "mixed": (mixed, label), "no_et": (no_et.clone(), no_et)}


def _engine(tmp_path, **kwargs):
    regions = ClassRegionsd(keys=["pred", "label"], regions={"wt": [1, 2, 3], "tc": [1, 3], "et": [3]})
    affine = torch.diag(torch.tensor([2.0, 1.0, 1.0, 1.0], dtype=torch.float64))
    outputs = [
        [regions({"pred": p, "label": MetaTensor(g, affine=affine), "case_id": case})]
        for case, (p, g) in _maps().items()
    ]
    engine = Engine(lambda e, b: outputs[e.state.iteration - 1])
    report = SegmentationReport(output_dir=str(tmp_path), region_names=regions.region_names, **kwargs)
    report.attach(engine)
    return engine, report


def test_region_columns_values_and_summary(tmp_path):
    engine, report = _engine(tmp_path, write_engine_metrics=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        engine.run([0, 1, 2], max_epochs=1)
    assert any("case 'mixed': region 'et': empty prediction" in str(w.message) for w in caught)
    with open(tmp_path / "metrics_per_case.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header[0] == "case_id" and header[-1] == "spacing" and len(header) == 2 + 3 * 8
    assert header[1:9] == [
        "dice_wt", "jaccard_wt", "hd95_wt", "asd_wt", "hd95_mm_wt", "asd_mm_wt", "empty_prediction_wt", "empty_ground_truth_wt"
    ]
    with open(tmp_path / "metrics_per_case.csv", newline="") as f:
        rows = {r["case_id"]: r for r in csv.DictReader(f)}
    for name in NAMES:
        same = rows["same"]
        assert float(same[f"dice_{name}"]) == 1.0 and float(same[f"hd95_mm_{name}"]) == 0.0
    mixed = rows["mixed"]
    assert float(mixed["dice_wt"]) == pytest.approx(10 / 11)
    assert float(mixed["dice_tc"]) == pytest.approx(0.4) and float(mixed["jaccard_tc"]) == pytest.approx(0.25)
    assert float(mixed["dice_et"]) == 0.0 and math.isnan(float(mixed["hd95_et"])) and mixed["empty_prediction_et"] == "True"
    assert math.isnan(float(rows["no_et"]["dice_et"])) and rows["no_et"]["empty_ground_truth_et"] == "True"
    assert rows["same"]["spacing"] == "2.0 1.0 1.0"

    summary = json.loads((tmp_path / "metrics_summary.json").read_text())
    assert summary["regions"] == NAMES and summary["num_cases"] == 3
    assert summary["mean"]["dice_wt"] == pytest.approx((1 + 10 / 11 + 1) / 3)
    assert summary["mean"]["dice_et"] == pytest.approx(0.5) and summary["num_nan"]["dice_et"] == 1  # (1 + 0) / 2
    assert summary["num_empty_prediction"] == {"wt": 0, "tc": 0, "et": 2}
    assert summary["num_empty_ground_truth"] == {"wt": 0, "tc": 0, "et": 1}
    assert engine.state.metrics["dice_tc"] == pytest.approx((1 + 0.4 + 1) / 3)


def test_two_class_report_columns_unchanged(tmp_path):
    report = SegmentationReport(output_dir=str(tmp_path))
    assert report.csv_columns == CSV_COLUMNS and report.region_names is None


def test_region_input_checks(tmp_path):
    with pytest.raises(ValueError, match="distinct"):
        SegmentationReport(output_dir=str(tmp_path), region_names=["wt", "wt"])
    with pytest.raises(ValueError, match="non-empty list"):
        SegmentationReport(output_dir=str(tmp_path), region_names="wt")
    report = SegmentationReport(output_dir=str(tmp_path), region_names=NAMES)
    engine = Engine(lambda e, b: [{"pred": torch.zeros(1, 4, 4, 4), "label": torch.zeros(1, 4, 4, 4), "case_id": "x"}])
    report.attach(engine)
    with pytest.raises(ValueError, match="must hold 3 region masks"):
        engine.run([0], max_epochs=1)


def test_region_metrics_by_hand():
    p = torch.zeros(2, 1, 1, 8)
    g = torch.zeros(2, 1, 1, 8)
    p[0, 0, 0, :4], g[0, 0, 0, 2:6] = 1, 1  # overlap 2 of 4 + 4 -> Dice 0.5
    p[1, 0, 0, :3], g[1, 0, 0, :3] = 1, 1
    out = region_metrics(p, g, ["tc", "et"], spacing=(1.0, 1.0, 0.5))
    assert out["tc"]["dice"] == 0.5 and out["tc"]["jaccard"] == pytest.approx(1 / 3)
    assert out["et"]["dice"] == 1.0 and out["et"]["asd_mm"] == 0.0
    with pytest.raises(ValueError, match="R = 3"):
        region_metrics(p, g, NAMES)
    with pytest.warns(EmptyMaskWarning):
        assert math.isnan(region_metrics(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), ["et"])["et"]["dice"])
