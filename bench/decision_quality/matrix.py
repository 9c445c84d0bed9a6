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

import numpy as np
import numpy.typing as npt
from sklearn.tree import DecisionTreeClassifier  # type: ignore[import-untyped, unused-ignore]

from bench.decision_quality.streams import Stream

WINDOW = 5  # batches a model is trained on
UNDEFINED = -1


def make_model() -> DecisionTreeClassifier:
    return DecisionTreeClassifier(max_depth=8, min_samples_leaf=5, random_state=0)


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


class Models:
    """The models of a stream, fitted once, and their row-level errors on demand."""

    def __init__(self, stream: Stream, window: int = WINDOW) -> None:
        if stream.batches < window + 2:
            raise ValueError(
                f"{stream.name}: {stream.batches} batches; at least {window + 2} are needed "
                f"(a {window}-batch training window, then two served batches)"
            )
        self.stream = stream
        self.window = window
        self.slices = stream.batch_slices()
        self.fitted: dict[int, Any] = {}
        self._classes = np.unique(stream.labels)

    def training_rows(self, i: int) -> slice:
        return slice(self.slices[i - self.window + 1].start, self.slices[i].stop)

    def model(self, i: int) -> Any:
        if i not in self.fitted:
            rows = self.training_rows(i)
            labels = self.stream.labels[rows]
            if np.unique(labels).size < 2:
                self.fitted[i] = _Constant(int(labels[0]))
            else:
                self.fitted[i] = make_model().fit(self.stream.features[rows], labels)
        return self.fitted[i]

    def row_errors(self, i: int, j: int) -> npt.NDArray[np.bool_]:
        rows = self.slices[j]
        predicted = self.model(i).predict(self.stream.features[rows])
        return np.asarray(predicted != self.stream.labels[rows])

    def matrix(self) -> list[list[int]]:
        stream, t = self.stream, self.stream.batches
        errors = np.full((t, t), UNDEFINED, dtype=np.int64)
        starts = np.array([s.start for s in self.slices], dtype=np.int64)
        for i in range(self.window - 1, t - 1):
            future = slice(self.slices[i + 1].start, stream.features.shape[0])
            wrong = self.model(i).predict(stream.features[future]) != stream.labels[future]
            errors[i, i + 1 :] = np.add.reduceat(
                wrong.astype(np.int64), starts[i + 1 :] - future.start
            )
        return [[int(v) for v in row] for row in errors]


class _Constant:
    """A stream window with a single class: predict it (a tree needs two classes)."""

    def __init__(self, label: int) -> None:
        self.label = label
        self.classes_ = np.array([label])

    def predict(self, features: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        return np.full(features.shape[0], self.label, dtype=np.int64)

    def predict_proba(self, features: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.ones((features.shape[0], 1), dtype=np.float64)


def schedule_cost(case: Case, retrain_after: list[int], cost: float) -> tuple[float, int]:
    """(total cost, errors) of a schedule: errors of the serving model on every served batch,
    plus `cost` per retraining."""
    when = {b for b in retrain_after if case.window <= b < case.batches - 1}
    serving, errors = case.first, 0
    for j in range(case.window, case.batches):
        errors += case.errors[serving][j]
        if j in when:
            serving = j
    retrains = len(when)
    return errors + cost * retrains, errors


def oracle(case: Case, cost: float) -> tuple[float, list[int]]:
    """The cheapest schedule in hindsight (dynamic programming over the error matrix):
    best[m] = the least cost of batches j.. when model m serves batch j."""
    t, first = case.batches, case.first
    errors = case.errors
    # After the last batch nothing is left to pay.
    best = [0.0] * t
    choice: list[list[bool]] = [[False] * t for _ in range(t)]
    for j in range(t - 1, case.window - 1, -1):
        new = [0.0] * t
        retrain_value = cost + best[j] if j < t - 1 else float("inf")
        for m in range(first, j):
            keep = best[m]
            if retrain_value < keep:
                new[m] = errors[m][j] + retrain_value
                choice[j][m] = True
            else:
                new[m] = errors[m][j] + keep
        best = new
    schedule: list[int] = []
    serving = first
    for j in range(case.window, t):
        if choice[j][serving]:
            schedule.append(j)
            serving = j
    return best[first], schedule
