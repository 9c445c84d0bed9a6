"""Label-free performance estimation from predicted probabilities (confidence-based, in the
spirit of NannyML's CBPE), for binary and multiclass classifiers.

If a model's scores are calibrated, a prediction made with probability `p` of being right is
right with probability `p`, so the expected accuracy of rows without labels is the mean of those
probabilities; for a binary model, the expected confusion matrix follows from P(positive) the
same way (expected precision, recall and F1). This only holds while the scores stay calibrated:
it sees a covariate shift that moves rows towards uncertain regions, **not a concept change**
(P(y | x) moving while the scores stay put), which only labels reveal. It is a warning while
labels are late, reported beside the realized metric once they arrive.

Calibration is checked on reference rows with labels (the champion's own predictions on its
evaluation data): the expected calibration error (ECE) over equal-mass bins of the calibrated
quantity (binary: P(positive); multiclass: the top-class probability, i.e. top-label
calibration, what accuracy needs), and its significance by consistency resampling (labels drawn
from the scores themselves, Bröcker & Smith 2007). Scores that are not shown calibrated get an
estimate flagged unusable.

The interval is for the realized metric on these rows: label sampling (labels drawn from the
probabilities, Monte Carlo) widened by the calibration error measured on the reference in the
bins the rows fall into (each probability moved by its bin's gap in the direction that lowers,
then raises, the metric).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from activities.loop.evaluation import MAX_BOOTSTRAP_CELLS, ClassifierOutcome
from workflows.drift.performance_models import (
    CalibrationCheck,
    EstimatedMetric,
    LabelFreeEstimate,
    LabelFreeMetric,
    ReliabilityBin,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

DEFAULT_BINS = 10
# Reference rows per reliability bin, at least: fewer make each bin's gap mostly noise.
MIN_ROWS_PER_BIN = 50
CONSISTENCY_SAMPLES = 500
SIMULATIONS = 1000


class CalibrationUnknown(ValueError):
    """Calibration cannot be checked (too few reference rows, no probabilities)."""


@dataclass(frozen=True, eq=False)
class Calibrated:
    """The calibrated quantity of each row: its score and whether the event happened."""

    score: FloatArray
    event: BoolArray


def calibrated_quantity(outcome: ClassifierOutcome) -> Calibrated:
    """Binary: P(positive) and whether the row is positive; multiclass: the top-class
    probability and whether the top class is right."""
    if not np.isfinite(outcome.proba).all():
        raise CalibrationUnknown("the reference rows have no class probabilities")
    if outcome.binary:
        return Calibrated(
            score=outcome.proba[:, outcome.positive], event=outcome.truth == outcome.positive
        )
    top = outcome.proba.argmax(axis=1)
    return Calibrated(score=outcome.proba[np.arange(len(top)), top], event=top == outcome.truth)


def bin_edges(scores: FloatArray, bins: int) -> FloatArray:
    """Equal-mass bins of the reference's scores, the outer edges at 0 and 1 (so any score of
    another window falls in one)."""
    inner = np.quantile(scores, np.linspace(0, 1, bins + 1)[1:-1])
    edges: FloatArray = np.unique(np.concatenate([[0.0], inner, [1.0]]))
    return edges


def bin_index(scores: FloatArray, edges: FloatArray) -> IntArray:
    """Each score's bin: [edge_k, edge_k+1), the last bin closed at 1."""
    index: IntArray = np.clip(
        np.searchsorted(edges, scores, side="right") - 1, 0, len(edges) - 2
    ).astype(np.int64)
    return index


def _ece(scores: FloatArray, events: FloatArray, index: IntArray) -> FloatArray:
    """ECE of each row of `events` (simulations x rows) against the same scores and bins."""
    n_bins = int(index.max()) + 1 if len(index) else 0
    counts = np.bincount(index, minlength=n_bins).astype(np.float64)
    score_sums = np.bincount(index, weights=scores, minlength=n_bins)
    membership = np.zeros((len(index), n_bins))
    membership[np.arange(len(index)), index] = 1.0
    event_sums = events @ membership
    gaps = np.abs(event_sums - score_sums) / np.maximum(counts, 1.0)
    ece: FloatArray = gaps @ (counts / counts.sum())
    return ece


def check_calibration(
    reference: ClassifierOutcome,
    *,
    max_error: float = 0.05,
    alpha: float = 0.01,
    bins: int = DEFAULT_BINS,
    samples: int = CONSISTENCY_SAMPLES,
    seed: int = 0,
) -> CalibrationCheck:
    """Reliability of the reference's scores: ECE, its consistency p-value, the verdict."""
    quantity = calibrated_quantity(reference)
    n = len(quantity.score)
    if n < 2 * MIN_ROWS_PER_BIN:
        raise CalibrationUnknown(
            f"{n} reference rows cannot show calibration; at least {2 * MIN_ROWS_PER_BIN} are "
            "needed"
        )
    edges = bin_edges(quantity.score, max(2, min(bins, n // MIN_ROWS_PER_BIN)))
    index = bin_index(quantity.score, edges)
    observed = float(_ece(quantity.score, quantity.event[None, :].astype(np.float64), index)[0])
    rng = np.random.default_rng(seed % 2**64)
    simulated = []
    chunk = max(1, MAX_BOOTSTRAP_CELLS // n)
    for start in range(0, samples, chunk):
        size = min(chunk, samples - start)
        events = (rng.random((size, n)) < quantity.score).astype(np.float64)
        simulated.append(_ece(quantity.score, events, index))
    null = np.concatenate(simulated)
    pvalue = float((1 + (null >= observed).sum()) / (1 + len(null)))
    reliability = []
    for number in range(len(edges) - 1):
        inside = index == number
        if not inside.any():
            continue
        reliability.append(
            ReliabilityBin(
                lower=float(edges[number]),
                upper=float(edges[number + 1]),
                rows=int(inside.sum()),
                mean_score=float(np.clip(quantity.score[inside].mean(), 0, 1)),
                observed=float(quantity.event[inside].mean()),
            )
        )
    reasons = []
    if observed > max_error:
        reasons.append(f"expected calibration error {observed:.3f} exceeds {max_error:.3f}")
    if pvalue < alpha:
        reasons.append(
            f"miscalibration is significant (p = {pvalue:.3g} < {alpha:g}, {len(null)} "
            "consistency resamples)"
        )
    return CalibrationCheck(
        reference_rows=n,
        ece=min(observed, 1.0),
        max_error=max_error,
        pvalue=pvalue,
        alpha=alpha,
        bins=reliability,
        calibrated=not reasons,
        reasons=reasons,
    )


# ---- the estimate --------------------------------------------------------------------------


def _bin_gaps(check: CalibrationCheck, scores: FloatArray) -> FloatArray:
    """Each score's calibration allowance: the |observed - mean score| of its reference bin."""
    if not check.bins:
        raise CalibrationUnknown("the calibration check has no reliability bins")
    edges = np.array([b.lower for b in check.bins] + [check.bins[-1].upper])
    gaps = np.array([abs(b.observed - b.mean_score) for b in check.bins])
    return gaps[bin_index(scores, edges)]


def _binary_metrics(
    positive_predicted: BoolArray, positives: FloatArray
) -> dict[LabelFreeMetric, FloatArray]:
    """The metrics for each row of `positives` (simulations x rows: 1 for a positive row, or
    its probability for an expectation), given which rows were predicted positive."""
    predicted = positive_predicted.astype(np.float64)
    n = positives.shape[1]
    tp = positives @ predicted
    fn = positives @ (1.0 - predicted)
    n_predicted = predicted.sum()
    accuracy = (tp + (n - n_predicted) - fn) / n
    precision = tp / n_predicted if n_predicted > 0 else np.full_like(tp, np.nan)
    actual = tp + fn
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    f1_denominator = n_predicted + actual
    f1 = np.divide(2 * tp, f1_denominator, out=np.zeros_like(tp), where=f1_denominator > 0)
    return {
        LabelFreeMetric.ACCURACY: accuracy,
        LabelFreeMetric.PRECISION: precision,
        LabelFreeMetric.RECALL: recall,
        LabelFreeMetric.F1: f1,
    }


def _accuracy(correct: FloatArray) -> dict[LabelFreeMetric, FloatArray]:
    mean: FloatArray = correct.mean(axis=1)
    return {LabelFreeMetric.ACCURACY: mean}


MetricsOf = Callable[[FloatArray], dict[LabelFreeMetric, FloatArray]]


def _simulate(
    probabilities: FloatArray, compute: MetricsOf, simulations: int, rng: np.random.Generator
) -> dict[LabelFreeMetric, FloatArray]:
    """Realized metrics (`compute` of a draws x rows matrix of 0/1 events) over label draws
    from the probabilities, chunked in memory."""
    n = len(probabilities)
    parts: dict[LabelFreeMetric, list[FloatArray]] = {}
    chunk = max(1, MAX_BOOTSTRAP_CELLS // max(n, 1))
    for start in range(0, simulations, chunk):
        size = min(chunk, simulations - start)
        events = (rng.random((size, n)) < probabilities).astype(np.float64)
        for metric, values in compute(events).items():
            parts.setdefault(metric, []).append(values)
    return {metric: np.concatenate(values) for metric, values in parts.items()}


def estimate_performance(
    reference: ClassifierOutcome,
    proba: npt.ArrayLike,
    *,
    predicted: npt.ArrayLike | None = None,
    calibration: CalibrationCheck | None = None,
    confidence: float = 0.95,
    max_calibration_error: float = 0.05,
    alpha: float = 0.01,
    bins: int = DEFAULT_BINS,
    simulations: int = SIMULATIONS,
    seed: int = 0,
) -> LabelFreeEstimate:
    """Expected metrics of predictions without labels, from their class probabilities.

    `reference`: the same model's outcome on labelled reference rows (calibration is checked
    there); `proba`: the unlabelled rows' probabilities, one column per class of `reference`;
    `predicted`: their predicted class indices (default: the most probable class);
    `calibration`: the reference's calibration check when already made (it depends on the
    reference only: once per champion), else it is made here.
    Binary models get accuracy, precision, recall and F1; multiclass ones accuracy.
    """
    matrix = np.asarray(proba, dtype=np.float64)
    classes = len(reference.classes)
    if matrix.ndim != 2 or matrix.shape[1] != classes:
        raise ValueError(f"proba has shape {matrix.shape}; expected (rows, {classes})")
    if not np.isfinite(matrix).all() or (matrix < 0).any() or (matrix > 1).any():
        raise ValueError("proba must hold probabilities in [0, 1]")
    choice = (
        matrix.argmax(axis=1)
        if predicted is None
        else np.asarray(predicted, dtype=np.int64).reshape(-1)
    )
    if len(choice) != len(matrix) or ((choice < 0) | (choice >= classes)).any():
        raise ValueError("predicted must hold one class index per row")
    check = calibration or check_calibration(
        reference, max_error=max_calibration_error, alpha=alpha, bins=bins, seed=seed
    )
    rng = np.random.default_rng((seed + 1) % 2**64)
    rows = len(matrix)
    tail = (1 - confidence) / 2
    reference_quantity = calibrated_quantity(reference)
    if rows == 0:
        return LabelFreeEstimate(rows=0, classes=classes, calibration=check, estimates=[])

    if reference.binary:
        p = matrix[:, reference.positive]
        predicted_positive = choice == reference.positive
        allowance = _bin_gaps(check, p)
        # The metric falls when positives are fewer among predicted positives and more among
        # predicted negatives (TP down, FN up): shift each side the way that hurts, then helps.
        sign = np.where(predicted_positive, 1.0, -1.0)
        low_p = np.clip(p - sign * allowance, 0, 1)
        high_p = np.clip(p + sign * allowance, 0, 1)

        def metrics(events: FloatArray) -> dict[LabelFreeMetric, FloatArray]:
            return _binary_metrics(predicted_positive, events)

        expected = metrics(p[None, :])
        pessimistic = metrics(low_p[None, :])
        optimistic = metrics(high_p[None, :])
        realized_reference = _binary_metrics(
            reference.predicted == reference.positive,
            reference_quantity.event[None, :].astype(np.float64),
        )
        draws = _simulate(p, metrics, simulations, rng)
    else:
        correct = matrix[np.arange(rows), choice]
        allowance = _bin_gaps(check, correct)
        expected = _accuracy(correct[None, :])
        pessimistic = _accuracy(np.clip(correct - allowance, 0, 1)[None, :])
        optimistic = _accuracy(np.clip(correct + allowance, 0, 1)[None, :])
        realized_reference = _accuracy(
            (reference.predicted == reference.truth).astype(np.float64)[None, :]
        )
        draws = _simulate(correct, _accuracy, simulations, rng)

    estimates = []
    for metric, values in expected.items():
        point = float(values[0])
        spread = draws[metric][np.isfinite(draws[metric])]
        if not np.isfinite(point) or spread.size == 0:
            continue  # precision of a window without predicted positives
        low, high = np.quantile(spread, [tail, 1 - tail])
        ci_low = float(low) - max(point - float(pessimistic[metric][0]), 0.0)
        ci_high = float(high) + max(float(optimistic[metric][0]) - point, 0.0)
        reference_value = float(realized_reference[metric][0])
        estimates.append(
            EstimatedMetric(
                metric=metric,
                value=point,
                ci_low=float(np.clip(min(ci_low, point), 0, 1)),
                ci_high=float(np.clip(max(ci_high, point), 0, 1)),
                confidence=confidence,
                reference=reference_value if np.isfinite(reference_value) else None,
            )
        )
    return LabelFreeEstimate(rows=rows, classes=classes, calibration=check, estimates=estimates)
