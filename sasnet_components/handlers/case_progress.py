"""One log line per case an evaluator has processed: validation, evaluation, inference."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping
from typing import Any, List, Optional, Union

import torch
from ignite.engine import Engine, Events
from monai.data import decollate_batch

from sasnet_components.metrics.segmentation import EmptyMaskWarning, dice

__all__ = ["CaseProgressLogger"]


def _foreground(value: Any, foreground_class: int) -> torch.Tensor:
    """Foreground mask of ``(C, *spatial)`` one-hot / probabilities (argmax over C) or ``(1, *spatial)`` class indices."""
    x = torch.as_tensor(value).detach()
    classes = x.argmax(dim=0) if x.shape[0] > 1 else x[0].round()
    return classes == foreground_class


class CaseProgressLogger:
    """Log ``case i/n: <case id>[, Dice d] (t s)`` at INFO after each case an engine has processed.

    Long evaluations (a validation during training, an evaluation, an inference) thus show which case
    they are at, and how long each takes, in the log. Cases are counted from each epoch's start; `i`
    counts cases, not batches. The case id is the batch's `id_key` entry (``"?"`` without one). With a
    `label_key`, the Dice of the `foreground_class` between ``output[pred_key]`` and
    ``output[label_key]`` follows (``nan`` when both are empty): each of shape ``(C, *spatial)``
    (one-hot or probabilities, reduced by argmax) or ``(1, *spatial)`` (class indices). The time is the
    wall time since the previous line (or the epoch's start), per case of the batch.

    Args:
        total: number of cases; default the length of the engine's dataset (``engine.data_loader.dataset``),
            else ``engine.state.epoch_length``.
        id_key: key of the case id in the batch.
        pred_key: key of the prediction in the engine output.
        label_key: key of the ground truth in the engine output; None (default): no Dice (e.g. in
            inference, where there is no ground truth).
        foreground_class: the class whose Dice is logged.
        name: name of the logger.

    Example (bundle YAML)::

        - _target_: sasnet_components.CaseProgressLogger
          label_key: label
          name: validation

    logs ``case 2/8: LA007, Dice 0.8731 (48.3 s)``.
    """

    def __init__(
        self,
        total: Optional[int] = None,
        id_key: str = "case_id",
        pred_key: str = "pred",
        label_key: Optional[str] = None,
        foreground_class: int = 1,
        name: str = "sasnet_components.cases",
    ) -> None:
        self.total = None if total is None else int(total)
        self.id_key = id_key
        self.pred_key = pred_key
        self.label_key = label_key
        self.foreground_class = int(foreground_class)
        self.logger = logging.getLogger(name)
        self.count = 0
        self._last = time.perf_counter()

    def attach(self, engine: Engine) -> None:
        """Register :meth:`start` (``EPOCH_STARTED``) and the logging (``ITERATION_COMPLETED``)."""
        engine.add_event_handler(Events.EPOCH_STARTED, self.start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def start(self, engine: Optional[Engine] = None) -> None:
        """Count cases from 0 and time from now."""
        self.count = 0
        self._last = time.perf_counter()

    def _total(self, engine: Engine) -> Union[int, str]:
        if self.total is not None:
            return self.total
        dataset = getattr(getattr(engine, "data_loader", None), "dataset", None)
        try:
            return len(dataset)  # type: ignore[arg-type]
        except TypeError:
            return engine.state.epoch_length or "?"

    def _case_ids(self, batch: Any) -> List[str]:
        if isinstance(batch, Mapping):
            ids = batch.get(self.id_key)
            ids = list(ids) if isinstance(ids, (list, tuple)) else [ids]
        elif isinstance(batch, (list, tuple)):
            ids = [b.get(self.id_key) if isinstance(b, Mapping) else None for b in batch]
        else:
            ids = [None]
        return ["?" if i is None else str(i) for i in ids]

    def _dice(self, item: Any) -> str:
        if self.label_key is None or not isinstance(item, Mapping) or self.label_key not in item:
            return ""
        pred = _foreground(item[self.pred_key], self.foreground_class)
        label = _foreground(item[self.label_key], self.foreground_class)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", EmptyMaskWarning)
            return f", Dice {dice(pred, label.to(pred.device)):.4f}"

    def __call__(self, engine: Engine) -> None:
        """Log one line per case of the batch just processed."""
        ids = self._case_ids(engine.state.batch)
        outputs = engine.state.output
        if isinstance(outputs, Mapping) and self.label_key is not None:
            outputs = decollate_batch(outputs, detach=True)
        if not isinstance(outputs, (list, tuple)):
            outputs = []
        now = time.perf_counter()
        seconds, self._last = (now - self._last) / len(ids), now
        total = self._total(engine)
        for i, case_id in enumerate(ids):
            self.count += 1
            score = self._dice(outputs[i]) if i < len(outputs) else ""
            self.logger.info(f"case {self.count}/{total}: {case_id}{score} ({seconds:.1f} s)")
