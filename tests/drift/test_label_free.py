"""Label-free performance estimation (activities/drift/label_free.py) on river's RandomRBF streams.

- Calibrated scores: labels drawn from the model's own probabilities (calibrated by
  construction, on any covariate distribution, which is CBPE's assumption). Over many windows,
  some shifted towards a region where the model is less sure, the interval covers the realized
  accuracy (and binary precision, recall, F1) at least as often as a binomial bound on 95%
  allows, and it is narrow enough to be worth having.
- Miscalibrated scores: a decision tree's leaf frequencies (overconfident on new rows), a naive
  Bayes model and deliberately sharpened scores are flagged on the reference.
- Scores stay put under a concept change: the estimate does not see it (the documented limit).
"""

from __future__ import annotations

import itertools
from functools import cache

import numpy as np
import pytest
import scipy.stats  # type: ignore[import-untyped, unused-ignore]
from river.datasets import synth
from sklearn.naive_bayes import GaussianNB  # type: ignore[import-untyped]
from sklearn.tree import DecisionTreeClassifier  # type: ignore[import-untyped]

from activities.drift.label_free import CalibrationUnknown, check_calibration, estimate_performance
from activities.drift.performance_metrics import classifier_outcome
from activities.loop.evaluation import ClassifierOutcome
from workflows.drift.performance_models import LabelFreeMetric

WINDOWS = 40
WINDOW_ROWS = 1500


def rbf(classes: int, seed: int, rows: int) -> np.ndarray:
    stream = synth.RandomRBF(
        seed_model=4, seed_sample=seed, n_classes=classes, n_features=4, n_centroids=10
    )
    return np.array([[float(v) for v in x.values()] for x, _ in itertools.islice(stream, rows)])


def rbf_labelled(classes: int, seed: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    stream = synth.RandomRBF(
        seed_model=4, seed_sample=seed, n_classes=classes, n_features=4, n_centroids=10
    )
    pairs = list(itertools.islice(stream, rows))
    return np.array([[float(v) for v in x.values()] for x, _ in pairs]), np.array(
        [y for _, y in pairs]
    )


@cache
def tree(classes: int) -> DecisionTreeClassifier:
    features, labels = rbf_labelled(classes, 1, 5000)
    return DecisionTreeClassifier(max_depth=6, min_samples_leaf=30, random_state=0).fit(
        features, labels
    )


def drawn_labels(proba: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One label per row drawn from its probabilities: the scores are calibrated by design."""
    cumulative = proba.cumsum(axis=1)
    drawn: np.ndarray = (rng.random((len(proba), 1)) > cumulative).sum(axis=1)
    return drawn.clip(0, proba.shape[1] - 1)


def reference(classes: int, rng: np.random.Generator) -> ClassifierOutcome:
    model = tree(classes)
    proba = model.predict_proba(rbf(classes, 2, 5000))
    truth = drawn_labels(proba, rng)
    return classifier_outcome(truth, proba.argmax(axis=1), proba=proba, classes=np.arange(classes))


def realized(truth: np.ndarray, predicted: np.ndarray) -> dict[LabelFreeMetric, float]:
    tp = float(((predicted == 1) & (truth == 1)).sum())
    precision = tp / max((predicted == 1).sum(), 1)
    recall = tp / max((truth == 1).sum(), 1)
    return {
        LabelFreeMetric.ACCURACY: float((truth == predicted).mean()),
        LabelFreeMetric.PRECISION: precision,
        LabelFreeMetric.RECALL: recall,
        LabelFreeMetric.F1: 2 * precision * recall / (precision + recall),
    }


@pytest.mark.parametrize("classes", [2, 3])
def test_on_calibrated_scores_the_interval_covers_the_realized_metrics(classes: int) -> None:
    rng = np.random.default_rng(classes)
    ref = reference(classes, rng)
    calibration = check_calibration(ref)
    assert calibration.calibrated, calibration.reasons
    model = tree(classes)
    covered: dict[LabelFreeMetric, int] = {}
    accuracies, widths = [], []
    for window in range(WINDOWS):
        features = rbf(classes, 100 + window, WINDOW_ROWS)
        if window % 2:
            # Covariate shift: one region of the feature space only, where the model is surer.
            features = features[features[:, 0] < 0.4]
        proba = model.predict_proba(features)
        truth = drawn_labels(proba, rng)
        predicted = proba.argmax(axis=1)
        estimate = estimate_performance(
            ref, proba, calibration=calibration, simulations=400, seed=window
        )
        assert estimate.usable and estimate.rows == len(features)
        actual = realized(truth, predicted)
        for metric_estimate in estimate.estimates:
            metric = metric_estimate.metric
            inside = metric_estimate.ci_low <= actual[metric] <= metric_estimate.ci_high
            covered[metric] = covered.get(metric, 0) + inside
        accuracy = estimate.estimate(LabelFreeMetric.ACCURACY)
        assert accuracy is not None
        accuracies.append(actual[LabelFreeMetric.ACCURACY])
        widths.append(accuracy.ci_high - accuracy.ci_low)
    expected = set(LabelFreeMetric) if classes == 2 else {LabelFreeMetric.ACCURACY}
    assert set(covered) == expected
    least = scipy.stats.binom.ppf(0.001, WINDOWS, 0.95)
    print(f"{classes} classes: covered {covered} of {WINDOWS}, widths {np.mean(widths):.3f}")
    assert all(count >= least for count in covered.values()), covered
    # The shift moved the realized accuracy; the interval is still narrower than that move.
    shifted, plain = np.mean(accuracies[1::2]), np.mean(accuracies[::2])
    assert abs(shifted - plain) > 0.03
    assert np.mean(widths) < 0.1


def test_miscalibrated_scores_are_flagged() -> None:
    features, labels = rbf_labelled(2, 2, 5000)
    model = tree(2)
    # A deep tree's leaf frequencies, learnt from a few rows each, are overconfident.
    deep = DecisionTreeClassifier(max_depth=14, min_samples_leaf=3, random_state=0)
    overconfident = deep.fit(*rbf_labelled(2, 1, 5000)).predict_proba(features)
    check = check_calibration(
        classifier_outcome(labels, overconfident.argmax(1), proba=overconfident, classes=[0, 1])
    )
    assert not check.calibrated and check.pvalue < check.alpha
    # Naive Bayes on correlated features.
    nb = GaussianNB().fit(*rbf_labelled(2, 1, 5000))
    nb_proba = nb.predict_proba(features)
    nb_check = check_calibration(
        classifier_outcome(labels, nb_proba.argmax(1), proba=nb_proba, classes=[0, 1])
    )
    assert not nb_check.calibrated and nb_check.ece > nb_check.max_error
    assert any("exceeds" in reason for reason in nb_check.reasons)
    # Calibrated scores made overconfident: the estimate is flagged, and it was wrong.
    rng = np.random.default_rng(7)
    ref = reference(2, rng)
    sharp = ref.proba[:, 1] ** 3 / (ref.proba[:, 1] ** 3 + ref.proba[:, 0] ** 3)
    sharpened = ClassifierOutcome(
        classes=ref.classes,
        truth=ref.truth,
        predicted=ref.predicted,
        proba=np.column_stack([1 - sharp, sharp]),
    )
    window = model.predict_proba(rbf(2, 300, WINDOW_ROWS))
    truth = drawn_labels(window, rng)
    window_sharp = window[:, 1] ** 3 / (window[:, 1] ** 3 + window[:, 0] ** 3)
    estimate = estimate_performance(sharpened, np.column_stack([1 - window_sharp, window_sharp]))
    assert not estimate.usable
    accuracy = estimate.estimate(LabelFreeMetric.ACCURACY)
    assert accuracy is not None
    assert accuracy.value > float((truth == window.argmax(1)).mean()) + 0.03
    # The reliability bins say where: confident bins hold fewer hits than promised.
    top = estimate.calibration.bins[-1]
    assert top.mean_score > top.observed


def test_a_concept_change_leaves_the_estimate_where_it_was() -> None:
    """Same features, labels from another concept: the realized accuracy falls, the estimate
    (which sees only the scores) does not. Only labels reveal a concept change."""
    rng = np.random.default_rng(11)
    ref = reference(2, rng)
    model = tree(2)
    features, _ = rbf_labelled(2, 400, WINDOW_ROWS)
    proba = model.predict_proba(features)
    flipped = 1 - drawn_labels(proba, rng)  # the concept inverted
    estimate = estimate_performance(ref, proba)
    accuracy = estimate.estimate(LabelFreeMetric.ACCURACY)
    assert accuracy is not None and estimate.usable
    realized_accuracy = float((flipped == proba.argmax(1)).mean())
    assert realized_accuracy < accuracy.ci_low - 0.3


def test_the_reference_side_and_bad_input() -> None:
    rng = np.random.default_rng(3)
    ref = reference(2, rng)
    estimate = estimate_performance(ref, ref.proba[:500])
    accuracy = estimate.estimate(LabelFreeMetric.ACCURACY)
    assert accuracy is not None
    assert accuracy.reference == pytest.approx(float((ref.truth == ref.predicted).mean()))
    check = estimate.calibration
    assert sum(b.rows for b in check.bins) == len(ref.truth) == check.reference_rows
    assert [b.lower for b in check.bins] == sorted(b.lower for b in check.bins)
    # Nothing to estimate: an empty estimate, the calibration still reported.
    assert estimate_performance(ref, np.empty((0, 2)), calibration=check).estimates == []
    with pytest.raises(ValueError, match="expected \\(rows, 2\\)"):
        estimate_performance(ref, np.ones((3, 3)) / 3)
    with pytest.raises(ValueError, match="probabilities in \\[0, 1\\]"):
        estimate_performance(ref, np.array([[1.5, -0.5]]))
    with pytest.raises(CalibrationUnknown, match="at least 100"):
        check_calibration(classifier_outcome([0, 1] * 10, [0, 1] * 10, proba=np.full((20, 2), 0.5)))
    without_bins = check.model_copy(update={"bins": []})
    with pytest.raises(CalibrationUnknown, match="no reliability bins"):
        estimate_performance(ref, ref.proba[:10], calibration=without_bins)
    with pytest.raises(CalibrationUnknown, match="no class probabilities"):
        check_calibration(classifier_outcome([0, 1] * 100, [0, 1] * 100))
