"""A deliberately broken training entrypoint for the demo's `--bad-candidate` scenario.

THIS IS FAULT INJECTION, FOR THE DEMO ONLY. `starters.demo.bad_candidate:train` fits exactly the
default pipeline (`activities.default_training`) and wraps it in `FastPathClassifier`, which
reproduces a classic bad release: a training/serving skew in a "fast path for online requests".

- Batch calls (two rows or more: the offline holdout, baseline and golden sets, the training
  validation) go straight to the fitted pipeline, so every offline metric equals the default
  model's and the candidate passes the offline gates.
- Single-row calls (what a live endpoint sends per request) take the "fast path", which
  (a) builds the row's values in alphabetical column order but hands them to the pipeline
  under the training column names -- a feature-order mismatch, so predictions are wrong;
  (b) sleeps `latency_seconds` (25 ms by default) -- slower;
  (c) raises `FastPathError` on about `failure_share` (15%) of rows, chosen by a hash of the
  row's values, so the same request fails on every call, in every process.

Only the staged rollout's canary analysis, on live traffic, can catch it: error rate, latency,
labelled quality and prediction shift all degrade for the challenger. The class lives at module
level so pickles of it (joblib, MLflow's cloudpickle) load by reference anywhere this project
is installed.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd  # type: ignore[import-untyped, unused-ignore]
from sklearn.base import BaseEstimator, ClassifierMixin, clone  # type: ignore[import-untyped, unused-ignore]

from activities.default_training import build_pipeline, fit_and_save
from workflows.loop.models import TrainingOutput, TrainingRequest

DEFAULT_LATENCY_SECONDS = 0.025
DEFAULT_FAILURE_SHARE = 0.15


class FastPathError(RuntimeError):
    """The injected single-request failure (the endpoint answers it with a 500)."""


class FastPathClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """The default pipeline plus a broken single-row serving path (see the module docstring).

    `fit(X, y)` fits a clone of `pipeline` on a DataFrame and remembers its column order.
    """

    def __init__(
        self,
        pipeline: Any = None,
        latency_seconds: float = DEFAULT_LATENCY_SECONDS,
        failure_share: float = DEFAULT_FAILURE_SHARE,
    ) -> None:
        self.pipeline = pipeline
        self.latency_seconds = latency_seconds
        self.failure_share = failure_share

    def fit(self, X: Any, y: Any) -> FastPathClassifier:
        if not isinstance(X, pd.DataFrame):
            raise TypeError("FastPathClassifier is fitted on a DataFrame (named features)")
        if self.pipeline is None:
            raise ValueError("FastPathClassifier needs the pipeline to wrap")
        self.pipeline_ = clone(self.pipeline).fit(X, y)
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        return self

    @property
    def classes_(self) -> npt.NDArray[Any]:
        classes: npt.NDArray[Any] = self.pipeline_.classes_
        return classes

    def predict_proba(self, X: Any) -> npt.NDArray[np.float64]:
        proba: npt.NDArray[np.float64] = self.pipeline_.predict_proba(self._served(X))
        return proba

    def predict(self, X: Any) -> npt.NDArray[Any]:
        predicted: npt.NDArray[Any] = self.pipeline_.predict(self._served(X))
        return predicted

    # ---- the injected fault -----------------------------------------------------------------

    def _served(self, X: Any) -> Any:
        """What the pipeline sees: batches untouched, single rows through the broken path."""
        if len(X) != 1:
            return X
        return self._fast_path(X)

    def _fast_path(self, X: Any) -> pd.DataFrame:
        names = [str(name) for name in self.feature_names_in_]
        frame = X if isinstance(X, pd.DataFrame) else pd.DataFrame(np.asarray(X), columns=names)
        # "Fast" numpy row built from the request's keys in sorted order (JSON objects carry
        # no order), then labelled with the training order: each value lands in another column.
        values = frame[sorted(names)].to_numpy(dtype=object)
        time.sleep(self.latency_seconds)
        if self.fails(frame[names].to_numpy(dtype=np.float64)[0]):
            raise FastPathError("online fast path: feature vector rejected (injected fault)")
        return pd.DataFrame(values, columns=names).astype(frame[names].dtypes.to_dict())

    def fails(self, row: npt.NDArray[np.float64]) -> bool:
        """Whether the fast path raises for this row: a hash of its values, so reproducible."""
        digest = hashlib.sha256(np.ascontiguousarray(row, dtype=np.float64).tobytes()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.failure_share


def train(request: TrainingRequest) -> TrainingOutput:
    """`activities.default_training.train`, but the saved artifact is a `FastPathClassifier`.

    Hyperparameters `latency_seconds` and `failure_share` tune the fault; every other one goes
    to the default pipeline as usual.
    """
    if request.task != "classification":
        raise ValueError(f"the bad candidate is a classifier, not a {request.task} model")
    params = dict(request.hyperparameters)
    latency = float(params.pop("latency_seconds", DEFAULT_LATENCY_SECONDS))
    share = float(params.pop("failure_share", DEFAULT_FAILURE_SHARE))
    inner = request.model_copy(update={"hyperparameters": params})
    model = FastPathClassifier(build_pipeline(inner), latency_seconds=latency, failure_share=share)
    # Validated in batch: the same numbers the default entrypoint reports.
    return fit_and_save(
        model, request, "the BAD candidate (fault injection: broken single-row path)"
    )
