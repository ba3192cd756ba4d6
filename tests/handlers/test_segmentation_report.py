from __future__ import annotations

import csv
import json
import math
import os
import warnings

import pytest
import torch
from ignite.engine import Engine
from monai.data import MetaTensor, list_data_collate

from sasnet_components.handlers import segmentation_report as sr_module
from sasnet_components.handlers.segmentation_report import CSV_COLUMNS, SegmentationReport
from sasnet_components.metrics.segmentation import EmptyMaskWarning

SPACING = (0.5, 0.5, 2.0)
SHAPE = (6, 6, 6)


def _label(mask: torch.Tensor, filename: str | None = None) -> MetaTensor:
    meta = {} if filename is None else {"filename_or_obj": filename}
    affine = torch.diag(torch.tensor([*SPACING, 1.0], dtype=torch.float64))
    return MetaTensor(mask[None].float(), affine=affine, meta=meta)


def _cases():
    """Four (pred, gt) pairs of shape (6, 6, 6) with hand-checked metrics.

    perfect: 2x2x2 cube, pred == gt -> dice 1, jaccard 1, hd95 0, asd 0 (voxels and mm).
    half:    gt = 4x2x1 plate along axis 0 (8 voxels), pred = its first 2x2x1 (4 voxels):
             dice 2*4/12 = 2/3, jaccard 4/8 = 1/2; pred -> gt distances 4 x 0 (asd 0);
             gt -> pred: 4 x 0, 2 x 1, 2 x 2 (voxels along axis 0); pooled sorted 8 x 0, 1, 1, 2, 2:
             95th percentile at index 0.95 * 11 = 10.45 -> 2 voxels = 1.0 mm (spacing 0.5).
    shift:   gt = 3x3 plate, z = 1..2; pred = same plate at z = 2..3 (shift 1 along the 2.0 mm axis):
             every voxel is a surface voxel; pred -> gt: 9 x 0 (z = 2), 9 x 1 (z = 3) -> asd 0.5 voxel
             = 1.0 mm; pooled with gt -> pred (9 x 0, 9 x 1): 95th percentile 1 voxel = 2.0 mm;
             dice 2*9/36 = 1/2, jaccard 9/27 = 1/3.
    empty:   pred empty, gt 2x2x2 -> dice 0, jaccard 0, hd95 / asd NaN, empty_prediction True.
    """
    z = lambda: torch.zeros(SHAPE, dtype=torch.int64)  # noqa: E731
    perfect = z()
    perfect[1:3, 1:3, 1:3] = 1
    half_gt, half_pred = z(), z()
    half_gt[1:5, 1:3, 2] = 1
    half_pred[1:3, 1:3, 2] = 1
    shift_gt, shift_pred = z(), z()
    shift_gt[1:4, 1:4, 1:3] = 1
    shift_pred[1:4, 1:4, 2:4] = 1
    empty_gt = z()
    empty_gt[2:4, 2:4, 2:4] = 1
    return [
        (perfect.clone(), perfect),
        (half_pred, half_gt),
        (shift_pred, shift_gt),
        (z(), empty_gt),
    ]


EXPECTED = {  # per case: dice, jaccard, hd95, asd, hd95_mm, asd_mm
    "la_001": (1.0, 1.0, 0.0, 0.0, 0.0, 0.0),
    "la_002": (2 / 3, 0.5, 2.0, 0.0, 1.0, 0.0),
    "la_003": (0.5, 1 / 3, 1.0, 0.5, 2.0, 1.0),
    "case_3": (0.0, 0.0, math.nan, math.nan, math.nan, math.nan),
}


def _engine(one_hot: bool = False):
    """A bare Engine whose iterations return decollated outputs, as a SupervisedEvaluator would.

    Iteration 1: "la_001" (case_id in the output dict), "la_002" (case_id only in the batch dicts).
    Iteration 2: "la_003" (only the label's filename_or_obj), then a case with no name (-> "case_3").
    """
    cases = _cases()

    def pred_of(p):
        return torch.stack([1 - p, p]).float() if one_hot else p[None]

    outputs = [
        [
            {"pred": pred_of(cases[0][0]), "label": _label(cases[0][1]), "case_id": "la_001"},
            {"pred": pred_of(cases[1][0]), "label": _label(cases[1][1])},
        ],
        [
            {"pred": pred_of(cases[2][0]), "label": _label(cases[2][1], "/data/labelsTr/la_003.nii.gz")},
            {"pred": pred_of(cases[3][0]), "label": _label(cases[3][1])},
        ],
    ]
    batches = [[{"case_id": "la_001"}, {"case_id": "la_002"}], [{}, {}]]
    return Engine(lambda engine, batch: outputs[engine.state.iteration - 1]), batches


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _run(engine, batches):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptyMaskWarning)
        engine.run(batches, max_epochs=1)


def test_report_files_values_and_summary(tmp_path):
    engine, batches = _engine()
    report = SegmentationReport(
        output_dir=str(tmp_path / "eval"), extra_info={"protocol": "paper", "stride": [18, 18, 4]}
    )
    report.attach(engine)
    with pytest.warns(EmptyMaskWarning, match="case 'case_3': empty prediction"):
        engine.run(batches, max_epochs=1)

    rows = _read_csv(tmp_path / "eval" / "metrics_per_case.csv")
    with open(tmp_path / "eval" / "metrics_per_case.csv", newline="") as f:
        assert next(csv.reader(f)) == list(CSV_COLUMNS)
    assert [r["case_id"] for r in rows] == list(EXPECTED)
    names = ("dice", "jaccard", "hd95", "asd", "hd95_mm", "asd_mm")
    for row in rows:
        got = [float(row[n]) for n in names]
        assert got == pytest.approx(list(EXPECTED[row["case_id"]]), nan_ok=True), row["case_id"]
        assert row["spacing"] == "0.5 0.5 2.0"
    # the empty prediction: NaN kept in the CSV, flags set
    assert rows[3]["hd95"] == "nan" and rows[3]["asd_mm"] == "nan"
    assert (rows[3]["empty_prediction"], rows[3]["empty_ground_truth"]) == ("True", "False")
    assert all(r["empty_prediction"] == "False" for r in rows[:3])
    # shift along the 2.0 mm axis: mm = voxels * 2.0
    assert float(rows[2]["hd95_mm"]) == 2.0 * float(rows[2]["hd95"])
    assert float(rows[2]["asd_mm"]) == 2.0 * float(rows[2]["asd"])

    with open(tmp_path / "eval" / "metrics_summary.json") as f:
        summary = json.load(f)
    assert summary["num_cases"] == 4
    assert summary["num_empty_prediction"] == 1 and summary["num_empty_ground_truth"] == 0
    assert summary["std_ddof"] == 0 and "ddof=0" in summary["aggregation"]
    assert "voxels" in summary["units"]["hd95"] and "mm" in summary["units"]["hd95_mm"]
    assert summary["protocol"] == "paper" and summary["stride"] == [18, 18, 4]
    assert summary["num_nan"] == {"dice": 0, "jaccard": 0, "hd95": 1, "asd": 1, "hd95_mm": 1, "asd_mm": 1}
    # dice [1, 2/3, 1/2, 0]: mean 13/24; deviations 11/24, 3/24, -1/24, -13/24 -> var 300/576/4, std 5*sqrt(3)/24
    # jaccard [1, 1/2, 1/3, 0]: mean 11/24
    # hd95 [0, 2, 1] (NaN left out): mean 1, std sqrt(2/3); hd95_mm [0, 1, 2]: mean 1, std sqrt(2/3)
    # asd [0, 0, 0.5]: mean 1/6, std sqrt(1/18); asd_mm [0, 0, 1]: mean 1/3, std sqrt(2/9)
    expected_mean = {"dice": 13 / 24, "jaccard": 11 / 24, "hd95": 1.0, "asd": 1 / 6, "hd95_mm": 1.0, "asd_mm": 1 / 3}
    expected_std = {
        "dice": 5 * math.sqrt(3) / 24,
        "hd95": math.sqrt(2 / 3),
        "asd": math.sqrt(1 / 18),
        "hd95_mm": math.sqrt(2 / 3),
        "asd_mm": math.sqrt(2 / 9),
    }
    for name, value in expected_mean.items():
        assert summary["mean"][name] == pytest.approx(value), name
    for name, value in expected_std.items():
        assert summary["std"][name] == pytest.approx(value), name
    assert "dice" not in engine.state.metrics  # write_engine_metrics defaults to False
    # no temporary files left behind
    assert sorted(os.listdir(tmp_path / "eval")) == ["metrics_per_case.csv", "metrics_summary.json"]


def test_one_hot_prediction_gives_the_same_rows(tmp_path):
    engine, batches = _engine(one_hot=True)
    report = SegmentationReport(output_dir=str(tmp_path), write_engine_metrics=True)
    report.attach(engine)
    _run(engine, batches)
    for record in report.records:
        got = [record[n] for n in ("dice", "jaccard", "hd95", "asd", "hd95_mm", "asd_mm")]
        assert got == pytest.approx(list(EXPECTED[record["case_id"]]), nan_ok=True)
    assert engine.state.metrics["dice"] == pytest.approx(13 / 24)
    assert engine.state.metrics["hd95_mm"] == pytest.approx(1.0)


def test_rerun_resets(tmp_path):
    engine, batches = _engine()
    report = SegmentationReport(output_dir=str(tmp_path))
    report.attach(engine)
    report.attach(engine)  # attaching twice registers the handlers once
    _run(engine, batches)
    _run(engine, batches)
    assert len(report.records) == 4
    assert len(_read_csv(tmp_path / "metrics_per_case.csv")) == 4
    with open(tmp_path / "metrics_summary.json") as f:
        assert json.load(f)["num_cases"] == 4


def test_fixed_spacing_and_foreground_any(tmp_path):
    gt = torch.zeros(SHAPE, dtype=torch.int64)
    gt[1:4, 1:4, 1:3] = 2  # class 2 plate at z = 1..2
    pred = torch.zeros(SHAPE, dtype=torch.int64)
    pred[1:4, 1:4, 2:4] = 1  # class 1, shifted by one voxel along axis 2
    out = [{"pred": pred[None], "label": gt[None].float(), "case_id": 7}]  # plain tensor label, int id
    engine = Engine(lambda e, b: out)
    report = SegmentationReport(output_dir=str(tmp_path), foreground_class=None, spacing=[1.0, 1.0, 3.0])
    report.attach(engine)
    engine.run([0], max_epochs=1)
    (record,) = report.records
    # same geometry as the "shift" case: hd95 1 voxel = 3.0 mm along axis 2, asd 0.5 voxel = 1.5 mm
    assert record["case_id"] == "7"
    assert (record["dice"], record["hd95"], record["hd95_mm"], record["asd_mm"]) == pytest.approx((0.5, 1.0, 3.0, 1.5))
    assert record["spacing"] == [1.0, 1.0, 3.0]

    # foreground_class=1 (default): the label has no class 1 -> empty ground truth; a plain tensor
    # label has no affine -> mm values NaN and an empty spacing cell
    report = SegmentationReport(output_dir=str(tmp_path / "b"))
    engine = Engine(lambda e, b: out)
    report.attach(engine)
    with pytest.warns(EmptyMaskWarning, match="case '7': empty ground truth"):
        engine.run([0], max_epochs=1)
    (row,) = _read_csv(tmp_path / "b" / "metrics_per_case.csv")
    assert (row["empty_ground_truth"], row["hd95"], row["hd95_mm"], row["spacing"]) == ("True", "nan", "nan", "")
    with open(tmp_path / "b" / "metrics_summary.json") as f:
        summary = json.load(f)
    assert summary["num_empty_ground_truth"] == 1
    assert summary["mean"]["hd95"] is None  # no finite value -> null


def test_non_decollated_output_is_decollated(tmp_path):
    cases = _cases()[:3]
    samples = [{"pred": p[None].float(), "label": _label(g), "case_id": f"c{i}"} for i, (p, g) in enumerate(cases)]
    batch = list_data_collate(samples)  # one dict of batched tensors
    engine = Engine(lambda e, b: batch)
    report = SegmentationReport(output_dir=str(tmp_path))
    report.attach(engine)
    engine.run([0], max_epochs=1)
    expected = list(EXPECTED.values())[:3]
    assert [r["case_id"] for r in report.records] == ["c0", "c1", "c2"]
    for record, exp in zip(report.records, expected):
        got = [record[n] for n in ("dice", "jaccard", "hd95", "asd", "hd95_mm", "asd_mm")]
        assert got == pytest.approx(list(exp))


def test_only_rank_zero_writes(tmp_path, monkeypatch):
    engine, batches = _engine()
    monkeypatch.setattr(sr_module.idist, "get_rank", lambda: 1)
    report = SegmentationReport(output_dir=str(tmp_path / "eval"))
    report.attach(engine)
    _run(engine, batches)
    assert len(report.records) == 4
    assert not (tmp_path / "eval").exists()


def test_missing_key_and_shape_mismatch(tmp_path):
    gt = torch.zeros((1, *SHAPE))
    engine = Engine(lambda e, b: [{"label": gt, "image": gt, "case_id": "x1"}])
    SegmentationReport(output_dir=str(tmp_path)).attach(engine)
    expected = r"'pred' is missing from the engine output; available keys: \['case_id', 'image', 'label'\]"
    with pytest.raises(KeyError, match=expected):
        engine.run([0], max_epochs=1)

    engine = Engine(lambda e, b: [{"pred": torch.zeros((1, 6, 6, 5)), "label": gt, "case_id": "bad"}])
    SegmentationReport(output_dir=str(tmp_path)).attach(engine)
    expected = r"case 'bad': prediction .* same spatial shape, got \(6, 6, 5\) and \(6, 6, 6\)"
    with pytest.raises(ValueError, match=expected):
        engine.run([0], max_epochs=1)


def test_bad_prediction_values_and_constructor_errors(tmp_path):
    gt = torch.zeros((1, *SHAPE))
    engine = Engine(lambda e, b: [{"pred": torch.full((1, *SHAPE), 0.7), "label": gt, "case_id": "p"}])
    SegmentationReport(output_dir=str(tmp_path)).attach(engine)
    with pytest.raises(ValueError, match="case 'p': `pred`.*non-integer values"):
        engine.run([0], max_epochs=1)
    engine = Engine(lambda e, b: [{"pred": torch.zeros((2, *SHAPE)), "label": gt, "case_id": "q"}])
    SegmentationReport(output_dir=str(tmp_path), foreground_class=2).attach(engine)
    with pytest.raises(ValueError, match="`foreground_class` 2 is not a channel of the one-hot `pred`"):
        engine.run([0], max_epochs=1)

    with pytest.raises(ValueError, match=r"`extra_info` keys \['mean'\] collide"):
        SegmentationReport(output_dir=str(tmp_path), extra_info={"mean": 1})
    with pytest.raises(TypeError, match="`extra_info` must be JSON-serialisable"):
        SegmentationReport(output_dir=str(tmp_path), extra_info={"a": object()})
    with pytest.raises(ValueError, match="`spacing` must hold 2 or 3 finite positive floats"):
        SegmentationReport(output_dir=str(tmp_path), spacing=[0.5, 0.0, 1.0])
    with pytest.raises(ValueError, match="`foreground_class` must be >= 0 or None, got -1"):
        SegmentationReport(output_dir=str(tmp_path), foreground_class=-1)


def test_with_monai_supervised_evaluator(tmp_path):
    from monai.data import DataLoader, Dataset
    from monai.engines import SupervisedEvaluator
    from monai.inferers import SlidingWindowInferer
    from monai.transforms import AsDiscreted

    from sasnet_components.data.sliding_window import overlap_for_stride

    class SignNet(torch.nn.Module):  # logits (-x, x): argmax is the foreground where the image is > 0
        def forward(self, x):
            return torch.cat([-x, x], 1)

    affine = torch.diag(torch.tensor([*SPACING, 1.0]))
    data = []
    for i in range(3):
        label = torch.zeros(1, 20, 20, 12)
        label[0, 3 : 9 + i, 4:10, 2:6] = 1
        image = label * 2 - 1
        image[0, 3, 4:10, 2:6] = -1  # the prediction misses the first x-slice of the label
        data.append(
            {"image": MetaTensor(image, affine=affine), "label": MetaTensor(label, affine=affine), "case_id": f"c{i}"}
        )
    roi = (16, 16, 8)
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(Dataset(data), batch_size=2),
        network=SignNet(),
        inferer=SlidingWindowInferer(roi, overlap=overlap_for_stride(roi, (4, 4, 2))),
        postprocessing=AsDiscreted(keys="pred", argmax=True),
        val_handlers=[SegmentationReport(output_dir=str(tmp_path), write_engine_metrics=True)],
        decollate=True,
    )
    evaluator.run()
    rows = _read_csv(tmp_path / "metrics_per_case.csv")
    assert [r["case_id"] for r in rows] == ["c0", "c1", "c2"]  # ids from the decollated batch
    # case i: label 6+i slices of 6x4 along x, prediction the last 5+i -> dice 2(5+i)/(11+2i)
    for i, row in enumerate(rows):
        assert float(row["dice"]) == pytest.approx(2 * (5 + i) / (11 + 2 * i))
        # the prediction's border has (5+i)*6*4 - (3+i)*4*2 = 96+16i voxels; all lie on the label's border
        # except the 4x2 inner voxels of its new face x=4, 1 voxel (0.5 mm along x or y) from it
        assert float(row["asd"]) == pytest.approx(8 / (96 + 16 * i))
        assert float(row["asd_mm"]) == pytest.approx(0.5 * 8 / (96 + 16 * i))
        assert row["spacing"] == "0.5 0.5 2.0"
    assert evaluator.state.metrics["dice"] == pytest.approx(sum(2 * (5 + i) / (11 + 2 * i) for i in range(3)) / 3)
