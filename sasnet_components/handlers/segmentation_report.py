"""Per-case segmentation report (Dice, Jaccard, HD95, ASD) written by an evaluator at the end of a run.

The metrics are those the SASNet / UA-MT papers report, computed as MedPy computes them (see
:mod:`sasnet_components.metrics.segmentation`): Dice and Jaccard, HD95 pooled over both surface
directions and ASD directed from the prediction to the ground truth, in voxels, and in mm as well
when the voxel spacing is known. An empty prediction (or ground truth) is a failure to report, not
a perfect score: its distances are NaN, it is flagged in the per-case table and counted in the
summary.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.data import MetaTensor, decollate_batch

from sasnet_components.metrics.segmentation import EmptyMaskWarning, region_metrics, segmentation_metrics
from sasnet_components.utils.errors import InputTypeError, InvalidInputError
from sasnet_components.utils.io import atomic_write_text

__all__ = ["SegmentationReport", "METRIC_NAMES", "CSV_COLUMNS"]

#: metrics summarised in the report, in column order
METRIC_NAMES: tuple[str, ...] = ("dice", "jaccard", "hd95", "asd", "hd95_mm", "asd_mm")
_FLAGS: tuple[str, ...] = ("empty_prediction", "empty_ground_truth")
#: columns of the per-case CSV
CSV_COLUMNS: tuple[str, ...] = ("case_id",) + METRIC_NAMES + _FLAGS + ("spacing",)

_UNITS = {
    "dice": "fraction in [0, 1] (2|P∩G| / (|P| + |G|))",
    "jaccard": "fraction in [0, 1] (|P∩G| / |P∪G|)",
    "hd95": "voxels (unit spacing, as medpy.metric.binary.hd95 without voxelspacing; 95th percentile "
    "of both directed surface-distance sets pooled)",
    "asd": "voxels (unit spacing, as medpy.metric.binary.asd without voxelspacing; directed, "
    "prediction surface to ground-truth surface)",
    "hd95_mm": "mm (same definition as hd95 with the voxel spacing; NaN where the spacing is unknown)",
    "asd_mm": "mm (same definition as asd with the voxel spacing; NaN where the spacing is unknown)",
}
_AGGREGATION = (
    "mean and std over the cases with a finite value (numpy nanmean / nanstd; std is the population "
    "standard deviation, ddof=0); NaN values (empty prediction or ground truth, unknown spacing) are "
    "left out and counted in num_nan; null means no case had a finite value"
)
_NAN_POLICY = (
    "an empty prediction or ground truth makes hd95/asd (and hd95_mm/asd_mm) NaN, and Dice/Jaccard "
    "NaN when both are empty; an empty prediction with a non-empty ground truth has Dice 0"
)
_RESERVED_SUMMARY_KEYS = frozenset(
    {
        "num_cases",
        "num_empty_prediction",
        "num_empty_ground_truth",
        "units",
        "mean",
        "std",
        "std_ddof",
        "num_nan",
        "aggregation",
        "nan_policy",
        "foreground",
        "spacing_source",
        "per_case_csv",
        "regions",
    }
)
_KNOWN_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".h5", ".npy", ".npz", ".dcm")

logger = logging.getLogger("sasnet_components.SegmentationReport")


def _case_id_str(value: Any) -> str:
    if isinstance(value, (torch.Tensor, np.ndarray)):
        value = value.tolist()
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    return str(value)


def _name_from_filename(value: Any) -> str | None:
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        return None
    base = os.path.basename(os.fspath(value).rstrip("/\\"))
    for suffix in _KNOWN_SUFFIXES:
        if base.lower().endswith(suffix):
            return base[: -len(suffix)]
    return base


class SegmentationReport:
    """Ignite handler: per-case Dice / Jaccard / HD95 / ASD of an evaluator, written as CSV + JSON summary.

    Attach it to a MONAI ``SupervisedEvaluator`` (``decollate=True``, the default) whose
    postprocessing produces a discrete prediction. After every iteration it reads
    ``engine.state.output``, the list of per-sample dicts, and for each sample:

    * takes ``output[pred_key]`` of shape ``(1, *spatial)`` (class indices) or ``(C, *spatial)``
      with ``C > 1`` (one-hot, or probabilities: reduced with argmax over channels), and
      ``output[label_key]`` in the same two layouts (usually ``(1, *spatial)`` class indices),
      ``spatial`` being ``(H, W)`` or ``(H, W, D)``;
    * keeps the foreground ``== foreground_class`` (or ``> 0`` when ``foreground_class`` is None);
    * computes :func:`~sasnet_components.metrics.segmentation.segmentation_metrics` with the voxel
      spacing: the fixed ``spacing`` argument when given, else the column norms of the first
      ``len(spatial)`` columns of the label's MetaTensor affine (the spacing of the grid the
      metrics are computed on); a label without a MetaTensor affine gives NaN mm values;
    * with ``region_names`` (e.g. after :class:`~sasnet_components.transforms.regions.ClassRegionsd`):
      takes ``output[pred_key]`` and ``output[label_key]`` as stacked binary region masks
      ``(R, *spatial)``, ``R = len(region_names)`` (values in {0, 1}, regions may overlap, no
      argmax), and scores each region ``r`` on its channel ``r`` (``foreground_class`` is not used);
    * names the case by ``id_key`` in the output dict, else in the matching
      ``engine.state.batch`` dict, else the basename of the label's (or prediction's)
      ``filename_or_obj`` without its extension, else ``case_<index>`` (index within the run).

    A non-decollated output (one dict of batched tensors) is decollated here.

    On ``Events.COMPLETED`` it writes into ``output_dir`` (created when missing), each file
    through a temporary file and ``os.replace``:

    * ``csv_name`` (default ``metrics_per_case.csv``): one row per case with the columns
      :data:`CSV_COLUMNS` (``case_id, dice, jaccard, hd95, asd, hd95_mm, asd_mm,
      empty_prediction, empty_ground_truth, spacing``); NaN is written as ``nan``, the flags as
      ``True`` / ``False``, the spacing used as space-separated floats (empty when unknown); with
      ``region_names`` the metric and flag columns are per region, named ``<column>_<region>``
      (``case_id, dice_wt, jaccard_wt, hd95_wt, asd_wt, hd95_mm_wt, asd_mm_wt,
      empty_prediction_wt, empty_ground_truth_wt, dice_tc, ..., spacing``; see :attr:`csv_columns`);
    * ``summary_name`` (default ``metrics_summary.json``): ``num_cases``,
      ``num_empty_prediction``, ``num_empty_ground_truth``, ``units`` (voxels vs mm),
      ``mean`` / ``std`` (nan-aware, population std, ``std_ddof: 0``) and ``num_nan`` per
      metric, ``aggregation`` and ``nan_policy`` (the rules in words), ``foreground``,
      ``spacing_source``, ``per_case_csv``, plus the keys of ``extra_info`` (e.g. the
      evaluation protocol and the sliding-window settings). NaN means are written as ``null``.
      With ``region_names``: ``mean`` / ``std`` / ``num_nan`` are keyed by the per-region metric
      columns (``dice_wt`` ...), ``num_empty_prediction`` / ``num_empty_ground_truth`` are dicts
      region -> count, and ``regions`` lists the region names in channel order.

    It logs a one-line summary (logger ``sasnet_components.SegmentationReport``) and, when
    ``write_engine_metrics`` is True, stores the means in ``engine.state.metrics`` under the
    metric names (``"dice"``, ``"jaccard"``, ``"hd95"``, ``"asd"``, ``"hd95_mm"``,
    ``"asd_mm"``; NaN when no case had a finite value). These are set on ``COMPLETED``, after
    MONAI's key-metric bookkeeping of ``EPOCH_COMPLETED``, so they cannot act as key metric.
    Each empty mask raises an :class:`~sasnet_components.metrics.segmentation.EmptyMaskWarning`
    naming the case. The records are cleared on ``Events.STARTED``, so one evaluator can run
    several times.

    Distributed runs: only rank 0 (``ignite.distributed.get_rank()``) writes, and the report then
    holds only the cases evaluated on rank 0; gathering the cases of all ranks is out of scope,
    so run the evaluation that produces the reported numbers in a single process.

    Args:
        output_dir: folder of the two report files.
        pred_key: key of the discrete prediction in each output dict.
        label_key: key of the ground-truth label in each output dict.
        id_key: key of the case identifier in the output or batch dicts.
        foreground_class: class index scored as foreground (default 1), or None for "any class
            > 0".
        spacing: fixed voxel spacing per spatial axis (e.g. ``[0.625, 0.625, 0.625]`` mm),
            overriding the affine of the labels; None (default) reads it from each label.
        extra_info: JSON-serialisable dict merged into the summary (its keys must not collide
            with the summary's own keys).
        csv_name: file name of the per-case table.
        summary_name: file name of the JSON summary.
        write_engine_metrics: also store the means in ``engine.state.metrics`` (with
            ``region_names``: under the per-region names, ``dice_wt`` ...).
        region_names: names of the channels of region-mask inputs ``(R, *spatial)`` (e.g.
            ``[wt, tc, et]``, in the order of ``ClassRegionsd``'s ``regions``); None (default): the
            class-map scoring of ``foreground_class``.

    Raises:
        TypeError: when ``extra_info`` is not a JSON-serialisable dict or a name is not a string.
        ValueError: for a negative ``foreground_class``, a non-positive ``spacing`` entry, an
            ``extra_info`` key that collides with a summary key, equal / empty file names, or
            empty / repeated / non-string ``region_names``.

    Example (bundle YAML)::

        - _target_: sasnet_components.handlers.segmentation_report.SegmentationReport
          output_dir: "$@output_dir + '/eval'"
          extra_info: {protocol: paper, roi_size: [112, 112, 80], stride: [18, 18, 4]}
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        pred_key: str = "pred",
        label_key: str = "label",
        id_key: str = "case_id",
        foreground_class: int | None = 1,
        spacing: Sequence[float] | None = None,
        extra_info: Mapping[str, Any] | None = None,
        csv_name: str = "metrics_per_case.csv",
        summary_name: str = "metrics_summary.json",
        write_engine_metrics: bool = False,
        region_names: Sequence[str] | None = None,
    ) -> None:
        self.output_dir = os.fspath(output_dir)
        for name, value in (("pred_key", pred_key), ("label_key", label_key), ("id_key", id_key)):
            if not isinstance(value, str):
                raise InputTypeError(f"`{name}` must be a string, got {type(value).__name__} ({value!r}).")
        self.pred_key, self.label_key, self.id_key = pred_key, label_key, id_key

        if foreground_class is not None:
            if isinstance(foreground_class, bool) or int(foreground_class) != foreground_class:
                raise InputTypeError(f"`foreground_class` must be an integer or None, got {foreground_class!r}.")
            if foreground_class < 0:
                raise InvalidInputError(f"`foreground_class` must be >= 0 or None, got {foreground_class}.")
            foreground_class = int(foreground_class)
        self.foreground_class = foreground_class

        if spacing is not None:
            try:
                spacing_t = tuple(float(s) for s in spacing)
            except (TypeError, ValueError) as err:
                raise InputTypeError(f"`spacing` must be a sequence of positive floats or None, got {spacing!r}.") from err
            if len(spacing_t) not in (2, 3) or not all(math.isfinite(s) and s > 0 for s in spacing_t):
                raise InvalidInputError(
                    f"`spacing` must hold 2 or 3 finite positive floats (one per spatial dim), got {spacing!r}."
                )
            spacing = spacing_t
        self.spacing = spacing

        extra = {} if extra_info is None else extra_info
        if not isinstance(extra, Mapping):
            raise InputTypeError(f"`extra_info` must be a dict or None, got {type(extra_info).__name__}.")
        clashes = sorted(set(map(str, extra)) & _RESERVED_SUMMARY_KEYS)
        if clashes:
            raise InvalidInputError(
                f"`extra_info` keys {clashes} collide with the summary's own keys "
                f"{sorted(_RESERVED_SUMMARY_KEYS)}; rename them."
            )
        try:
            json.dumps(dict(extra))
        except (TypeError, ValueError) as err:
            raise InputTypeError(f"`extra_info` must be JSON-serialisable, got {extra_info!r}: {err}") from err
        self.extra_info = dict(extra)

        for name, value in (("csv_name", csv_name), ("summary_name", summary_name)):
            if not isinstance(value, str) or not value:
                raise InvalidInputError(f"`{name}` must be a non-empty file name, got {value!r}.")
        if csv_name == summary_name:
            raise InvalidInputError(f"`csv_name` and `summary_name` must differ, both are {csv_name!r}.")
        self.csv_name, self.summary_name = csv_name, summary_name
        self.write_engine_metrics = bool(write_engine_metrics)

        if region_names is not None:
            if isinstance(region_names, str) or not isinstance(region_names, Sequence) or not region_names:
                raise InvalidInputError(f"`region_names` must be a non-empty list of region names or None, got {region_names!r}.")
            if not all(isinstance(n, str) and n for n in region_names) or len(set(region_names)) != len(region_names):
                raise InvalidInputError(f"`region_names` must be distinct non-empty strings, got {list(region_names)!r}.")
            region_names = tuple(region_names)
        self.region_names: tuple[str, ...] | None = region_names
        if region_names is None:
            self.metric_columns: tuple[str, ...] = METRIC_NAMES
            self.flag_columns: tuple[str, ...] = _FLAGS
            self.csv_columns: tuple[str, ...] = CSV_COLUMNS
        else:
            self.metric_columns = tuple(f"{m}_{r}" for r in region_names for m in METRIC_NAMES)
            self.flag_columns = tuple(f"{f}_{r}" for r in region_names for f in _FLAGS)
            per_region = tuple(c for r in region_names for c in [f"{m}_{r}" for m in METRIC_NAMES + _FLAGS])
            self.csv_columns = ("case_id",) + per_region + ("spacing",)

        self._records: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ ignite
    def attach(self, engine: Engine) -> None:
        """Register :meth:`reset` (``STARTED``), :meth:`iteration_completed` and :meth:`completed`."""
        for event, handler in (
            (Events.STARTED, self.reset),
            (Events.ITERATION_COMPLETED, self.iteration_completed),
            (Events.COMPLETED, self.completed),
        ):
            if not engine.has_event_handler(handler, event):
                engine.add_event_handler(event, handler)

    def reset(self, engine: Engine | None = None) -> None:
        """Forget the cases of a previous run."""
        self._records = []

    @property
    def records(self) -> list[dict[str, Any]]:
        """Per-case rows collected so far (dicts with the keys of :attr:`csv_columns`)."""
        return list(self._records)

    def iteration_completed(self, engine: Engine) -> None:
        """Score every sample of ``engine.state.output``."""
        outputs = engine.state.output
        if isinstance(outputs, Mapping):
            outputs = decollate_batch(outputs, detach=True)
        if not isinstance(outputs, Sequence) or not all(isinstance(o, Mapping) for o in outputs):
            raise TypeError(
                "`engine.state.output` must be a list of per-sample dicts (an evaluator with "
                f"decollate=True) or a dict of batched tensors, got {type(outputs).__name__}."
            )
        batch = engine.state.batch
        for i, item in enumerate(outputs):
            self._records.append(self._score(item, self._batch_item(batch, i, len(outputs))))

    def completed(self, engine: Engine) -> None:
        """Write the report (rank 0 only), log it and optionally set ``engine.state.metrics``."""
        summary = self.summary()
        if self.write_engine_metrics:
            for name in self.metric_columns:
                value = summary["mean"][name]
                engine.state.metrics[name] = math.nan if value is None else value
        if idist.get_rank() != 0:
            return
        if idist.get_world_size() > 1:
            logger.warning(
                "SegmentationReport holds only the %d cases evaluated on rank 0 of %d processes; "
                "cases are not gathered across ranks.",
                len(self._records),
                idist.get_world_size(),
            )
        csv_path, summary_path = self.write(summary)
        logger.info("%s -> %s, %s", self._one_line(summary), csv_path, summary_path)

    # ------------------------------------------------------------------ report
    def summary(self) -> dict[str, Any]:
        """The JSON summary of the cases collected so far (see the class docstring for the keys)."""
        n = len(self._records)
        mean, std, num_nan = {}, {}, {}
        for name in self.metric_columns:
            values = np.asarray([r[name] for r in self._records], dtype=np.float64)
            finite = values[~np.isnan(values)]
            num_nan[name] = int(values.size - finite.size)
            mean[name] = float(finite.mean()) if finite.size else None
            std[name] = float(finite.std(ddof=0)) if finite.size else None
        if self.spacing is not None:
            spacing_source = f"fixed `spacing` argument {list(self.spacing)}"
        else:
            spacing_source = "label MetaTensor affine (norms of its first spatial columns), per case"
        if self.region_names is None:
            empty_pred: Any = sum(bool(r["empty_prediction"]) for r in self._records)
            empty_gt: Any = sum(bool(r["empty_ground_truth"]) for r in self._records)
            foreground = "label > 0" if self.foreground_class is None else f"label == {self.foreground_class}"
        else:
            empty_pred = {g: sum(bool(r[f"empty_prediction_{g}"]) for r in self._records) for g in self.region_names}
            empty_gt = {g: sum(bool(r[f"empty_ground_truth_{g}"]) for r in self._records) for g in self.region_names}
            foreground = "region masks, channel r = region r of `regions`"
        out: dict[str, Any] = {
            "num_cases": n,
            "num_empty_prediction": empty_pred,
            "num_empty_ground_truth": empty_gt,
            "units": dict(_UNITS),
            "mean": mean,
            "std": std,
            "std_ddof": 0,
            "num_nan": num_nan,
            "aggregation": _AGGREGATION,
            "nan_policy": _NAN_POLICY,
            "foreground": foreground,
            "spacing_source": spacing_source,
            "per_case_csv": self.csv_name,
        }
        if self.region_names is not None:
            out["regions"] = list(self.region_names)
        out.update(self.extra_info)
        return out

    def write(self, summary: dict[str, Any] | None = None) -> tuple[str, str]:
        """Write the CSV and the JSON summary into ``output_dir``; returns both paths."""
        os.makedirs(self.output_dir, exist_ok=True)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.csv_columns)
        for r in self._records:
            spacing = "" if r["spacing"] is None else " ".join(repr(float(s)) for s in r["spacing"])
            flags = set(self.flag_columns)
            writer.writerow(
                [r["case_id"]]
                + [str(bool(r[c])) if c in flags else repr(float(r[c])) for c in self.csv_columns[1:-1]]
                + [spacing]
            )
        csv_path = os.path.join(self.output_dir, self.csv_name)
        summary_path = os.path.join(self.output_dir, self.summary_name)
        atomic_write_text(csv_path, buffer.getvalue())
        summary = self.summary() if summary is None else summary
        atomic_write_text(summary_path, json.dumps(summary, indent=2, allow_nan=False) + "\n")
        return csv_path, summary_path

    # ------------------------------------------------------------------ helpers
    def _batch_item(self, batch: Any, index: int, size: int) -> Mapping | None:
        """The ``index``-th sample of ``engine.state.batch`` (decollated list or batched dict), if any."""
        if isinstance(batch, Sequence) and not isinstance(batch, (str, bytes)) and len(batch) == size:
            item = batch[index]
            return item if isinstance(item, Mapping) else None
        if isinstance(batch, Mapping) and self.id_key in batch:
            ids = batch[self.id_key]
            if isinstance(ids, (list, tuple, torch.Tensor, np.ndarray)) and len(ids) == size:
                return {self.id_key: ids[index]}
        return None

    def _case_id(self, item: Mapping, batch_item: Mapping | None) -> str:
        if self.id_key in item:
            return _case_id_str(item[self.id_key])
        if batch_item is not None and self.id_key in batch_item:
            return _case_id_str(batch_item[self.id_key])
        for key in (self.label_key, self.pred_key):
            value = item.get(key)
            if isinstance(value, MetaTensor):
                name = _name_from_filename(value.meta.get("filename_or_obj"))
                if name:
                    return name
        return f"case_{len(self._records)}"

    @staticmethod
    def _plain_tensor(value: Any, name: str, key: str, case_id: str) -> torch.Tensor:
        """`value` (tensor, MetaTensor or numpy array) as a detached plain tensor."""
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(value)
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"case {case_id!r}: `{name}` (output[{key!r}]) must be a torch.Tensor or numpy array, "
                f"got {type(value).__name__}."
            )
        return (value.as_tensor() if isinstance(value, MetaTensor) else value).detach()

    def _class_map(self, value: Any, name: str, key: str, case_id: str) -> torch.Tensor:
        """``(1 | C, *spatial)`` -> ``(*spatial)`` class indices."""
        x = self._plain_tensor(value, name, key, case_id)
        if x.ndim not in (3, 4):
            raise ValueError(
                f"case {case_id!r}: `{name}` (output[{key!r}]) must have shape (C, H, W) or (C, H, W, D) "
                f"with a channel dim (C=1 class indices or C>1 one-hot), got shape {tuple(x.shape)}."
            )
        if x.shape[0] > 1:
            if self.foreground_class is not None and self.foreground_class >= x.shape[0]:
                raise ValueError(
                    f"case {case_id!r}: `foreground_class` {self.foreground_class} is not a channel of the "
                    f"one-hot `{name}` (output[{key!r}]) with {x.shape[0]} channels."
                )
            return x.argmax(dim=0)
        x = x[0]
        if x.is_floating_point() and not torch.equal(x, torch.round(x)):
            raise ValueError(
                f"case {case_id!r}: `{name}` (output[{key!r}]) with one channel must hold class indices, "
                "got non-integer values; discretise it in the postprocessing (e.g. AsDiscreted with "
                "argmax=True or threshold=0.5)."
            )
        return x

    def _spacing(self, label: Any, ndim: int, case_id: str) -> tuple[float, ...] | None:
        if self.spacing is not None:
            if len(self.spacing) != ndim:
                raise InvalidInputError(
                    f"case {case_id!r}: `spacing` {list(self.spacing)} has {len(self.spacing)} entries but the "
                    f"masks have {ndim} spatial dims."
                )
            return self.spacing
        if not isinstance(label, MetaTensor):
            return None
        affine = torch.as_tensor(label.affine, dtype=torch.float64).detach().cpu()
        if affine.ndim == 3 and affine.shape[0] == 1:
            affine = affine[0]
        if affine.ndim != 2 or affine.shape[0] != affine.shape[1] or affine.shape[0] - 1 < ndim:
            raise InvalidInputError(
                f"case {case_id!r}: the label affine must be a square (r+1, r+1) matrix with r >= {ndim}, "
                f"got shape {tuple(affine.shape)}."
            )
        cols = affine[:-1, :ndim]
        return tuple(float(v) for v in torch.linalg.norm(cols, dim=0))

    def _region_masks(self, value: Any, name: str, key: str, case_id: str) -> torch.Tensor:
        """``(R, *spatial)`` binary region masks -> bool tensor of the same shape."""
        x = self._plain_tensor(value, name, key, case_id)
        regions = len(self.region_names)
        if x.ndim not in (3, 4) or x.shape[0] != regions:
            raise ValueError(
                f"case {case_id!r}: `{name}` (output[{key!r}]) must hold {regions} region masks "
                f"(R, H, W[, D]) for the regions {list(self.region_names)} (e.g. from ClassRegionsd), "
                f"got shape {tuple(x.shape)}."
            )
        if x.dtype != torch.bool and not bool(((x == 0) | (x == 1)).all()):
            raise ValueError(
                f"case {case_id!r}: `{name}` (output[{key!r}]) region masks must hold 0 and 1 only; apply "
                "ClassRegionsd to the class-index map (after argmax)."
            )
        return x != 0

    def _warn_if_empty(self, case_id: str, metrics: Mapping[str, Any], region: str | None) -> None:
        if metrics["empty_prediction"] or metrics["empty_ground_truth"]:
            flags = (("prediction", metrics["empty_prediction"]), ("ground truth", metrics["empty_ground_truth"]))
            which = [w for w, f in flags if f]
            where = "" if region is None else f" region {region!r}:"
            warnings.warn(
                f"case {case_id!r}:{where} empty {' and '.join(which)}; its undefined metrics are reported as NaN.",
                EmptyMaskWarning,
                stacklevel=3,
            )

    def _score_regions(self, item: Mapping, case_id: str) -> dict[str, Any]:
        pred = self._region_masks(item[self.pred_key], "pred", self.pred_key, case_id)
        label = self._region_masks(item[self.label_key], "label", self.label_key, case_id)
        if pred.shape != label.shape:
            raise ValueError(
                f"case {case_id!r}: prediction (output[{self.pred_key!r}]) and label (output[{self.label_key!r}]) "
                f"region masks must have the same shape, got {tuple(pred.shape)} and {tuple(label.shape)}."
            )
        spacing = self._spacing(item[self.label_key], pred.ndim - 1, case_id)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", EmptyMaskWarning)
            per_region = region_metrics(pred, label.to(pred.device), self.region_names, spacing=spacing)
        record: dict[str, Any] = {"case_id": case_id}
        for region, metrics in per_region.items():
            self._warn_if_empty(case_id, metrics, region)
            for name in METRIC_NAMES:
                record[f"{name}_{region}"] = float(metrics.get(name, math.nan))
            for flag in _FLAGS:
                record[f"{flag}_{region}"] = bool(metrics[flag])
        record["spacing"] = None if spacing is None else list(spacing)
        return record

    def _score(self, item: Mapping, batch_item: Mapping | None) -> dict[str, Any]:
        case_id = self._case_id(item, batch_item)
        for key in (self.pred_key, self.label_key):
            if key not in item:
                raise KeyError(
                    f"case {case_id!r}: key {key!r} is missing from the engine output; available keys: "
                    f"{sorted(map(str, item.keys()))}."
                )
        if self.region_names is not None:
            return self._score_regions(item, case_id)
        pred = self._class_map(item[self.pred_key], "pred", self.pred_key, case_id)
        label = self._class_map(item[self.label_key], "label", self.label_key, case_id)
        if pred.shape != label.shape:
            raise ValueError(
                f"case {case_id!r}: prediction (output[{self.pred_key!r}]) and label (output[{self.label_key!r}]) "
                f"must have the same spatial shape, got {tuple(pred.shape)} and {tuple(label.shape)}."
            )
        if self.foreground_class is None:
            pred_fg, label_fg = pred > 0, label > 0
        else:
            pred_fg, label_fg = pred == self.foreground_class, label == self.foreground_class
        spacing = self._spacing(item[self.label_key], pred.ndim, case_id)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", EmptyMaskWarning)
            metrics = segmentation_metrics(pred_fg, label_fg.to(pred_fg.device), spacing=spacing)
        if metrics["empty_prediction"] or metrics["empty_ground_truth"]:
            flags = (("prediction", metrics["empty_prediction"]), ("ground truth", metrics["empty_ground_truth"]))
            which = [w for w, f in flags if f]
            warnings.warn(
                f"case {case_id!r}: empty {' and '.join(which)}; its undefined metrics are reported as NaN.",
                EmptyMaskWarning,
                stacklevel=2,
            )
        record: dict[str, Any] = {"case_id": case_id}
        for name in METRIC_NAMES:
            record[name] = float(metrics.get(name, math.nan))
        for flag in _FLAGS:
            record[flag] = bool(metrics[flag])
        record["spacing"] = None if spacing is None else list(spacing)
        return record

    def _one_line(self, summary: Mapping[str, Any]) -> str:
        def fmt(name: str) -> str:
            m, s = summary["mean"][name], summary["std"][name]
            return f"{name} n/a" if m is None else f"{name} {m:.4f}±{s:.4f}"

        return (
            f"SegmentationReport: {summary['num_cases']} cases, "
            + ", ".join(fmt(n) for n in self.metric_columns)
            + " (hd95/asd in voxels, *_mm in mm; nan-aware mean±std, ddof=0), "
            f"{summary['num_empty_prediction']} empty predictions, "
            f"{summary['num_empty_ground_truth']} empty ground truths"
        )
