"""The prequential error matrix of a stream, and the cases the policies are scored on.

The model trained at the end of batch i (on batches i-W+1 .. i) is what serves batch i+1 when a
retraining happens then; `errors[i, j]` is how many rows of batch j it gets wrong (j > i). The
first model is trained at the end of batch W-1 (the first W batches are the warm-up) and serves
batch W. A policy decides at the end of every served batch j < T-1, after its labels arrive:
keep the serving model, or retrain (the model of batch j serves batch j+1). Whatever a policy
does, its cost is read off this one matrix, so every policy and every retraining cost shares
it, and the oracle is a dynamic programme over it.

The model: a scikit-learn decision tree (depth 8, at least 5 rows per leaf): cheap to fit
(hundreds per stream), and it learns all four concepts (SEA's threshold, Agrawal's rules, the
hyperplane, RBF clusters) well enough that a stale model visibly costs errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starters.api.simulate import Models, make_model
from starters.api.streams import Stream
from workflows.coordinator import simulation
from workflows.coordinator.simulation import UNDEFINED, ErrorMatrix

__all__ = [
    "UNDEFINED",
    "WINDOW",
    "Case",
    "Models",
    "Stream",
    "make_model",
    "oracle",
    "schedule_cost",
]

WINDOW = 5  # batches a model is trained on


@dataclass
class Case:
    """Everything a policy may be scored on for one (stream, seed)."""

    stream: str
    seed: int | None
    window: int
    counts: list[int]  # rows per batch
    errors: list[list[int]]  # errors[i][j]; UNDEFINED unless first <= i < j
    # Retraining schedules of the policies whose decisions do not depend on the retraining
    # cost (drift detectors, PSI, the default spec): batches after which they retrain.
    schedules: dict[str, list[int]] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    changes: list[int] = field(default_factory=list)
    description: str = ""

    @property
    def batches(self) -> int:
        return len(self.counts)

    @property
    def first(self) -> int:
        """The batch at whose end the first model is trained."""
        return self.window - 1

    def to_json(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "seed": self.seed,
            "window": self.window,
            "counts": self.counts,
            "errors": self.errors,
            "schedules": self.schedules,
            "notes": self.notes,
            "changes": self.changes,
            "description": self.description,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Case:
        return cls(**data)


def _matrix(case: Case) -> ErrorMatrix:
    return ErrorMatrix(counts=case.counts, errors=case.errors, window=case.window)


def schedule_cost(case: Case, retrain_after: list[int], cost: float) -> tuple[float, int]:
    """(total cost, errors) of a schedule: errors of the serving model on every served batch,
    plus `cost` per retraining (`workflows.coordinator.simulation.schedule_cost`)."""
    return simulation.schedule_cost(_matrix(case), retrain_after, cost)


def oracle(case: Case, cost: float) -> tuple[float, list[int]]:
    """The cheapest schedule in hindsight (dynamic programming over the error matrix:
    `workflows.coordinator.simulation.oracle`)."""
    return simulation.oracle(_matrix(case), cost)
