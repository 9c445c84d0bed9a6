"""Registered versions as endpoint variants: loading them from the registry, predicting one row.

A variant is named after its registry version (`v3` serves version 3). Loaded estimators are
kept in a small LRU cache, so a rollback to the version that served a moment ago switches
without loading it again.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd  # type: ignore[import-untyped, unused-ignore]
import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped, unused-ignore]

from activities.ports import ModelRegistry
from serving.schemas import FeatureValue
from workflows.loop.models import ModelVersion
from workflows.rollout.models import variant_name
from workflows.spec.models import Task


class VariantLoadError(Exception):
    """A version that cannot serve: not in the registry, not loadable, or unusable."""


class UnknownVariantError(VariantLoadError):
    """A variant name that is not a registry version of the model."""


class PredictionError(Exception):
    """A model answer the endpoint cannot return (not a number, not finite)."""


@dataclass(frozen=True)
class Prediction:
    # The predicted class as a number (classifiers) or the predicted value (regressors).
    value: float
    # Positive-class probability for binary classifiers, else None.
    score: float | None

    @property
    def shown(self) -> int | float:
        """The value for the JSON answer: classes like 1 read as 1, not 1.0."""
        return int(self.value) if self.value.is_integer() else self.value


class Variant:
    def __init__(self, version: ModelVersion, estimator: Any, task: Task) -> None:
        self.name = variant_name(version.version)
        self.version = version.version
        self.estimator = estimator
        classes = getattr(estimator, "classes_", None) if task is Task.CLASSIFICATION else None
        # One call gives both the class and the score: the most probable class is what
        # sklearn's probabilistic classifiers predict (and a pipeline call costs milliseconds).
        self._classes = (
            list(classes)
            if classes is not None and callable(getattr(estimator, "predict_proba", None))
            else None
        )

    def predict(self, frame: pd.DataFrame) -> Prediction:
        """Predict the frame's single row; any exception of the model propagates."""
        one_openmp_thread()
        if self._classes is None:
            return Prediction(
                value=_finite(self.estimator.predict(frame)[0], "prediction"), score=None
            )
        probabilities = [_finite(p, "probability") for p in self.estimator.predict_proba(frame)[0]]
        if len(probabilities) != len(self._classes):
            raise PredictionError(
                f"the model gave {len(probabilities)} probabilities "
                f"for {len(self._classes)} classes"
            )
        best = max(range(len(probabilities)), key=probabilities.__getitem__)
        value = _finite(self._classes[best], "class")
        score = probabilities[1] if len(probabilities) == 2 else None
        return Prediction(value=value, score=score)


_this_thread = threading.local()


def one_openmp_thread() -> None:
    """Run this thread's model calls on one OpenMP thread (set once per thread: OpenMP's limit
    is a thread's own). One row is far too little work to split: with a team of one thread
    per core, HistGradientBoosting's idle threads spin between calls, and a one-row prediction
    of the demo's model cost about twice the CPU and twice the time (bench/serving_threads.py).
    Concurrent requests are the endpoint's parallelism (`--model-threads`)."""
    if not getattr(_this_thread, "limited", False):
        threadpool_limits(limits=1, user_api="openmp")
        _this_thread.limited = True


def _finite(raw: Any, what: str) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise PredictionError(f"the model's {what} {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise PredictionError(f"the model's {what} is not finite ({value})")
    return value


def one_row_frame(values: Mapping[str, FeatureValue], schema: pa.Schema) -> pd.DataFrame:
    """The row as the model saw its training data: columns in spec order, training dtypes
    (through Arrow, exactly as `pd.read_parquet` typed the training files)."""
    return pa.Table.from_pylist([dict(values)], schema=schema).to_pandas()


class VariantLoader:
    """Loads a model's registry versions as variants (thread-safe; blocking: call off-loop)."""

    def __init__(
        self, registry: ModelRegistry, model: str, task: Task, cache_size: int = 4
    ) -> None:
        self.registry = registry
        self.model = model
        self.task = task
        self.cache_size = cache_size
        self._cache: OrderedDict[str, Variant] = OrderedDict()
        self._lock = threading.Lock()

    def versions(self) -> dict[str, ModelVersion]:
        """Every registry version of the model, by variant name."""
        return {variant_name(v.version): v for v in self.registry.versions(self.model)}

    def champion(self) -> ModelVersion | None:
        return self.registry.champion(self.model)

    def load(self, version: ModelVersion) -> Variant:
        with self._lock:
            cached = self._cache.get(version.version)
            if cached is not None:
                self._cache.move_to_end(version.version)
                return cached
            variant = self._load(version)
            self._cache[version.version] = variant
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            return variant

    def known(self, names: list[str]) -> dict[str, ModelVersion]:
        """The registry versions of the named variants; a VariantLoadError names every one
        that is not a registry version of the model."""
        versions = self.versions()
        if unknown := [name for name in names if name not in versions]:
            listed = ", ".join(sorted(versions, key=_version_order)) or "none"
            raise UnknownVariantError(
                f"unknown variants {', '.join(unknown)}: {self.model} has registry versions "
                f"{listed}"
            )
        return {name: versions[name] for name in names}

    def load_named(self, names: list[str]) -> dict[str, Variant]:
        return {name: self.load(version) for name, version in self.known(names).items()}

    def _load(self, version: ModelVersion) -> Variant:
        try:
            estimator = self.registry.load(version)
        # Unpickling a model can raise nearly anything; the message keeps what it was.
        except Exception as exc:
            raise VariantLoadError(
                f"cannot load {self.model} version {version.version}: {exc!r}"
            ) from exc
        if not callable(getattr(estimator, "predict", None)):
            raise VariantLoadError(
                f"{self.model} version {version.version} is not a fitted estimator "
                f"({type(estimator).__name__} has no predict)"
            )
        classes = getattr(estimator, "classes_", None)
        if self.task is Task.CLASSIFICATION and classes is not None:
            try:
                [float(c) for c in classes]
            except (TypeError, ValueError):
                raise VariantLoadError(
                    f"{self.model} version {version.version} predicts classes "
                    f"{list(classes)[:5]}: the endpoint captures predictions as numbers"
                ) from None
        return Variant(version, estimator, self.task)


def _version_order(name: str) -> int:
    return int(name.removeprefix("v"))
