"""The canary analysis: statistics (numpy/scipy), the window reader, the verdict, the activity.

Statistics are checked against hand-computed formulas and scipy/scikit-learn; the verdict
against hand-built statistics; the reader against Parquet files written in the capture layout.
Property tests: identical variants fail at most about `alpha` of the time (300 independent
seeded trials against a binomial bound), each p-value is one-sided and calibrated, a clearly
worse challenger fails, row order changes nothing, and nothing passes below `min_requests`.
"""

from __future__ import annotations

import ast
import math
import time
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pytest
import scipy.stats  # type: ignore[import-untyped, unused-ignore]
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon  # type: ignore[import-untyped, unused-ignore]
from sklearn import metrics as skm  # type: ignore[import-untyped]
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

import workflows.rollout.rules
from activities.local import capture as layout
from activities.local.canary import CaptureCanary
from activities.loop.data_window import write_parquet_atomic
from activities.rollout.canary import CanaryActivities
from activities.rollout.statistics import BOOTSTRAP_RESAMPLES, bootstrap_quantile, compare
from activities.rollout.window import (
    InvalidCaptureData,
    VariantSample,
    read_window,
    sample_from_arrays,
)
from starters.demo.synthetic import FEATURES, synthetic_spec
from workflows.common.errors import ErrorType
from workflows.rollout.models import (
    CanaryPolicy,
    CanaryRequest,
    CanaryStatistics,
    CanaryVerdict,
    CheckName,
    CheckResult,
    CheckStatistic,
    Outcome,
    QualityImprovement,
    VariantSummary,
    WindowRef,
    canary_improvement,
)
from workflows.rollout.rules import SHIFT_EXPLAINED, canary_verdict

PROPERTY_SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
POLICY = CanaryPolicy()
MIN_REQUESTS = 200


# ---- sample generators ---------------------------------------------------------------------


def draw(
    rng: np.random.Generator,
    n: int,
    *,
    error_rate: float = 0.01,
    median_ms: float = 40.0,
    sigma: float = 0.5,
    shape: str = "lognormal",
    latency_factor: float = 1.0,
    accuracy: float = 0.85,
    labelled_share: float = 1.0,
) -> VariantSample:
    """A binary classifier's answers: balanced labels, right with probability `accuracy`,
    scores on the predicted side of 0.5; latencies rounded to 0.1 ms (ties, like real ones)."""
    ok = rng.random(n) >= error_rate
    if shape == "lognormal":
        latency = median_ms * np.exp(sigma * rng.standard_normal(n))
    else:  # gamma with the same scale of spread
        latency = rng.gamma(1 / sigma**2, median_ms * sigma**2, n)
    latency = np.round(latency * latency_factor, 1)
    label = (rng.random(n) < 0.5).astype(np.float64)
    prediction = np.where(rng.random(n) < accuracy, label, 1 - label)
    confidence = 0.5 + 0.5 * rng.beta(2, 2, n)
    score = np.where(prediction == 1, confidence, 1 - confidence)
    prediction[~ok] = np.nan
    score[~ok] = np.nan
    label[rng.random(n) >= labelled_share] = np.nan
    return VariantSample(ok=ok, latency_ms=latency, prediction=prediction, score=score, label=label)


def shuffled(sample: VariantSample, rng: np.random.Generator) -> VariantSample:
    order = rng.permutation(sample.size)
    return VariantSample(
        ok=sample.ok[order],
        latency_ms=sample.latency_ms[order],
        prediction=sample.prediction[order],
        score=sample.score[order],
        label=sample.label[order],
    )


def check(stats: CanaryStatistics, name: CheckName) -> CheckStatistic:
    return next(c for c in stats.checks if c.name is name)


def result(verdict: CanaryVerdict, name: CheckName) -> CheckResult:
    return next(c for c in verdict.checks if c.name is name)


# ---- statistics: hand-computed numbers -----------------------------------------------------


def test_error_rate_is_the_pooled_two_proportion_z_test() -> None:
    challenger = sample_from_arrays([False] * 12 + [True] * 188, [10.0] * 200)
    champion = sample_from_arrays([False] * 4 + [True] * 396, [10.0] * 400)
    stat = check(compare(champion, challenger, POLICY, seed=1), CheckName.ERROR_RATE)
    pooled = 16 / 600
    z = (12 / 200 - 4 / 400) / math.sqrt(pooled * (1 - pooled) * (1 / 200 + 1 / 400))
    assert stat.p_value == pytest.approx(0.5 * math.erfc(z / math.sqrt(2)), rel=1e-9)
    assert stat.difference == pytest.approx(0.06 - 0.01)
    assert (stat.challenger, stat.champion, stat.samples) == (0.06, 0.01, 200)
    # The other way round the challenger is better: a large one-sided p-value.
    assert stat.p_value is not None
    reverse = check(compare(challenger, champion, POLICY, seed=1), CheckName.ERROR_RATE)
    assert reverse.p_value == pytest.approx(1 - stat.p_value)


def test_error_rate_without_any_error_is_no_evidence() -> None:
    clean = sample_from_arrays([True] * 50, [5.0] * 50)
    stat = check(compare(clean, clean, POLICY, seed=1), CheckName.ERROR_RATE)
    assert (stat.difference, stat.p_value) == (0.0, 1.0)


def test_latency_p50_is_one_sided_mann_whitney_on_successful_calls() -> None:
    # Failed calls (1000 ms) are left out: every successful challenger call is slower.
    challenger = sample_from_arrays([True, True, True, False], [3.0, 4.0, 5.0, 1000.0])
    champion = sample_from_arrays([True, True, False], [1.0, 2.0, 1000.0])
    stat = check(compare(champion, challenger, POLICY, seed=1), CheckName.LATENCY_P50)
    # U = 6 of 6 pairs: exact p = 1 / C(5, 2).
    assert stat.p_value == pytest.approx(0.1)
    assert stat.difference == pytest.approx(4.0 / 1.5)
    assert (stat.challenger, stat.champion, stat.samples) == (4.0, 1.5, 2)
    faster = check(compare(challenger, champion, POLICY, seed=1), CheckName.LATENCY_P50)
    assert faster.p_value == pytest.approx(1.0)

    rng = np.random.default_rng(3)
    a, b = draw(rng, 800), draw(rng, 600, latency_factor=1.1)
    stat = check(compare(a, b, POLICY, seed=1), CheckName.LATENCY_P50)
    expected = scipy.stats.mannwhitneyu(
        b.latency_ms[b.ok], a.latency_ms[a.ok], alternative="greater"
    )
    assert stat.p_value == pytest.approx(expected.pvalue, rel=1e-12)
    ratio = np.median(b.latency_ms[b.ok]) / np.median(a.latency_ms[a.ok])
    assert stat.difference == pytest.approx(ratio)


def test_latency_p99_ratio_and_its_bootstrap_p_value() -> None:
    rng = np.random.default_rng(4)
    champion, same = draw(rng, 3000), draw(rng, 3000)
    slower = draw(rng, 3000, latency_factor=1.5)
    stat = check(compare(champion, slower, POLICY, seed=9), CheckName.LATENCY_P99)
    ratio = np.percentile(slower.latency_ms[slower.ok], 99) / np.percentile(
        champion.latency_ms[champion.ok], 99
    )
    assert stat.difference == pytest.approx(ratio)
    # Never 0: (count + 1) / (resamples + 1).
    assert stat.p_value == pytest.approx(1 / (BOOTSTRAP_RESAMPLES + 1))
    # Reversed, the challenger's p99 is never above the champion's.
    reverse = check(compare(slower, champion, POLICY, seed=9), CheckName.LATENCY_P99)
    assert reverse.p_value == pytest.approx(1.0)
    even = check(compare(champion, same, POLICY, seed=9), CheckName.LATENCY_P99)
    assert even.p_value is not None and 0.001 < even.p_value < 0.999
    again = check(compare(champion, same, POLICY, seed=9), CheckName.LATENCY_P99)
    assert again == even  # seeded


def test_bootstrap_quantile_draws_what_resampling_rows_would() -> None:
    rng = np.random.default_rng(5)
    values = np.sort(np.round(rng.lognormal(3, 0.6, 250), 1))
    fast = bootstrap_quantile(values, 0.99, 20_000, rng)
    rows = rng.integers(0, values.size, (20_000, values.size))
    slow = np.percentile(values[rows], 99, axis=1)
    assert scipy.stats.ks_2samp(fast, slow).pvalue > 0.001
    assert np.quantile(fast, [0.1, 0.5, 0.9]) == pytest.approx(
        np.quantile(slow, [0.1, 0.5, 0.9]), rel=0.02
    )
    # The median of a single value, and of two (interpolated halfway).
    assert set(bootstrap_quantile(np.array([7.0]), 0.99, 10, rng)) == {7.0}
    assert set(bootstrap_quantile(np.array([1.0, 3.0]), 0.5, 200, rng)) == {1.0, 2.0, 3.0}


def test_accuracy_is_a_one_sided_z_test_on_labelled_successful_calls() -> None:
    # Champion: 90 of 100 right; challenger: 75 of 100 right, plus unlabelled and failed rows.
    def side(right: int, labelled: int) -> VariantSample:
        label = np.r_[np.ones(labelled), np.nan, 1.0]
        prediction = np.r_[np.ones(right), np.zeros(labelled - right), 1.0, np.nan]
        ok = np.r_[np.ones(labelled + 1, dtype=bool), False]
        return sample_from_arrays(ok, np.ones(labelled + 2), prediction=prediction, label=label)

    stats = compare(side(90, 100), side(75, 100), POLICY, seed=1)
    stat = check(stats, CheckName.ACCURACY)
    pooled = 165 / 200
    z = (0.90 - 0.75) / math.sqrt(pooled * (1 - pooled) * (2 / 100))
    assert stat.p_value == pytest.approx(0.5 * math.erfc(z / math.sqrt(2)), rel=1e-9)
    assert stat.difference == pytest.approx(0.15)
    assert (stat.champion, stat.challenger, stat.samples) == (0.9, 0.75, 100)
    assert (stats.champion.labelled, stats.challenger.accuracy) == (100, 0.75)


def test_log_loss_matches_scikit_learn_and_welch() -> None:
    rng = np.random.default_rng(6)
    champion, challenger = draw(rng, 700, accuracy=0.9), draw(rng, 500, accuracy=0.8)
    stats = compare(champion, challenger, POLICY, seed=1)
    losses = []
    for sample, summary in ((champion, stats.champion), (challenger, stats.challenger)):
        rows = sample.ok & np.isfinite(sample.label)
        expected = skm.log_loss(sample.label[rows], sample.score[rows], labels=[0, 1])
        assert summary.log_loss == pytest.approx(expected, rel=1e-9)
        y, p = sample.label[rows], sample.score[rows]
        losses.append(-(y * np.log(p) + (1 - y) * np.log(1 - p)))
    stat = check(stats, CheckName.LOG_LOSS)
    welch = scipy.stats.ttest_ind(losses[1], losses[0], equal_var=False, alternative="greater")
    assert stat.p_value == pytest.approx(welch.pvalue, rel=1e-9)
    assert stats.challenger.log_loss is not None and stats.champion.log_loss is not None
    assert stat.difference == pytest.approx(stats.challenger.log_loss - stats.champion.log_loss)


def test_prediction_shift_is_the_jensen_shannon_distance_of_score_histograms() -> None:
    rng = np.random.default_rng(7)
    # Values on bin edges land in the upper bin, 1.0 in the last: as numpy's histogram.
    edges = np.array([0.0, 0.05, 0.5, 0.95, 1.0])
    champion_scores = np.r_[rng.beta(2, 5, 900), edges]
    challenger_scores = np.r_[rng.beta(2, 3, 600), edges]
    champion = sample_from_arrays(np.ones(905, bool), np.ones(905), score=champion_scores)
    challenger = sample_from_arrays(np.ones(605, bool), np.ones(605), score=challenger_scores)
    stats = compare(champion, challenger, POLICY, seed=2)
    stat = check(stats, CheckName.PREDICTION_SHIFT)
    counts = [
        np.histogram(s, bins=20, range=(0, 1))[0] for s in (challenger_scores, champion_scores)
    ]
    assert stat.difference == pytest.approx(jensenshannon(*counts, base=2), rel=1e-12)
    assert stat.p_value is not None and stat.p_value < 1e-3  # clearly different shapes
    assert stats.champion.mean_prediction == pytest.approx(champion_scores.mean())
    same = compare(champion, champion, POLICY, seed=2)
    assert check(same, CheckName.PREDICTION_SHIFT).difference == 0.0
    assert check(same, CheckName.PREDICTION_SHIFT).p_value == 1.0


def test_prediction_shift_without_scores_uses_classes_or_pooled_quantiles() -> None:
    classes_a, classes_b = (
        np.array([0.0] * 60 + [1.0] * 30 + [2.0] * 10),
        np.array([0.0] * 20 + [1.0] * 50 + [2.0] * 30),
    )
    a = sample_from_arrays(np.ones(100, bool), np.ones(100), prediction=classes_a)
    b = sample_from_arrays(np.ones(100, bool), np.ones(100), prediction=classes_b)
    stat = check(compare(a, b, POLICY, seed=1), CheckName.PREDICTION_SHIFT)
    assert stat.difference == pytest.approx(jensenshannon([20, 50, 30], [60, 30, 10], base=2))
    assert "class frequencies" in stat.detail

    rng = np.random.default_rng(8)
    reg_a, reg_b = rng.normal(10, 2, 1000), rng.normal(10, 2, 1000)
    a = sample_from_arrays(np.ones(1000, bool), np.ones(1000), prediction=reg_a, label=reg_a)
    b = sample_from_arrays(np.ones(1000, bool), np.ones(1000), prediction=reg_b, label=reg_a)
    stats = compare(a, b, POLICY, seed=1)
    stat = check(stats, CheckName.PREDICTION_SHIFT)
    assert "pooled quantiles" in stat.detail
    assert stat.difference is not None and stat.difference < 0.1
    # A regressor has no accuracy or log loss: listed, with the reason.
    assert check(stats, CheckName.ACCURACY).difference is None
    assert "not a classifier" in check(stats, CheckName.ACCURACY).detail
    assert stats.champion.accuracy is None


def test_checks_that_cannot_run_are_listed_with_the_reason() -> None:
    failing = sample_from_arrays([False] * 30, [900.0] * 30)
    unlabelled = sample_from_arrays([True] * 30, [10.0] * 30, prediction=[1.0] * 30)
    stats = compare(failing, unlabelled, POLICY, seed=1)
    assert [c.name for c in stats.checks] == list(CheckName)
    p50 = check(stats, CheckName.LATENCY_P50)
    assert (p50.difference, p50.p_value) == (None, None)
    assert p50.detail == "no successful call on the champion"
    accuracy = check(stats, CheckName.ACCURACY)
    assert accuracy.detail == "no labelled successful call yet on the challenger and the champion"
    assert stats.champion.latency_p50_ms is None and stats.champion.error_rate == 1.0

    empty = compare(VariantSample.empty(), VariantSample.empty(), POLICY, seed=1)
    assert all(c.p_value is None for c in empty.checks)
    assert check(empty, CheckName.ERROR_RATE).detail == (
        "no requests on the challenger and the champion"
    )
    assert canary_verdict(empty, POLICY, MIN_REQUESTS).outcome is Outcome.INCONCLUSIVE


def test_compare_takes_well_under_a_second_for_100k_rows_per_side() -> None:
    rng = np.random.default_rng(10)
    champion, challenger = draw(rng, 100_000, labelled_share=0.3), draw(rng, 100_000)
    compare(champion, challenger, POLICY, seed=1)  # warm-up (imports, caches)
    started = time.perf_counter()
    compare(champion, challenger, POLICY, seed=1)
    assert time.perf_counter() - started < 0.5


def test_variant_sample_refuses_ragged_arrays() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        sample_from_arrays([True, True], [1.0], prediction=[1.0, 2.0])
    assert VariantSample.empty().size == 0


# ---- verdict: hand-built statistics --------------------------------------------------------


def summary(variant: str, requests: int = 1000, labelled: int = 500) -> VariantSummary:
    return VariantSummary(
        variant=variant, requests=requests, errors=0, error_rate=0.0, labelled=labelled
    )


GOOD_CHECKS: dict[CheckName, dict[str, Any]] = {
    CheckName.SAMPLE_SIZE: dict(champion=1000, challenger=1000, samples=1000),
    CheckName.ERROR_RATE: dict(
        champion=0.004, challenger=0.005, difference=0.001, p_value=0.3, samples=1000
    ),
    CheckName.LATENCY_P50: dict(
        champion=40.0, challenger=41.0, difference=1.025, p_value=0.2, samples=990
    ),
    CheckName.LATENCY_P99: dict(
        champion=120.0, challenger=118.0, difference=0.98, p_value=0.6, samples=990
    ),
    CheckName.ACCURACY: dict(
        champion=0.85, challenger=0.86, difference=-0.01, p_value=0.8, samples=500
    ),
    CheckName.LOG_LOSS: dict(
        champion=0.35, challenger=0.34, difference=-0.01, p_value=0.7, samples=500
    ),
    CheckName.PREDICTION_SHIFT: dict(
        champion=0.30, challenger=0.31, difference=0.04, p_value=0.4, samples=990
    ),
}


def statistics(
    *,
    requests: tuple[int, int] = (1000, 1000),
    labelled: tuple[int, int] = (500, 500),
    shadow: bool = False,
    **changes: dict[str, Any] | None,
) -> CanaryStatistics:
    """Good statistics (every check passes), with some checks' fields changed (None: dropped)."""
    checks = []
    for name, fields in GOOD_CHECKS.items():
        change = changes.get(name.value, {})
        if change is None:
            continue
        checks.append(CheckStatistic.model_construct(name=name, detail="", **(fields | change)))
    return CanaryStatistics(
        champion=summary("v3", requests[0], labelled[0]),
        challenger=summary("v4", requests[1], labelled[1]),
        checks=checks,
        shadow=shadow,
    )


def test_good_statistics_pass_with_one_line_per_check() -> None:
    verdict = canary_verdict(statistics(), POLICY, MIN_REQUESTS)
    assert verdict.outcome is Outcome.PASS
    lines = verdict.summary.splitlines()
    assert lines[0] == "Canary PASS: challenger v4 vs champion v3, all 7 checks passed"
    assert lines[1:] == [f"{c.name.value}: {c.reason}: PASS" for c in verdict.checks]
    assert lines[2] == "error_rate: 0.005 vs 0.004 (+0.001 <= 0.010, p=0.3 >= 0.0017): PASS"
    assert lines[3] == "latency_p50: 41 vs 40 ms (x1.02 <= x1.50, p=0.2 >= 0.0017): PASS"
    assert [c.name for c in verdict.checks] == list(CheckName)


def test_a_worse_error_rate_fails_with_its_numbers() -> None:
    stats = statistics(
        error_rate=dict(champion=0.004, challenger=0.112, difference=0.108, p_value=2e-9)
    )
    verdict = canary_verdict(stats, POLICY, MIN_REQUESTS)
    assert verdict.outcome is Outcome.FAIL
    line = "error_rate: 0.112 vs 0.004 (+0.108 > 0.010, p=2e-09 < 0.0017): FAIL"
    assert line in verdict.summary.splitlines()
    assert verdict.summary.splitlines()[0].endswith("fail: error_rate")
    error = result(verdict, CheckName.ERROR_RATE)
    assert (error.value, error.threshold, error.p_value) == (0.108, 0.01, 2e-9)
    assert error.alpha == pytest.approx(0.01 / 6)


def test_alpha_is_split_over_the_checks_with_a_p_value() -> None:
    per_check = POLICY.alpha / 6

    def error_outcome(p_value: float, **changes: Any) -> Outcome:
        stats = statistics(error_rate=dict(difference=0.05, p_value=p_value), **changes)
        return result(canary_verdict(stats, POLICY, MIN_REQUESTS), CheckName.ERROR_RATE).outcome

    assert error_outcome(per_check * 0.99) is Outcome.FAIL
    assert error_outcome(per_check * 1.01) is Outcome.PASS
    # Without p-values for the quality checks (no labels yet) the split is over four.
    no_quality = dict(accuracy=dict(p_value=None), log_loss=dict(p_value=None))
    assert error_outcome(per_check * 1.01, **no_quality) is Outcome.FAIL
    assert error_outcome(POLICY.alpha / 4 * 1.01, **no_quality) is Outcome.PASS


def test_a_significant_difference_within_tolerance_passes() -> None:
    stats = statistics(
        error_rate=dict(difference=0.009, p_value=1e-12),
        latency_p99=dict(difference=1.5, p_value=1e-12),
    )
    assert canary_verdict(stats, POLICY, MIN_REQUESTS).outcome is Outcome.PASS
    slow = statistics(
        latency_p99=dict(champion=100.0, challenger=160.0, difference=1.6, p_value=1e-4)
    )
    verdict = canary_verdict(slow, POLICY, MIN_REQUESTS)
    assert result(verdict, CheckName.LATENCY_P99).outcome is Outcome.FAIL
    assert "latency_p99: 160 vs 100 ms (x1.60 > x1.50, p=0.0001 < 0.0017): FAIL" in (
        verdict.summary
    )


def test_too_few_requests_is_inconclusive_even_when_a_check_looks_failed() -> None:
    stats = statistics(
        requests=(3000, 150),
        sample_size=dict(champion=3000, challenger=150, samples=150),
        error_rate=dict(champion=0.0, challenger=0.2, difference=0.2, p_value=1e-9, samples=150),
    )
    verdict = canary_verdict(stats, POLICY, MIN_REQUESTS)
    assert verdict.outcome is Outcome.INCONCLUSIVE
    size = result(verdict, CheckName.SAMPLE_SIZE)
    assert size.reason == "150 vs 3000 requests (150 < 200 per variant)"
    assert (size.value, size.threshold) == (150, 200)
    error = result(verdict, CheckName.ERROR_RATE)
    assert error.outcome is Outcome.INCONCLUSIVE
    assert "only 150 requests per variant (< 200) to fail on" in error.reason
    # The rest is still evaluated and reported.
    assert result(verdict, CheckName.LATENCY_P50).outcome is Outcome.PASS


def test_quality_without_enough_labels_passes_unless_labels_are_required() -> None:
    stats = statistics(
        labelled=(40, 600),
        accuracy=dict(difference=0.2, p_value=1e-5, samples=40),
        log_loss=dict(difference=None, p_value=None, samples=0),
    )
    verdict = canary_verdict(stats, POLICY, MIN_REQUESTS)
    assert verdict.outcome is Outcome.PASS
    accuracy = result(verdict, CheckName.ACCURACY)
    assert accuracy.reason.startswith("not enough labels yet (40/100); so far")
    assert result(verdict, CheckName.LOG_LOSS).reason == "not enough labels yet (40/100)"
    strict = canary_verdict(stats, POLICY.model_copy(update={"require_labels": True}), 200)
    assert strict.outcome is Outcome.INCONCLUSIVE
    assert result(strict, CheckName.ACCURACY).outcome is Outcome.INCONCLUSIVE


def test_a_worse_quality_fails_and_a_check_that_does_not_apply_passes() -> None:
    worse = statistics(accuracy=dict(champion=0.86, challenger=0.78, difference=0.08, p_value=1e-6))
    verdict = canary_verdict(worse, POLICY, MIN_REQUESTS)
    assert verdict.outcome is Outcome.FAIL
    assert "accuracy: 0.780 vs 0.860 (drop +0.080 > 0.030, p=1e-06 < 0.0017): FAIL" in (
        verdict.summary
    )
    regressor = statistics(
        accuracy=dict(difference=None, p_value=None, samples=0),
        log_loss=dict(difference=None, p_value=None, samples=0),
    )
    regressor = regressor.model_copy(
        update={
            "checks": [
                c.model_copy(update={"detail": "not a classifier"})
                if c.name in (CheckName.ACCURACY, CheckName.LOG_LOSS)
                else c
                for c in regressor.checks
            ]
        }
    )
    verdict = canary_verdict(regressor, POLICY, MIN_REQUESTS)
    assert verdict.outcome is Outcome.PASS
    assert result(verdict, CheckName.ACCURACY).reason == "does not apply: not a classifier"


def test_a_prediction_shift_fails_unless_labelled_quality_explains_it() -> None:
    shift = dict(difference=0.25, p_value=1e-5)
    explained = canary_verdict(statistics(prediction_shift=shift), POLICY, MIN_REQUESTS)
    assert explained.outcome is Outcome.PASS
    assert result(explained, CheckName.PREDICTION_SHIFT).reason.endswith(SHIFT_EXPLAINED)
    # Labels arriving but too few yet: wait for them (bake longer, then a human).
    arriving = statistics(labelled=(20, 20), prediction_shift=shift)
    verdict = canary_verdict(arriving, POLICY, MIN_REQUESTS)
    assert verdict.outcome is Outcome.INCONCLUSIVE
    assert "waiting for labels to explain it (20/" in verdict.summary
    # No labels at all: nothing will explain it.
    unlabelled = statistics(labelled=(0, 0), prediction_shift=shift)
    verdict = canary_verdict(unlabelled, POLICY, MIN_REQUESTS)
    assert verdict.outcome is Outcome.FAIL
    assert "prediction_shift: Jensen-Shannon distance 0.250 (> 0.100, p=1e-05 < 0.0017)" in (
        verdict.summary
    )
    # A worse quality does not explain it either.
    worse = statistics(accuracy=dict(difference=0.08, p_value=1e-6), prediction_shift=shift)
    verdict = canary_verdict(worse, POLICY, MIN_REQUESTS)
    assert result(verdict, CheckName.PREDICTION_SHIFT).outcome is Outcome.FAIL
    # Not significant (sampling noise of small windows), or too few answers to fail on.
    noise = statistics(labelled=(20, 20), prediction_shift=dict(difference=0.18, p_value=0.4))
    assert canary_verdict(noise, POLICY, MIN_REQUESTS).outcome is Outcome.PASS
    few = statistics(labelled=(20, 20), prediction_shift=shift | {"samples": 120})
    assert canary_verdict(few, POLICY, MIN_REQUESTS).outcome is Outcome.INCONCLUSIVE


def test_missing_or_non_finite_numbers_are_inconclusive_never_an_exception() -> None:
    stats = statistics(
        latency_p99=None,
        error_rate=dict(difference=math.nan, p_value=math.nan),
        latency_p50=dict(difference=None, p_value=None, champion=None),
        prediction_shift=dict(difference=math.inf),
    )
    verdict = canary_verdict(stats, POLICY, MIN_REQUESTS)
    assert verdict.outcome is Outcome.INCONCLUSIVE
    for name in (
        CheckName.ERROR_RATE,
        CheckName.LATENCY_P50,
        CheckName.LATENCY_P99,
        CheckName.PREDICTION_SHIFT,
    ):
        assert result(verdict, name).outcome is Outcome.INCONCLUSIVE
    assert result(verdict, CheckName.LATENCY_P99).reason == "could not be measured: not measured"
    assert [c.name for c in verdict.checks][-1] is CheckName.LATENCY_P99


def test_shadow_statistics_follow_the_same_rules() -> None:
    verdict = canary_verdict(statistics(shadow=True), POLICY, MIN_REQUESTS)
    assert verdict.summary.startswith("Shadow canary PASS: challenger v4 vs champion v3")


def test_the_verdict_module_imports_only_the_standard_library_and_our_models() -> None:
    tree = ast.parse(Path(workflows.rollout.rules.__file__).read_text())
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported == {
        "__future__",
        "math",
        "collections.abc",
        "dataclasses",
        "workflows.rollout.models",
    }


# ---- property tests ------------------------------------------------------------------------

# Zero tolerances: a check fails on significance alone, so the family-wise rate is exactly what
# the Bonferroni split controls. A larger alpha keeps the expected count measurable.
NULL_POLICY = CanaryPolicy(
    alpha=0.1,
    max_error_rate_increase=0,
    max_latency_ratio=1,
    max_accuracy_drop=0,
    max_log_loss_increase=0,
    max_prediction_shift=0,
    min_labelled=50,
)
NULL_TRIALS = 300


@pytest.fixture(scope="module")
def identical_variant_trials() -> list[CanaryVerdict]:
    """Independent trials (numpy-seeded: a rate needs independent draws, which hypothesis'
    search is not) of two variants drawn from the same distributions: sizes 200..5000 per side,
    error rates, latency shapes, accuracies and label shares varying between trials."""
    rng = np.random.default_rng(2026)
    verdicts = []
    for _ in range(NULL_TRIALS):
        params: dict[str, Any] = dict(
            error_rate=rng.uniform(0.005, 0.05),
            median_ms=rng.uniform(20, 200),
            sigma=rng.uniform(0.2, 1.0),
            shape=rng.choice(["lognormal", "gamma"]),
            accuracy=rng.uniform(0.6, 0.95),
            labelled_share=rng.uniform(0.3, 1.0),
        )
        champion = draw(rng, int(rng.integers(200, 5001)), **params)
        challenger = draw(rng, int(rng.integers(200, 5001)), **params)
        stats = compare(champion, challenger, NULL_POLICY, seed=int(rng.integers(2**32)))
        verdicts.append(canary_verdict(stats, NULL_POLICY, MIN_REQUESTS))
    return verdicts


def test_identical_variants_fail_at_most_about_alpha(
    identical_variant_trials: list[CanaryVerdict],
) -> None:
    fails = sum(v.outcome is Outcome.FAIL for v in identical_variant_trials)
    # 99.9% upper bound of Binomial(300, alpha): 47 for alpha = 0.1. Without the Bonferroni
    # split, six checks each failing 10% of identical pairs would fail about 40% of them.
    bound = scipy.stats.binom.ppf(0.999, NULL_TRIALS, NULL_POLICY.alpha)
    assert 0 < fails <= bound
    assert all(len(v.checks) == len(CheckName) for v in identical_variant_trials)


def test_p_values_are_one_sided_and_calibrated(
    identical_variant_trials: list[CanaryVerdict],
) -> None:
    """Under identical variants P(p < 0.1) is about 0.1 for each test, and a small p-value means
    the challenger looked worse (a two-sided or wrong-tailed test would fail this)."""
    upper = scipy.stats.binom.ppf(0.999, NULL_TRIALS, 0.1)
    for name in CheckName:
        if name is CheckName.SAMPLE_SIZE:
            continue
        stats = [check(v.statistics, name) for v in identical_variant_trials]
        small = [s for s in stats if s.p_value is not None and s.p_value < 0.1]
        assert 5 <= len(small) <= upper, (name, len(small))
        if name is CheckName.PREDICTION_SHIFT:  # a distance has no direction
            continue
        neutral = 1.0 if name in (CheckName.LATENCY_P50, CheckName.LATENCY_P99) else 0.0
        worse = sum(s.difference is not None and s.difference > neutral for s in small)
        assert worse >= 0.8 * len(small), (name, worse, len(small))


WORSE = {
    "errors": ({"error_rate": 0.11}, {CheckName.ERROR_RATE}),
    "latency": ({"latency_factor": 2.0}, {CheckName.LATENCY_P50, CheckName.LATENCY_P99}),
    "accuracy": ({"accuracy": 0.75}, {CheckName.ACCURACY, CheckName.LOG_LOSS}),
}


@PROPERTY_SETTINGS
@given(
    kind=st.sampled_from(sorted(WORSE)),
    champion_size=st.integers(500, 5000),
    challenger_size=st.integers(500, 5000),
    seed=st.integers(0, 2**32 - 1),
)
def test_a_clearly_worse_challenger_fails(
    kind: str, champion_size: int, challenger_size: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    base: dict[str, Any] = {"error_rate": 0.01, "accuracy": 0.9, "labelled_share": 1.0}
    change, expected = WORSE[kind]
    champion = draw(rng, champion_size, **base)
    challenger = draw(rng, challenger_size, **(base | change))
    verdict = canary_verdict(compare(champion, challenger, POLICY, seed=seed), POLICY, 200)
    assert verdict.outcome is Outcome.FAIL, verdict.summary
    assert expected & {c.name for c in verdict.checks if c.outcome is Outcome.FAIL}


@PROPERTY_SETTINGS
@given(
    champion_size=st.integers(0, 3000),
    challenger_size=st.integers(0, 3000),
    labelled_share=st.floats(0, 1),
    seed=st.integers(0, 2**32 - 1),
)
def test_row_order_changes_nothing(
    champion_size: int, challenger_size: int, labelled_share: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    champion = draw(rng, champion_size, labelled_share=labelled_share)
    challenger = draw(rng, challenger_size, labelled_share=labelled_share, latency_factor=1.1)
    verdict = canary_verdict(compare(champion, challenger, POLICY, seed=seed), POLICY, 200)
    permuted = compare(shuffled(champion, rng), shuffled(challenger, rng), POLICY, seed=seed)
    assert canary_verdict(permuted, POLICY, 200) == verdict


finite = st.floats(min_value=-10.0, max_value=10.0, allow_nan=False)
p_values = st.none() | st.floats(min_value=0.0, max_value=1.0)


@st.composite
def any_statistics(draw_: st.DrawFn, below: int) -> CanaryStatistics:
    """Statistics with arbitrary numbers, the smaller side below `below` requests."""
    small = draw_(st.integers(0, below - 1))
    large = draw_(st.integers(small, 100_000))
    requests = draw_(st.permutations([small, large]))
    checks = [
        CheckStatistic(
            name=name,
            champion=draw_(st.none() | finite),
            challenger=draw_(st.none() | finite),
            difference=draw_(st.none() | finite),
            p_value=draw_(p_values),
            samples=draw_(st.integers(0, 100_000)),
        )
        for name in draw_(st.lists(st.sampled_from(list(CheckName)), unique=True))
    ]
    sides = [
        VariantSummary(
            variant=f"v{i + 1}",
            requests=count,
            errors=0,
            error_rate=0.0,
            labelled=draw_(st.integers(0, 100_000)),
        )
        for i, count in enumerate(requests)
    ]
    return CanaryStatistics(champion=sides[0], challenger=sides[1], checks=checks)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), min_requests=st.integers(1, 10_000), require_labels=st.booleans())
def test_never_pass_below_min_requests(
    data: st.DataObject, min_requests: int, require_labels: bool
) -> None:
    stats = data.draw(any_statistics(min_requests))
    policy = POLICY.model_copy(update={"require_labels": require_labels})
    verdict = canary_verdict(stats, policy, min_requests)
    assert verdict.outcome is not Outcome.PASS
    assert result(verdict, CheckName.SAMPLE_SIZE).outcome is Outcome.INCONCLUSIVE


@PROPERTY_SETTINGS
@given(
    champion_size=st.integers(0, 199),
    challenger_size=st.integers(0, 5000),
    seed=st.integers(0, 2**32 - 1),
)
def test_measured_small_windows_never_pass(
    champion_size: int, challenger_size: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    stats = compare(draw(rng, champion_size), draw(rng, challenger_size), POLICY, seed=seed)
    assert canary_verdict(stats, POLICY, MIN_REQUESTS).outcome is not Outcome.PASS


# ---- the window reader ---------------------------------------------------------------------

SPEC = synthetic_spec("churn")
REQUEST_SCHEMA = layout.request_schema(SPEC, pa.schema([(name, pa.float64()) for name in FEATURES]))
DAY = date(2026, 3, 10)
SINCE = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
GENERATION = 7


def at(day: date, hour: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def request(request_id: str, **fields: Any) -> dict[str, Any]:
    row = {
        layout.REQUEST_ID: request_id,
        layout.VARIANT: "v2",
        layout.VERSION: "2",
        layout.SHADOW: False,
        layout.GENERATION: GENERATION,
        layout.CAPTURED_AT: at(DAY, 10),
        layout.LATENCY_MS: 12.5,
        layout.STATUS_CODE: 200,
        layout.ERROR: None,
        layout.PREDICTION: 1.0,
        layout.SCORE: 0.8,
        "salary": 50_000.0,
    }
    return row | fields


def write(root: Path, kind: str, day: date, name: str, rows: list[dict[str, Any]]) -> None:
    schema = REQUEST_SCHEMA if kind == layout.REQUESTS else layout.FEEDBACK_SCHEMA
    table = pa.Table.from_pylist(rows, schema=schema)
    write_parquet_atomic(table, layout.partition(root, kind, day) / name)


def feedback(request_id: str, label: float, received: datetime) -> dict[str, Any]:
    return {layout.REQUEST_ID: request_id, layout.LABEL: label, layout.RECEIVED_AT: received}


def ref(variant: str = "v2", generation: int = GENERATION, **fields: Any) -> WindowRef:
    return WindowRef(variant=variant, generation=generation, since=SINCE, **fields)


@pytest.fixture
def capture(tmp_path: Path) -> Path:
    next_day = DAY + timedelta(days=1)
    write(tmp_path, layout.REQUESTS, DAY - timedelta(days=1), "part-1-0.parquet", [request("old")])
    write(
        tmp_path,
        layout.REQUESTS,
        DAY,
        "part-2-0.parquet",
        [
            request("r1"),
            request(
                "r2",
                **{
                    layout.STATUS_CODE: 503,
                    layout.LATENCY_MS: 100.0,
                    layout.PREDICTION: None,
                    layout.SCORE: None,
                    layout.ERROR: "model crashed",
                },
            ),
            request("r3", **{layout.GENERATION: 6}),
            request("r4", **{layout.VARIANT: "v3", layout.VERSION: "3"}),
            request(
                "r1",
                **{
                    layout.VARIANT: "v3",
                    layout.VERSION: "3",
                    layout.SHADOW: True,
                    layout.SCORE: 0.3,
                    layout.PREDICTION: 0.0,
                },
            ),
            request("r5", **{layout.STATUS_CODE: 422, layout.PREDICTION: None, layout.SCORE: None}),
        ],
    )
    write(
        tmp_path,
        layout.REQUESTS,
        next_day,
        "part-3-0.parquet",
        [request("r6", **{layout.LATENCY_MS: 30.0, layout.SCORE: 0.6})],
    )
    # r1's labels: the latest by received_at wins, whatever the file order.
    write(
        tmp_path,
        layout.FEEDBACK,
        DAY,
        "part-4-0.parquet",
        [feedback("r1", 0.0, at(DAY, 11)), feedback("r6", 1.0, at(next_day, 9))],
    )
    write(
        tmp_path,
        layout.FEEDBACK,
        next_day,
        "part-5-0.parquet",
        [feedback("r1", 1.0, at(next_day, 12)), feedback("x", 1.0, at(next_day, 12))],
    )
    write(
        tmp_path,
        layout.FEEDBACK,
        next_day,
        "part-6-0.parquet",
        [feedback("r1", 0.0, at(next_day, 8))],
    )
    return tmp_path


def test_read_window_keeps_one_variant_generation_and_stream(capture: Path) -> None:
    sample = read_window(capture, ref())
    assert sample.size == 4  # r1, r2, r5, r6; not r3 (generation 6), r4 (v3), old (a day early)
    assert sample.ok.tolist() == [True, False, True, True]
    assert sample.latency_ms.tolist() == [12.5, 100.0, 12.5, 30.0]
    np.testing.assert_array_equal(sample.prediction, [1.0, np.nan, np.nan, 1.0])
    np.testing.assert_array_equal(sample.score, [0.8, np.nan, np.nan, 0.6])
    # r1's latest label (received last, though in an earlier file); r2 and r5 have none yet.
    np.testing.assert_array_equal(sample.label, [1.0, np.nan, np.nan, 1.0])
    shadow = read_window(capture, ref("v3", shadow=True))
    assert shadow.size == 1 and shadow.label.tolist() == [1.0] and shadow.score.tolist() == [0.3]
    assert read_window(capture, ref("v3")).size == 1


def test_read_window_since_is_taken_in_utc(capture: Path) -> None:
    # 01:00 at UTC+5 is the previous UTC day: its partition is read too.
    since = datetime(2026, 3, 10, 1, 0, tzinfo=timezone(timedelta(hours=5)))
    window = WindowRef(variant="v2", generation=GENERATION, since=since)
    assert read_window(capture, window).size == 5


def test_an_empty_window_is_a_valid_empty_sample(tmp_path: Path, capture: Path) -> None:
    assert read_window(tmp_path / "nothing", ref()).size == 0
    empty = read_window(capture, ref(generation=99))
    assert empty.size == 0 and empty.label.dtype == np.float64
    stats = compare(empty, empty, POLICY, seed=1)
    assert stats.challenger.requests == 0


def test_unreadable_capture_files_are_invalid_capture_data(capture: Path) -> None:
    broken = layout.partition(capture, layout.REQUESTS, DAY) / "part-9-0.parquet"
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(InvalidCaptureData, match="cannot read the request capture of v2"):
        read_window(capture, ref())
    broken.unlink()
    table = pa.Table.from_pylist([request("r9")], schema=REQUEST_SCHEMA).drop_columns(
        [layout.GENERATION]
    )
    write_parquet_atomic(table, broken)
    with pytest.raises(InvalidCaptureData, match="lacks the column\\(s\\) generation"):
        read_window(capture, ref())


# ---- the activity --------------------------------------------------------------------------


def canary_request(capture_dir: Path | str) -> CanaryRequest:
    return CanaryRequest(
        model="churn",
        endpoint_url="http://127.0.0.1:8081",
        capture_dir=str(capture_dir),
        champion=ref("v3"),
        challenger=ref("v2"),
        policy=POLICY,
        seed=42,
    )


def test_the_activity_flushes_then_measures(capture: Path) -> None:
    flushed: list[str] = []
    activities = CanaryActivities(CaptureCanary(capture.parent, flush=flushed.append))
    # The spec's capture location is relative to the retrain home (an absolute one also works).
    stats = ActivityEnvironment().run(activities.analyse, canary_request(capture.name))
    again = ActivityEnvironment().run(activities.analyse, canary_request(capture))
    assert again == stats
    assert flushed == ["http://127.0.0.1:8081"] * 2
    assert (stats.champion.variant, stats.champion.requests) == ("v3", 1)
    assert (stats.challenger.variant, stats.challenger.requests, stats.challenger.errors) == (
        "v2",
        4,
        1,
    )
    assert not stats.shadow


def test_the_activity_refuses_bad_capture_without_retrying(capture: Path) -> None:
    (layout.partition(capture, layout.FEEDBACK, DAY) / "part-9-0.parquet").write_bytes(b"junk")
    with pytest.raises(ApplicationError) as raised:
        ActivityEnvironment().run(
            CanaryActivities(CaptureCanary(capture, flush=lambda url: None)).analyse,
            canary_request(capture),
        )
    assert raised.value.type == ErrorType.INVALID_CAPTURE_DATA
    assert raised.value.non_retryable
    assert "churn: cannot read the feedback capture" in str(raised.value)


def test_a_p99_from_fewer_than_a_hundred_calls_cannot_fail() -> None:
    slower = dict(difference=2.5, p_value=1e-5, challenger=100.0, champion=40.0)
    few = canary_verdict(statistics(latency_p99=slower | {"samples": 60}), POLICY, min_requests=50)
    assert result(few, CheckName.LATENCY_P99).outcome is Outcome.INCONCLUSIVE
    assert "only 60 successful calls per variant (< 100)" in few.summary
    enough = canary_verdict(statistics(latency_p99=slower | {"samples": 100}), POLICY, 50)
    assert result(enough, CheckName.LATENCY_P99).outcome is Outcome.FAIL


# ---- a rollout answering degraded quality: the challenger must be significantly better ------


def test_p_better_is_the_other_side_of_each_quality_test() -> None:
    rng = np.random.default_rng(12)
    champion, challenger = draw(rng, 800, accuracy=0.6), draw(rng, 800, accuracy=0.9)
    stats = compare(champion, challenger, POLICY, seed=2)
    accuracy = check(stats, CheckName.ACCURACY)
    assert accuracy.p_better is not None and accuracy.p_value is not None
    assert accuracy.p_better < 1e-6 < 0.999 < accuracy.p_value
    assert accuracy.p_better + accuracy.p_value == pytest.approx(1.0)
    log_loss = check(stats, CheckName.LOG_LOSS)
    assert log_loss.p_better is not None and log_loss.p_better < 1e-6


def test_an_improvement_requirement_passes_only_a_significantly_better_challenger() -> None:
    improve = QualityImprovement(check="accuracy")
    better = dict(champion=0.52, challenger=0.91, difference=-0.39, p_value=1.0, p_better=1e-20)
    verdict = canary_verdict(statistics(accuracy=better), POLICY, MIN_REQUESTS, improve)
    assert verdict.outcome is Outcome.PASS
    assert "improvement: +0.39 (p_better=1e-20 < 0.0017): significantly better" in (
        result(verdict, CheckName.ACCURACY).reason
    )
    # Not worse is not enough: a challenger as good as the degraded champion waits (bake
    # again, then a human), and without the requirement it would pass.
    same = dict(champion=0.52, challenger=0.53, difference=-0.01, p_value=0.6, p_better=0.4)
    verdict = canary_verdict(statistics(accuracy=same), POLICY, MIN_REQUESTS, improve)
    assert verdict.outcome is Outcome.INCONCLUSIVE
    assert "not shown yet" in result(verdict, CheckName.ACCURACY).reason
    assert canary_verdict(statistics(accuracy=same), POLICY, MIN_REQUESTS).outcome is Outcome.PASS
    # Too few labels: inconclusive whatever require_labels says.
    few = canary_verdict(
        statistics(labelled=(30, 30), accuracy=better), POLICY, MIN_REQUESTS, improve
    )
    assert few.outcome is Outcome.INCONCLUSIVE
    assert "not enough labels yet (30/100)" in result(few, CheckName.ACCURACY).reason
    # Significantly worse still fails.
    worse = dict(champion=0.60, challenger=0.50, difference=0.10, p_value=1e-9, p_better=1.0)
    verdict = canary_verdict(statistics(accuracy=worse), POLICY, MIN_REQUESTS, improve)
    assert verdict.outcome is Outcome.FAIL
    # The requirement on log loss leaves accuracy to the usual rule; a p-value without its
    # other side (another backend's statistics) counts as its complement.
    on_loss = QualityImprovement(check="log_loss")
    loss = dict(champion=1.6, challenger=0.3, difference=-1.3, p_value=1.0 - 1e-12)
    verdict = canary_verdict(statistics(log_loss=loss), POLICY, MIN_REQUESTS, on_loss)
    assert result(verdict, CheckName.LOG_LOSS).outcome is Outcome.PASS


def test_a_prediction_shift_is_explained_by_a_significant_improvement() -> None:
    improve = QualityImprovement(check="accuracy")
    better = dict(champion=0.52, challenger=0.91, difference=-0.39, p_value=1.0, p_better=1e-20)
    shift = dict(difference=0.4, p_value=1e-5)
    verdict = canary_verdict(
        statistics(accuracy=better, prediction_shift=shift), POLICY, MIN_REQUESTS, improve
    )
    assert verdict.outcome is Outcome.PASS
    assert result(verdict, CheckName.PREDICTION_SHIFT).reason.endswith(SHIFT_EXPLAINED)


@pytest.mark.parametrize(
    ("metric", "expected"),
    [("accuracy", "accuracy"), ("roc_auc", "accuracy"), ("log_loss", "log_loss"), ("mae", None)],
)
def test_the_canary_requirement_follows_the_degraded_metric(
    metric: str, expected: str | None
) -> None:
    requirement = canary_improvement(metric, has_champion=True)
    assert (requirement.check if requirement else None) == expected
    assert canary_improvement(metric, has_champion=False) is None
    assert canary_improvement(None, has_champion=True) is None
