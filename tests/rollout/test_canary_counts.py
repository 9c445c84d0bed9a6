"""count_statistics on hand-made counts: its tests against scipy on the raw values they sum, and
the verdict it leads to (what both cloud backends' canaries rely on)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest
import scipy.stats  # type: ignore[import-untyped, unused-ignore]

from activities.ports import MetricSource
from activities.rollout.counts import VariantCounts, count_statistics, score_bin, score_histogram
from activities.rollout.statistics import SHIFT_BINS
from workflows.rollout.models import (
    CanaryPolicy,
    CanaryStatistics,
    CheckName,
    CheckStatistic,
    Outcome,
)
from workflows.rollout.rules import SHIFT_EXPLAINED, canary_verdict

POLICY = CanaryPolicy()
SOURCE = MetricSource(store="CloudWatch", latency="ModelLatency", requests="invocations")
RNG_SEED = 5


def variant(
    name: str, *, scores: np.ndarray[Any, Any] | None = None, **changes: Any
) -> VariantCounts:
    """2000 requests, 1% errors, 400 labelled at 85% and their losses, 1980 scores."""
    rng = np.random.default_rng(RNG_SEED)
    losses = rng.gamma(2.0, 0.15, size=400)
    if scores is None:
        scores = rng.beta(2, 3, size=1980)
    counts = VariantCounts(
        variant=name,
        requests=2000,
        errors=20,
        latency_p50_ms=20.0,
        latency_p99_ms=80.0,
        labelled=400,
        correct=340,
        losses=losses.size,
        loss_sum=math.fsum(losses),
        loss_squared_sum=math.fsum(losses * losses),
        bins=tuple(score_histogram(scores)),
    )
    return dataclasses.replace(counts, **changes)


def check(stats: CanaryStatistics, name: CheckName) -> CheckStatistic:
    return next(c for c in stats.checks if c.name is name)


def outcomes(stats: CanaryStatistics) -> dict[CheckName, Outcome]:
    verdict = canary_verdict(stats, POLICY, min_requests=200)
    return {result.name: result.outcome for result in verdict.checks}


def test_equal_variants_pass_every_check() -> None:
    stats = count_statistics(variant("v1"), variant("v2"), shadow=True, source=SOURCE)
    assert stats.shadow
    assert [c.name for c in stats.checks] == list(CheckName)
    assert set(outcomes(stats).values()) == {Outcome.PASS}
    assert check(stats, CheckName.SAMPLE_SIZE).detail == (
        "2000 invocations on the challenger, 2000 on the champion"
    )
    assert stats.challenger.mean_prediction == pytest.approx(0.4, abs=0.02)


def test_five_times_the_errors_fails_error_rate() -> None:
    stats = count_statistics(variant("v1"), variant("v2", errors=100), shadow=False, source=SOURCE)
    error_rate = check(stats, CheckName.ERROR_RATE)
    assert error_rate.difference == pytest.approx(0.04)
    expected = scipy.stats.norm.sf((0.05 - 0.01) / math.sqrt(0.03 * 0.97 * (2 / 2000)))
    assert error_rate.p_value == pytest.approx(expected)
    assert outcomes(stats)[CheckName.ERROR_RATE] is Outcome.FAIL


def test_a_latency_ratio_of_three_fails_latency() -> None:
    slow = variant("v2", latency_p50_ms=60.0, latency_p99_ms=240.0)
    stats = count_statistics(variant("v1"), slow, shadow=False, source=SOURCE)
    for name in (CheckName.LATENCY_P50, CheckName.LATENCY_P99):
        latency = check(stats, name)
        assert latency.difference == pytest.approx(3.0) and latency.p_value is None
        assert latency.samples == 1980
        assert outcomes(stats)[name] is Outcome.FAIL
    assert "CloudWatch p99 of ModelLatency" in check(stats, CheckName.LATENCY_P99).detail


def test_the_mean_stands_in_for_missing_percentiles() -> None:
    champion = variant("v1", latency_p50_ms=None, latency_p99_ms=None, latency_mean_ms=25.0)
    challenger = variant("v2", latency_p50_ms=30.0, latency_mean_ms=35.0)
    stats = count_statistics(champion, challenger, shadow=False, source=SOURCE)
    p50 = check(stats, CheckName.LATENCY_P50)
    assert p50.difference == pytest.approx(35.0 / 25.0)
    assert p50.detail.startswith("mean ModelLatency (CloudWatch returned no p50)")
    no_mean = dataclasses.replace(champion, latency_mean_ms=None)
    stats = count_statistics(no_mean, challenger, shadow=False, source=SOURCE)
    assert check(stats, CheckName.LATENCY_P50).detail == "no ModelLatency data on the champion"


def test_a_shift_with_labels_not_worse_is_explained() -> None:
    shifted = np.random.default_rng(9).beta(3, 2, size=1980)
    stats = count_statistics(
        variant("v1"), variant("v2", scores=shifted), shadow=False, source=SOURCE
    )
    shift = check(stats, CheckName.PREDICTION_SHIFT)
    assert (shift.difference or 0) > POLICY.max_prediction_shift
    table = np.array([variant("v2", scores=shifted).bins, variant("v1").bins])
    table = table[:, table.sum(axis=0) > 0]
    expected = scipy.stats.chi2_contingency(table, correction=False).pvalue
    assert shift.p_value == pytest.approx(expected)
    verdict = canary_verdict(stats, POLICY, min_requests=200)
    result = next(r for r in verdict.checks if r.name is CheckName.PREDICTION_SHIFT)
    assert result.outcome is Outcome.PASS and SHIFT_EXPLAINED in result.reason
    assert verdict.outcome is Outcome.PASS, verdict.summary


def test_log_loss_from_sums_is_welch_on_the_losses() -> None:
    rng = np.random.default_rng(3)
    champ_losses, chal_losses = rng.gamma(2.0, 0.15, 300), rng.gamma(2.0, 0.17, 250)

    def with_losses(name: str, losses: np.ndarray[Any, Any]) -> VariantCounts:
        return variant(
            name,
            losses=losses.size,
            loss_sum=math.fsum(losses),
            loss_squared_sum=math.fsum(losses * losses),
        )

    stats = count_statistics(
        with_losses("v1", champ_losses), with_losses("v2", chal_losses), shadow=False, source=SOURCE
    )
    log_loss = check(stats, CheckName.LOG_LOSS)
    expected = scipy.stats.ttest_ind(
        chal_losses, champ_losses, equal_var=False, alternative="greater"
    )
    assert log_loss.p_value == pytest.approx(expected.pvalue)
    assert log_loss.difference == pytest.approx(chal_losses.mean() - champ_losses.mean())
    assert log_loss.samples == 250


def test_checks_without_data_say_which_side_lacks_what() -> None:
    empty = VariantCounts(
        variant="v2",
        requests=0,
        errors=0,
        latency_p50_ms=None,
        latency_p99_ms=None,
        labelled=0,
        correct=0,
        losses=0,
        loss_sum=0.0,
        loss_squared_sum=0.0,
        bins=(0,) * SHIFT_BINS,
    )
    stats = count_statistics(variant("v1"), empty, shadow=False, source=SOURCE)
    details = {c.name: c.detail for c in stats.checks[1:]}
    assert all(c.difference is None for c in stats.checks)
    assert details == {
        CheckName.ERROR_RATE: "no invocations on the challenger",
        CheckName.LATENCY_P50: "no ModelLatency data on the challenger",
        CheckName.LATENCY_P99: "no ModelLatency data on the challenger",
        CheckName.ACCURACY: "no labelled answer yet on the challenger",
        CheckName.LOG_LOSS: "no labelled score yet on the challenger",
        CheckName.PREDICTION_SHIFT: "no published prediction scores on the challenger",
    }
    assert canary_verdict(stats, POLICY, min_requests=200).outcome is Outcome.INCONCLUSIVE


@pytest.mark.parametrize(
    ("score", "expected"), [(0.0, 0), (0.049, 0), (0.05, 1), (0.999, 19), (1.0, 19), (-0.2, 0)]
)
def test_score_bin(score: float, expected: int) -> None:
    assert score_bin(score) == expected


def test_score_histogram_counts_every_score() -> None:
    histogram = score_histogram([0.01, 0.02, 0.5, 1.0, 1.5])
    assert len(histogram) == SHIFT_BINS and sum(histogram) == 5
    assert histogram[0] == 2 and histogram[10] == 1 and histogram[19] == 2
