"""Realized quality of a model on labelled traffic, with confidence intervals, and its
per-prediction loss stream.

The metrics are `activities.loop.evaluation`'s (one implementation of every metric, checked against
scikit-learn there): its outcomes (`ClassifierOutcome`, `RegressorOutcome`), `metric_values`
under row weightings and its bootstrap resampling. This module builds outcomes from captured
answers and adds the intervals:

- accuracy, and binary precision and recall, are proportions (of all rows, of predicted
  positives, of actual positives): a Wilson score interval, exact enough from a few dozen rows;
- every other metric (macro precision/recall, ROC-AUC, log loss, RMSE, MAE, R2): a bootstrap
  percentile interval (rows resampled, the metric recomputed).

A metric the outcome cannot produce (a regression metric of a classifier, log loss without
class probabilities) raises `MetricUnavailable`, naming why.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
import scipy.stats  # type: ignore[import-untyped, unused-ignore]

from activities.drift.performance_window import LabelledWindow
from activities.loop.evaluation import (
    ClassifierOutcome,
    Outcome,
    RegressorOutcome,
    metric_values,
    resample_weights,
)
from workflows.drift.performance_models import IntervalMethod, LossKind, MetricQuality
from workflows.loop.models import EvaluationReport
from workflows.loop.rules import HOLDOUT
from workflows.spec.models import Metric, Task

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

PROBABILITY_METRICS = frozenset({Metric.LOG_LOSS, Metric.ROC_AUC})
BOOTSTRAP_SAMPLES = 1000
# scikit-learn's clipping of probabilities in log loss.
_EPS = float(np.finfo(np.float64).eps)


class MetricUnavailable(ValueError):
    """A metric (or loss) that this model or this data cannot produce."""


# ---- outcomes from captured answers ---------------------------------------------------------


def classifier_outcome(
    truth: npt.ArrayLike,
    predicted: npt.ArrayLike,
    *,
    scores: npt.ArrayLike | None = None,
    proba: npt.ArrayLike | None = None,
    classes: npt.ArrayLike | None = None,
) -> ClassifierOutcome:
    """A classifier's outcome over `classes` (default: the sorted labels and predictions seen).

    Probabilities come either as `scores`, the positive-class probability of a binary model (the
    endpoint's capture; the positive class is the larger one, as in scikit-learn), or as `proba`,
    one column per class. Without them (or with any missing) the outcome's probabilities are NaN
    and only the label metrics are available.
    """
    truth_values = np.asarray(truth, dtype=np.float64)
    predicted_values = np.asarray(predicted, dtype=np.float64)
    if truth_values.shape != predicted_values.shape or truth_values.ndim != 1:
        raise ValueError(
            f"truth {truth_values.shape} and predictions {predicted_values.shape} must be "
            "one-dimensional and equally long"
        )
    known = (
        np.unique(np.concatenate([truth_values, predicted_values]))
        if classes is None
        else np.unique(np.asarray(classes, dtype=np.float64))
    )
    if classes is not None:
        for name, values in (("labels", truth_values), ("predictions", predicted_values)):
            if stray := sorted(set(values[~np.isin(values, known)].tolist())):
                shown = ", ".join(f"{value:g}" for value in stray[:5])
                raise ValueError(f"{name} {shown} are not classes of the model ({known.tolist()})")
    n = len(truth_values)
    probabilities = np.full((n, max(len(known), 1)), np.nan)
    if proba is not None:
        matrix = np.asarray(proba, dtype=np.float64)
        if matrix.shape != (n, len(known)):
            raise ValueError(f"proba has shape {matrix.shape}; expected ({n}, {len(known)})")
        probabilities = matrix
    elif scores is not None:
        positive = np.asarray(scores, dtype=np.float64)
        if positive.shape != (n,):
            raise ValueError(f"{positive.shape} scores for {n} rows")
        if len(known) == 2:
            probabilities = np.column_stack([1.0 - positive, positive])
    return ClassifierOutcome(
        classes=known,
        truth=np.searchsorted(known, truth_values).astype(np.int64),
        predicted=np.searchsorted(known, predicted_values).astype(np.int64),
        proba=probabilities,
    )


def regressor_outcome(truth: npt.ArrayLike, predicted: npt.ArrayLike) -> RegressorOutcome:
    truth_values = np.asarray(truth, dtype=np.float64)
    predicted_values = np.asarray(predicted, dtype=np.float64)
    if truth_values.shape != predicted_values.shape or truth_values.ndim != 1:
        raise ValueError("truth and predictions must be one-dimensional and equally long")
    return RegressorOutcome(truth=truth_values, predicted=predicted_values)


def window_outcome(
    window: LabelledWindow, task: Task, classes: npt.ArrayLike | None = None
) -> Outcome:
    """The outcome of a window's labelled predictions (time order kept)."""
    if task is Task.REGRESSION:
        return regressor_outcome(window.label, window.prediction)
    scores = window.score if window.size and np.isfinite(window.score).all() else None
    return classifier_outcome(window.label, window.prediction, scores=scores, classes=classes)


def has_probabilities(outcome: Outcome) -> bool:
    return isinstance(outcome, ClassifierOutcome) and bool(np.isfinite(outcome.proba).all())


def rows(outcome: Outcome) -> int:
    return len(outcome.truth)


def subset(outcome: Outcome, start: int, stop: int | None = None) -> Outcome:
    """The rows [start, stop) of the outcome (a stretch of the time-ordered stream)."""
    part = slice(start, stop)
    if isinstance(outcome, RegressorOutcome):
        return RegressorOutcome(truth=outcome.truth[part], predicted=outcome.predicted[part])
    return ClassifierOutcome(
        classes=outcome.classes,
        truth=outcome.truth[part],
        predicted=outcome.predicted[part],
        proba=outcome.proba[part],
    )


def task_of(outcome: Outcome) -> Task:
    return Task.CLASSIFICATION if isinstance(outcome, ClassifierOutcome) else Task.REGRESSION


def check_metrics(outcome: Outcome, metrics: Sequence[Metric]) -> None:
    """Raise MetricUnavailable naming every metric the outcome cannot produce."""
    task = task_of(outcome)
    problems = [
        f"{metric.value} is a {metric.task.value} metric and this is a {task.value} model"
        for metric in metrics
        if metric.task is not task
    ]
    if isinstance(outcome, ClassifierOutcome) and not has_probabilities(outcome):
        problems += [
            f"{metric.value} needs class probabilities, which these predictions lack (the "
            "endpoint captures them for binary classifiers with predict_proba only)"
            for metric in metrics
            if metric in PROBABILITY_METRICS
        ]
    if problems:
        raise MetricUnavailable("; ".join(problems))


# ---- realized quality ----------------------------------------------------------------------


def wilson_interval(successes: int, trials: int, confidence: float) -> tuple[float, float]:
    """The Wilson score interval of a proportion; [0, 1] without trials."""
    if trials == 0:
        return 0.0, 1.0
    interval = scipy.stats.binomtest(successes, trials).proportion_ci(
        confidence_level=confidence, method="wilson"
    )
    return float(interval.low), float(interval.high)


def _proportion(metric: Metric, outcome: Outcome) -> tuple[int, int] | None:
    """(successes, trials) when the metric is a plain proportion of this outcome."""
    if not isinstance(outcome, ClassifierOutcome):
        return None
    hits = outcome.predicted == outcome.truth
    if metric is Metric.ACCURACY:
        return int(hits.sum()), len(hits)
    if outcome.binary and metric in (Metric.PRECISION, Metric.RECALL):
        side = outcome.predicted if metric is Metric.PRECISION else outcome.truth
        among = side == outcome.positive
        return int((hits & among).sum()), int(among.sum())
    return None


def _bootstrap(
    metric: Metric,
    outcome: Outcome,
    confidence: float,
    samples: int,
    rng: np.random.Generator,
) -> tuple[float, float] | None:
    replicates = np.concatenate(
        [
            metric_values(metric, outcome, weights)
            for weights in resample_weights(rows(outcome), samples, rng)
        ]
    )
    replicates = replicates[np.isfinite(replicates)]
    if replicates.size == 0:
        return None
    tail = (1 - confidence) / 2
    low, high = np.quantile(replicates, [tail, 1 - tail])
    return float(low), float(high)


def realized_quality(
    outcome: Outcome,
    metrics: Sequence[Metric],
    *,
    reference: Mapping[Metric, float] | None = None,
    confidence: float = 0.95,
    bootstrap_samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> list[MetricQuality]:
    """Each metric on the outcome with its interval, beside its reference value.

    Raises MetricUnavailable for a metric the outcome cannot produce. A metric undefined on
    these rows (ROC-AUC with one class present; anything without rows) is left out.
    """
    check_metrics(outcome, metrics)
    n = rows(outcome)
    if n == 0:
        return []
    rng = np.random.default_rng(seed % 2**64)
    everyone = np.ones((1, n))
    qualities = []
    for metric in dict.fromkeys(metrics):
        value = float(metric_values(metric, outcome, everyone)[0])
        if not math.isfinite(value):
            continue
        proportion = _proportion(metric, outcome)
        if proportion is not None:
            low, high = wilson_interval(*proportion, confidence)
            method = IntervalMethod.WILSON
        else:
            interval = _bootstrap(metric, outcome, confidence, bootstrap_samples, rng)
            if interval is None:
                continue
            low, high = interval
            method = IntervalMethod.BOOTSTRAP
        given = None if reference is None else reference.get(metric)
        qualities.append(
            MetricQuality(
                metric=metric,
                value=value,
                # A percentile interval of a skewed statistic can miss its own point estimate by
                # a rounding error; the reported interval always contains it.
                ci_low=min(low, value),
                ci_high=max(high, value),
                confidence=confidence,
                method=method,
                rows=n,
                reference=given if given is not None and math.isfinite(given) else None,
            )
        )
    return qualities


def reference_quality(report: EvaluationReport, dataset: str = HOLDOUT) -> dict[Metric, float]:
    """The promoted candidate's metrics on one of its evaluation datasets (the reference)."""
    measured = report.candidate.get(dataset)
    if measured is None:
        raise ValueError(
            f"the evaluation report has no {dataset!r} dataset (it has {sorted(report.candidate)})"
        )
    names = {metric.value for metric in Metric}
    return {Metric(name): value for name, value in measured.items() if name in names}


# ---- per-prediction losses -----------------------------------------------------------------


def default_loss(task: Task) -> LossKind:
    """The loss the detector watches by default: bounded (0/1) for classifiers, absolute error
    (robust to the odd outlier) for regressors."""
    return LossKind.ZERO_ONE if task is Task.CLASSIFICATION else LossKind.ABSOLUTE_ERROR


def per_prediction_loss(outcome: Outcome, kind: LossKind) -> FloatArray:
    """Each row's loss, in the outcome's (time) order."""
    task = task_of(outcome)
    if not kind.applies_to(task):
        raise MetricUnavailable(f"a {kind.value} loss does not apply to a {task.value} model")
    if isinstance(outcome, RegressorOutcome):
        residuals: FloatArray = outcome.predicted - outcome.truth
        squared: FloatArray = residuals**2
        return squared if kind is LossKind.SQUARED_ERROR else np.abs(residuals)
    if kind is LossKind.ZERO_ONE:
        errors: FloatArray = (outcome.predicted != outcome.truth).astype(np.float64)
        return errors
    if not has_probabilities(outcome):
        raise MetricUnavailable("a log loss needs class probabilities, which these rows lack")
    chosen = outcome.proba[np.arange(rows(outcome)), outcome.truth]
    losses: FloatArray = -np.log(np.clip(chosen, _EPS, 1 - _EPS))
    return losses
