"""A training handler for the multi-process tests: what one process of a run trained on and ended with.

Layered as a config file over ``multi_gpu_train.yaml``, it writes ``<folder>/rank<r>.pt`` when the run
completes: the process's network state, its SAR memory state; for every iteration the case ids, crop
starts and views of its share of the batch and a digest of its torch generator after the iteration
(what dropout drew from); for every validation the key metric and the number of cases this process
validated. It can also fail on purpose. Only the tests use it (checkpoints hold rank 0's state alone).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.distributed as dist
from ignite.engine import Engine, Events


class RankProbe:
    """Record this process's batches, and write them with its final network and SAR memory.

    Args:
        folder: where ``rank<r>.pt`` is written.
        network: the trained network (plain module).
        sar_fusion: the run's ``SARFusion``.
        evaluator: the validation evaluator, whose runs are recorded.
        fail_at: ``[rank, iteration]``: that process raises at the start of that iteration.
    """

    def __init__(
        self,
        folder: str,
        network: torch.nn.Module,
        sar_fusion: Any,
        evaluator: Optional[Engine] = None,
        fail_at: Optional[Sequence[int]] = None,
    ) -> None:
        self.folder = Path(folder)
        self.network = network
        self.sar_fusion = sar_fusion
        self.fail_at = None if fail_at is None else [int(v) for v in fail_at]
        self.batches: List[Dict[str, Any]] = []
        self.validations: List[Dict[str, Any]] = []
        if evaluator is not None:
            evaluator.add_event_handler(Events.COMPLETED, self.validation_completed)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_STARTED, self.iteration_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def iteration_started(self, engine: Engine) -> None:
        if self.fail_at == [dist.get_rank(), engine.state.iteration]:
            raise RuntimeError(f"rank probe: process {dist.get_rank()} fails at iteration {engine.state.iteration}")

    def validation_completed(self, evaluator: Engine) -> None:
        self.validations.append({"metrics": dict(evaluator.state.metrics), "cases": evaluator.state.epoch_length})

    def iteration_completed(self, engine: Engine) -> None:
        batch = engine.state.batch
        self.batches.append(
            {
                "iteration": engine.state.iteration,
                "case_id": list(batch["case_id"]),
                "crop_start": torch.as_tensor(batch["crop_start"]).tolist(),
                "view": torch.as_tensor(batch["view"]).tolist(),
                "generator": hashlib.sha256(torch.get_rng_state().numpy().tobytes()).hexdigest(),
            }
        )

    def completed(self, engine: Engine) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        state = {
            "network": {k: v.detach().cpu().clone() for k, v in self.network.state_dict().items()},
            "sar": self.sar_fusion.state_dict(),
            "batches": self.batches,
            "validations": self.validations,
        }
        torch.save(state, self.folder / f"rank{dist.get_rank()}.pt")
