"""River's synthetic streams as model loss streams, for the performance monitoring tests.

A small scikit-learn model is trained on the pre-change concept (its own seed), then scores a
stream whose concept changes (river's `ConceptDriftStream`) or does not; the per-prediction
losses, in stream order, are what the monitor's detector watches.

river's `ConceptDriftStream` mixes the two concepts with probability `1 / (1 + exp(-4 (t -
position) / width))`: `width` is the length of the transition, centred on `position` (`math.exp`
overflows below width ~ 4 * position / 700, so "abrupt" here is a 25-row transition).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
from river.datasets import synth
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor  # type: ignore[import-untyped]

Make = Callable[[int], Any]
ABRUPT_WIDTH = 25
# The model's training seed is apart from every test stream's.
TRAINING_SEED = 10_000
TRAINING_ROWS = 3000

# Each generator family: the pre-change concept and the post-change one, by seed.
CONCEPTS: dict[str, tuple[Make, Make]] = {
    # SEA: x1 + x2 <= 8 becomes x1 + x2 <= 9.5 (5% label noise): ~10 points more error.
    "sea": (
        lambda seed: synth.SEA(variant=0, noise=0.05, seed=seed),
        lambda seed: synth.SEA(variant=3, noise=0.05, seed=seed),
    ),
    # Agrawal: the demo's change, function 0 (age) becomes 2 (age and education): ~50% error.
    "agrawal": (
        lambda seed: synth.Agrawal(classification_function=0, seed=seed),
        lambda seed: synth.Agrawal(classification_function=2, seed=seed),
    ),
    # A random hyperplane held still (no magnitude of change); its seed draws both the plane
    # and the rows, so stationary streams are successive stretches of one stream.
    "hyperplane": (
        lambda seed: synth.Hyperplane(seed=TRAINING_SEED, n_features=5, noise_percentage=0.05),
        lambda seed: synth.Hyperplane(seed=seed, n_features=5, noise_percentage=0.05),
    ),
}


def arrays(stream: Any, rows: int) -> tuple[np.ndarray, np.ndarray]:
    features, labels = [], []
    for x, y in itertools.islice(stream, rows):
        features.append([float(value) for value in x.values()])
        labels.append(y)
    return np.asarray(features), np.asarray(labels)


@cache
def classifier(family: str, rows: int = TRAINING_ROWS) -> DecisionTreeClassifier:
    """A small tree trained on the family's pre-change concept."""
    before, _ = CONCEPTS[family]
    features, labels = arrays(before(TRAINING_SEED), rows)
    # (The hyperplane's training rows are the first rows of its one stream.)
    return DecisionTreeClassifier(max_depth=8, min_samples_leaf=20, random_state=0).fit(
        features, labels
    )


@dataclass(frozen=True)
class Scored:
    features: np.ndarray
    labels: np.ndarray
    predicted: np.ndarray
    proba: np.ndarray

    @property
    def errors(self) -> np.ndarray:
        wrong: np.ndarray = (self.predicted != self.labels).astype(np.float64)
        return wrong


def score(family: str, stream: Any, rows: int) -> Scored:
    model = classifier(family)
    features, labels = arrays(stream, rows)
    return Scored(features, labels, model.predict(features), model.predict_proba(features))


def drifting(family: str, seed: int, rows: int, position: int, width: int) -> Scored:
    """`rows` of a stream whose concept changes around `position` over `width` rows."""
    before, after = CONCEPTS[family]
    stream = synth.ConceptDriftStream(
        stream=before(seed),
        drift_stream=after(seed + 500),
        position=position,
        width=width,
        seed=seed,
    )
    return score(family, stream, rows)


@cache
def _one_stream(family: str, rows: int) -> tuple[np.ndarray, np.ndarray]:
    before, _ = CONCEPTS[family]
    return arrays(before(TRAINING_SEED), rows)


def stationary(family: str, seed: int, rows: int) -> Scored:
    """`rows` of the pre-change concept, a different stretch for each seed."""
    before, _ = CONCEPTS[family]
    if family != "hyperplane":
        return score(family, before(seed), rows)
    # The k-th stretch after the training rows of the one stream (generated once, up to the
    # next multiple of 32 stretches).
    stretches = 32 * (seed // 32 + 1)
    features, labels = _one_stream(family, TRAINING_ROWS + stretches * rows)
    start = TRAINING_ROWS + seed * rows
    part = slice(start, start + rows)
    model = classifier(family)
    return Scored(
        features[part],
        labels[part],
        model.predict(features[part]),
        model.predict_proba(features[part]),
    )


# ---- regression: Friedman's global abrupt drift --------------------------------------------


@cache
def regressor(rows: int = TRAINING_ROWS) -> DecisionTreeRegressor:
    features, targets = arrays(
        synth.FriedmanDrift(drift_type="gra", position=(10**8, 2 * 10**8), seed=TRAINING_SEED), rows
    )
    return DecisionTreeRegressor(max_depth=8, min_samples_leaf=10, random_state=0).fit(
        features, targets
    )


def friedman(seed: int, rows: int, position: int) -> tuple[np.ndarray, np.ndarray]:
    """Targets and the tree's predictions on a Friedman stream whose concept changes (globally,
    abruptly) at `position`."""
    stream = synth.FriedmanDrift(drift_type="gra", position=(position, 10**8), seed=seed)
    features, targets = arrays(stream, rows)
    return targets.astype(np.float64), regressor().predict(features)
