"""Realized quality with intervals, and per-prediction losses
(activities/drift/performance_metrics.py).

Values are checked against scikit-learn; Wilson intervals against their formula and their
coverage (seeded trials against a binomial bound); bootstrap intervals for containing the value
and narrowing with more rows; a metric the model or the data cannot produce is refused.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats  # type: ignore[import-untyped, unused-ignore]
from sklearn import metrics as skm  # type: ignore[import-untyped]

from activities.drift.performance_metrics import (
    MetricUnavailable,
    classifier_outcome,
    default_loss,
    per_prediction_loss,
    realized_quality,
    reference_quality,
    regressor_outcome,
    subset,
    wilson_interval,
    window_outcome,
)
from activities.drift.performance_window import LabelledWindow
from activities.loop.evaluation import ClassifierOutcome
from workflows.drift.performance_models import IntervalMethod, LossKind, MetricQuality
from workflows.loop.models import EvaluationReport
from workflows.spec.models import Metric, Task

CLASSIFICATION = [Metric.ACCURACY, Metric.PRECISION, Metric.RECALL, Metric.ROC_AUC, Metric.LOG_LOSS]


def binary_sample(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, scores that know something about them, and the predicted classes."""
    rng = np.random.default_rng(seed)
    truth = (rng.random(n) < 0.4).astype(np.float64)
    scores = np.clip(0.25 + 0.5 * truth + rng.normal(0, 0.2, n), 0.01, 0.99)
    return truth, scores, (scores >= 0.5).astype(np.float64)


def by_metric(qualities: list[MetricQuality]) -> dict[Metric, MetricQuality]:
    return {q.metric: q for q in qualities}


def test_binary_metrics_match_scikit_learn_with_their_intervals() -> None:
    truth, scores, predicted = binary_sample(800)
    outcome = classifier_outcome(truth, predicted, scores=scores)
    quality = by_metric(realized_quality(outcome, CLASSIFICATION, reference={Metric.ACCURACY: 0.9}))
    proba = np.column_stack([1 - scores, scores])
    expected = {
        Metric.ACCURACY: skm.accuracy_score(truth, predicted),
        Metric.PRECISION: skm.precision_score(truth, predicted),
        Metric.RECALL: skm.recall_score(truth, predicted),
        Metric.ROC_AUC: skm.roc_auc_score(truth, scores),
        Metric.LOG_LOSS: skm.log_loss(truth, proba),
    }
    for metric, value in expected.items():
        q = quality[metric]
        assert q.value == pytest.approx(value), metric
        assert q.ci_low < q.value < q.ci_high and q.rows == 800 and q.confidence == 0.95
    # Proportions get Wilson intervals; the rest the bootstrap.
    wilson = {m for m, q in quality.items() if q.method is IntervalMethod.WILSON}
    assert wilson == {Metric.ACCURACY, Metric.PRECISION, Metric.RECALL}
    assert quality[Metric.ACCURACY].reference == 0.9
    assert quality[Metric.RECALL].reference is None
    # The precision interval is a Wilson interval over the predicted positives.
    positives = int(predicted.sum())
    hits = int(((predicted == 1) & (truth == 1)).sum())
    low, high = wilson_interval(hits, positives, 0.95)
    assert (quality[Metric.PRECISION].ci_low, quality[Metric.PRECISION].ci_high) == (low, high)


def test_wilson_interval_formula() -> None:
    k, n, z = 37, 50, scipy.stats.norm.ppf(0.975)
    p = k / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    assert wilson_interval(k, n, 0.95) == pytest.approx((centre - half, centre + half))
    assert wilson_interval(0, 0, 0.95) == (0.0, 1.0)


@pytest.mark.parametrize(("accuracy", "rows"), [(0.95, 60), (0.7, 200), (0.5, 1000)])
def test_the_accuracy_interval_covers_the_true_accuracy(accuracy: float, rows: int) -> None:
    """400 seeded windows of a model right with probability `accuracy`: the 95% interval misses
    the truth no more often than a binomial bound allows for a 5% miss rate."""
    rng = np.random.default_rng(rows)
    trials, misses = 400, 0
    for _ in range(trials):
        truth = (rng.random(rows) < 0.5).astype(np.float64)
        right = rng.random(rows) < accuracy
        predicted = np.where(right, truth, 1 - truth)
        (q,) = realized_quality(classifier_outcome(truth, predicted), [Metric.ACCURACY])
        misses += not q.ci_low <= accuracy <= q.ci_high
    assert misses <= scipy.stats.binom.ppf(0.999, trials, 0.05)


def test_multiclass_label_metrics_without_probabilities() -> None:
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 3, 600).astype(np.float64)
    predicted = np.where(rng.random(600) < 0.7, truth, rng.integers(0, 3, 600))
    outcome = classifier_outcome(truth, predicted)
    quality = by_metric(
        realized_quality(outcome, [Metric.ACCURACY, Metric.PRECISION, Metric.RECALL])
    )
    assert quality[Metric.ACCURACY].value == pytest.approx(skm.accuracy_score(truth, predicted))
    assert quality[Metric.PRECISION].value == pytest.approx(
        skm.precision_score(truth, predicted, average="macro")
    )
    assert quality[Metric.PRECISION].method is IntervalMethod.BOOTSTRAP
    assert quality[Metric.RECALL].ci_low < quality[Metric.RECALL].value
    with pytest.raises(MetricUnavailable, match="log_loss needs class probabilities"):
        realized_quality(outcome, [Metric.ACCURACY, Metric.LOG_LOSS])


def test_regression_metrics_match_scikit_learn_and_narrow_with_rows() -> None:
    rng = np.random.default_rng(5)
    widths = []
    for n in (200, 3200):
        truth = rng.normal(10, 3, n)
        predicted = truth + rng.normal(0.5, 1.0, n)
        outcome = regressor_outcome(truth, predicted)
        quality = by_metric(realized_quality(outcome, [Metric.RMSE, Metric.MAE, Metric.R2], seed=n))
        assert quality[Metric.RMSE].value == pytest.approx(
            math.sqrt(skm.mean_squared_error(truth, predicted))
        )
        assert quality[Metric.MAE].value == pytest.approx(skm.mean_absolute_error(truth, predicted))
        assert quality[Metric.R2].value == pytest.approx(skm.r2_score(truth, predicted))
        assert all(q.method is IntervalMethod.BOOTSTRAP for q in quality.values())
        widths.append(quality[Metric.RMSE].ci_high - quality[Metric.RMSE].ci_low)
    # Sixteen times the rows: about a quarter of the width.
    assert widths[1] < widths[0] / 2.5


def test_metrics_the_model_type_cannot_produce_are_refused() -> None:
    truth, scores, predicted = binary_sample(50)
    classifier = classifier_outcome(truth, predicted, scores=scores)
    with pytest.raises(MetricUnavailable, match="rmse is a regression metric"):
        realized_quality(classifier, [Metric.ACCURACY, Metric.RMSE])
    regressor = regressor_outcome(truth, scores)
    with pytest.raises(MetricUnavailable, match="accuracy is a classification metric"):
        realized_quality(regressor, [Metric.ACCURACY])
    with pytest.raises(MetricUnavailable, match="squared_error loss does not apply"):
        per_prediction_loss(classifier, LossKind.SQUARED_ERROR)
    with pytest.raises(MetricUnavailable, match="zero_one loss does not apply"):
        per_prediction_loss(regressor, LossKind.ZERO_ONE)
    without = classifier_outcome(truth, predicted)
    with pytest.raises(MetricUnavailable, match="log loss needs class probabilities"):
        per_prediction_loss(without, LossKind.LOG_LOSS)


def test_per_prediction_losses_average_to_the_metrics() -> None:
    truth, scores, predicted = binary_sample(300, seed=9)
    outcome = classifier_outcome(truth, predicted, scores=scores)
    zero_one = per_prediction_loss(outcome, LossKind.ZERO_ONE)
    assert zero_one.mean() == pytest.approx(1 - skm.accuracy_score(truth, predicted))
    log_loss = per_prediction_loss(outcome, LossKind.LOG_LOSS)
    assert log_loss.mean() == pytest.approx(
        skm.log_loss(truth, np.column_stack([1 - scores, scores]))
    )
    regressor = regressor_outcome([1.0, 2.0, 4.0], [2.0, 2.0, 1.0])
    assert per_prediction_loss(regressor, LossKind.SQUARED_ERROR).tolist() == [1.0, 0.0, 9.0]
    assert per_prediction_loss(regressor, LossKind.ABSOLUTE_ERROR).tolist() == [1.0, 0.0, 3.0]
    assert default_loss(Task.CLASSIFICATION) is LossKind.ZERO_ONE
    assert default_loss(Task.REGRESSION) is LossKind.ABSOLUTE_ERROR


def test_outcomes_from_classes_and_windows() -> None:
    outcome = classifier_outcome([2.0, 5.0, 5.0], [5.0, 5.0, 2.0], classes=[2, 5, 9])
    assert outcome.classes.tolist() == [2, 5, 9]
    assert outcome.truth.tolist() == [0, 1, 1] and outcome.predicted.tolist() == [1, 1, 0]
    with pytest.raises(ValueError, match="labels 7 are not classes of the model"):
        classifier_outcome([7.0], [2.0], classes=[2, 5])
    with pytest.raises(ValueError, match="proba has shape"):
        classifier_outcome([1.0, 0.0], [1.0, 0.0], proba=np.ones((2, 3)))
    part = subset(outcome, 1)
    assert isinstance(part, ClassifierOutcome) and part.truth.tolist() == [1, 1]

    times = np.array(["2026-01-01T00:00", "2026-01-01T00:01"], dtype="datetime64[us]")
    strings = np.array(["a", "b"], dtype=object)
    window = LabelledWindow(
        request_id=strings,
        captured_at=times,
        received_at=times,
        variant=strings,
        version=strings,
        prediction=np.array([1.0, 0.0]),
        score=np.array([0.9, 0.2]),
        label=np.array([1.0, 1.0]),
    )
    binary = window_outcome(window, Task.CLASSIFICATION)
    assert isinstance(binary, ClassifierOutcome)
    np.testing.assert_allclose(binary.proba, [[0.1, 0.9], [0.8, 0.2]])
    regression = window_outcome(window, Task.REGRESSION)
    assert regression.truth.tolist() == [1.0, 1.0]


def test_reference_quality_from_the_promotion_evaluation() -> None:
    report = EvaluationReport(
        candidate={"holdout": {"accuracy": 0.93, "log_loss": 0.2, "train_rows": 5.0}},
        rows={"holdout": 100},
    )
    assert reference_quality(report) == {Metric.ACCURACY: 0.93, Metric.LOG_LOSS: 0.2}
    with pytest.raises(ValueError, match="no 'golden' dataset"):
        reference_quality(report, "golden")


def test_undefined_metrics_are_left_out() -> None:
    # One class present: ROC-AUC is undefined; accuracy is not.
    outcome = classifier_outcome([1.0, 1.0], [1.0, 0.0], scores=[0.8, 0.3], classes=[0, 1])
    quality = realized_quality(outcome, [Metric.ACCURACY, Metric.ROC_AUC])
    assert [q.metric for q in quality] == [Metric.ACCURACY]
    assert realized_quality(classifier_outcome([], []), [Metric.ACCURACY]) == []
