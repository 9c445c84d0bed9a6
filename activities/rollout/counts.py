"""The canary's statistics from per-variant aggregate counts, for metrics stores without rows.

CloudWatch (SageMaker) and Cloud Monitoring (Vertex) keep sums per variant and window, not one
row per request, so `activities.rollout.statistics.compare` cannot run on them. A backend reads
its metrics into one `VariantCounts` per variant and `count_statistics` (pure) turns two of them
into the same `CanaryStatistics`, with the same orientation of every check (positive
`difference` = challenger worse, one-sided p-values), for `workflows.rollout.rules.canary_verdict`:

- sample_size: requests per side (no test).
- error_rate and accuracy: the pooled two-proportion z-test of `canary_statistics`.
- latency_p50 / latency_p99: the ratio challenger / champion without a p-value: the store keeps
  no per-request latencies, so no rank or bootstrap test can run (the verdict then fails on the
  ratio alone, given enough calls). Where a store returned no percentile, the mean latency
  stands in when the backend has one, and the detail says so.
- log_loss: Welch's t-test from each side's count, sum and sum of squares of the losses.
- prediction_shift: the Jensen-Shannon distance (base 2) of the `SHIFT_BINS`-bin histograms of
  the positive-class score, with a chi-square test of homogeneity of the 2 x bins table for its
  p-value (the local backend's permutation test needs the rows).

A check that cannot run is listed with None numbers and a `detail` saying which side lacks what.

`with_captured_quality` combines these with the rows of the endpoint's capture: a cloud canary
measures traffic, errors and latency from the store and labelled quality from its captured
answers and ground truth, so it decides without any feedback job of the user's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import scipy.stats  # type: ignore[import-untyped, unused-ignore]
from scipy.spatial.distance import jensenshannon  # type: ignore[import-untyped, unused-ignore]

from activities.ports import MetricSource
from activities.rollout.statistics import (
    SHIFT_BINS,
    error_rate_check,
    greater_proportion_p,
    missing_detail,
    ratio,
)
from workflows.rollout.models import CanaryStatistics, CheckName, CheckStatistic, VariantSummary


@dataclass(frozen=True)
class VariantCounts:
    """One variant's window, as a metrics store sums it."""

    variant: str
    requests: int
    errors: int  # failed calls the error rate counts (the model's fault)
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    labelled: int
    correct: int
    losses: int  # labelled scores with a log loss
    loss_sum: float
    loss_squared_sum: float
    bins: tuple[int, ...]  # SHIFT_BINS counts of the positive-class score (`score_histogram`)
    latency_mean_ms: float | None = None  # stands in for a percentile the store lacks
    client_errors: int = 0  # the callers' fault: neither errors nor successful calls

    @property
    def successful(self) -> int:
        return max(0, self.requests - self.errors - self.client_errors)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None

    @property
    def log_loss(self) -> float | None:
        return self.loss_sum / self.losses if self.losses else None

    @property
    def loss_std(self) -> float:
        """Sample standard deviation of the losses, from their sum and sum of squares."""
        if self.losses < 2:
            return 0.0
        variance = (self.loss_squared_sum - self.loss_sum**2 / self.losses) / (self.losses - 1)
        return math.sqrt(max(0.0, variance))

    @property
    def mean_score(self) -> float | None:
        """The mean score, each counted at its bin's centre."""
        total = sum(self.bins)
        if not total:
            return None
        return sum((i + 0.5) / SHIFT_BINS * n for i, n in enumerate(self.bins)) / total


def score_bin(score: float) -> int:
    """The histogram bin of a score in [0, 1] (out-of-range scores go to the end bins)."""
    return min(SHIFT_BINS - 1, max(0, int(score * SHIFT_BINS)))


def score_histogram(scores: Iterable[float]) -> list[int]:
    """The `SHIFT_BINS` counts a feedback joiner publishes for a batch of scores."""
    bins = [0] * SHIFT_BINS
    for score in scores:
        bins[score_bin(score)] += 1
    return bins


def count_statistics(
    champion: VariantCounts, challenger: VariantCounts, *, shadow: bool, source: MetricSource
) -> CanaryStatistics:
    """Every check's numbers for `challenger` against `champion` (the verdict applies policy)."""
    champ, chal = champion, challenger
    return CanaryStatistics(
        champion=_summary(champ),
        challenger=_summary(chal),
        checks=[
            CheckStatistic(
                name=CheckName.SAMPLE_SIZE,
                champion=champ.requests,
                challenger=chal.requests,
                samples=min(champ.requests, chal.requests),
                detail=(
                    f"{chal.requests} {source.requests} on the challenger, {champ.requests} on "
                    "the champion"
                ),
            ),
            error_rate_check(champ, chal, source.requests, source.errors),
            _latency(
                CheckName.LATENCY_P50,
                champ.latency_p50_ms,
                chal.latency_p50_ms,
                champ,
                chal,
                source,
            ),
            _latency(
                CheckName.LATENCY_P99,
                champ.latency_p99_ms,
                chal.latency_p99_ms,
                champ,
                chal,
                source,
            ),
            _accuracy(champ, chal),
            _log_loss(champ, chal),
            _prediction_shift(champ, chal),
        ],
        shadow=shadow,
    )


def _summary(side: VariantCounts) -> VariantSummary:
    return VariantSummary(
        variant=side.variant,
        requests=side.requests,
        errors=side.errors,
        error_rate=side.error_rate,
        latency_p50_ms=side.latency_p50_ms,
        latency_p99_ms=side.latency_p99_ms,
        labelled=side.labelled,
        accuracy=side.accuracy,
        log_loss=side.log_loss,
        mean_prediction=side.mean_score,
    )


def _latency(
    name: CheckName,
    champ_percentile: float | None,
    chal_percentile: float | None,
    champ: VariantCounts,
    chal: VariantCounts,
    source: MetricSource,
) -> CheckStatistic:
    label = "p50" if name is CheckName.LATENCY_P50 else "p99"
    champ_value, chal_value = champ_percentile, chal_percentile
    measure = f"{source.store} {label} of {source.latency}"
    if champ_value is None or chal_value is None:
        champ_value, chal_value = champ.latency_mean_ms, chal.latency_mean_ms
        measure = f"mean {source.latency} ({source.store} returned no {label})"
    if champ_value is None or chal_value is None:
        detail = missing_detail(
            f"no {source.latency} data",
            chal_percentile is not None or chal.latency_mean_ms is not None,
            champ_percentile is not None or champ.latency_mean_ms is not None,
        )
        return CheckStatistic(name=name, detail=detail)
    return CheckStatistic(
        name=name,
        champion=champ_value,
        challenger=chal_value,
        difference=ratio(chal_value, champ_value),
        p_value=None,
        samples=min(champ.successful, chal.successful),
        detail=(
            f"{measure}: {chal_value:.4g} ms on the challenger, {champ_value:.4g} ms on the "
            f"champion; no p-value: {source.store} keeps no per-request latencies to test on"
        ),
    )


def _accuracy(champ: VariantCounts, chal: VariantCounts) -> CheckStatistic:
    name = CheckName.ACCURACY
    acc_champ, acc_chal = champ.accuracy, chal.accuracy
    if acc_champ is None or acc_chal is None:
        detail = missing_detail("no labelled answer yet", chal.labelled, champ.labelled)
        return CheckStatistic(name=name, detail=detail)
    return CheckStatistic(
        name=name,
        champion=acc_champ,
        challenger=acc_chal,
        difference=acc_champ - acc_chal,
        p_value=greater_proportion_p(champ.correct, champ.labelled, chal.correct, chal.labelled),
        samples=min(champ.labelled, chal.labelled),
        detail=(
            f"{chal.correct} of {chal.labelled} labelled answers right on the challenger "
            f"({acc_chal:.2%}), {champ.correct} of {champ.labelled} on the champion "
            f"({acc_champ:.2%}); pooled two-proportion z-test, one-sided"
        ),
    )


def _log_loss(champ: VariantCounts, chal: VariantCounts) -> CheckStatistic:
    name = CheckName.LOG_LOSS
    loss_champ, loss_chal = champ.log_loss, chal.log_loss
    if loss_champ is None or loss_chal is None:
        detail = missing_detail("no labelled score yet", chal.losses, champ.losses)
        return CheckStatistic(name=name, detail=detail)
    p_value: float | None = None
    if champ.losses >= 2 and chal.losses >= 2 and (champ.loss_std > 0 or chal.loss_std > 0):
        result = scipy.stats.ttest_ind_from_stats(
            loss_chal,
            chal.loss_std,
            chal.losses,
            loss_champ,
            champ.loss_std,
            champ.losses,
            equal_var=False,
            alternative="greater",
        )
        p_value = float(result.pvalue) if math.isfinite(result.pvalue) else None
    if p_value is None:
        # One loss a side, or no spread: the means are compared as they are.
        p_value = 0.0 if loss_chal > loss_champ else 1.0
    return CheckStatistic(
        name=name,
        champion=loss_champ,
        challenger=loss_chal,
        difference=loss_chal - loss_champ,
        p_value=p_value,
        samples=min(champ.losses, chal.losses),
        detail=(
            f"mean log loss {loss_chal:.4f} over {chal.losses} labelled scores on the challenger, "
            f"{loss_champ:.4f} over {champ.losses} on the champion; Welch t-test from the sums, "
            "one-sided"
        ),
    )


def _prediction_shift(champ: VariantCounts, chal: VariantCounts) -> CheckStatistic:
    name = CheckName.PREDICTION_SHIFT
    champ_total, chal_total = sum(champ.bins), sum(chal.bins)
    if not (champ_total and chal_total):
        detail = missing_detail("no published prediction scores", chal_total, champ_total)
        return CheckStatistic(name=name, detail=detail)
    table = np.array([chal.bins, champ.bins], dtype=np.float64)
    distance = float(jensenshannon(table[0], table[1], base=2))
    occupied = table[:, table.sum(axis=0) > 0]
    p_value = 1.0  # one occupied bin: nothing can differ
    if occupied.shape[1] >= 2:
        p_value = float(scipy.stats.chi2_contingency(occupied, correction=False).pvalue)
    return CheckStatistic(
        name=name,
        champion=champ.mean_score,
        challenger=chal.mean_score,
        difference=distance if math.isfinite(distance) else None,
        p_value=p_value,
        samples=min(champ_total, chal_total),
        detail=(
            f"Jensen-Shannon distance {distance:.4f} (base 2) between the score histograms "
            f"({SHIFT_BINS} equal bins on [0, 1]) of {chal_total} challenger and {champ_total} "
            "champion predictions; chi-square test of homogeneity"
        ),
    )


# Checks the rows of captured traffic measure better than a metrics store's sums: labelled
# quality and the prediction distribution (with their permutation and per-answer tests).
CAPTURED_CHECKS = frozenset({CheckName.ACCURACY, CheckName.LOG_LOSS, CheckName.PREDICTION_SHIFT})


def with_captured_quality(
    counted: CanaryStatistics, captured: CanaryStatistics
) -> CanaryStatistics:
    """A cloud canary's numbers: traffic, errors and latency from the metrics store (every
    request, including the failed ones a capture never holds), labelled quality and the
    prediction shift from the captured answers joined with their ground truth
    (`activities.rollout.statistics.compare` on the capture's rows). A quality check the capture
    could not run (no captured answer yet) keeps the store's numbers, e.g. those a feedback job
    published with `publish_quality`."""
    from_capture = {
        check.name: check
        for check in captured.checks
        if check.name in CAPTURED_CHECKS and check.samples > 0
    }
    checks = [from_capture.get(check.name, check) for check in counted.checks]

    def side(store: VariantSummary, rows: VariantSummary) -> VariantSummary:
        if not from_capture:
            return store
        return store.model_copy(
            update={
                "labelled": rows.labelled,
                "accuracy": rows.accuracy,
                "log_loss": rows.log_loss,
                "mean_prediction": rows.mean_prediction,
            }
        )

    return CanaryStatistics(
        champion=side(counted.champion, captured.champion),
        challenger=side(counted.challenger, captured.challenger),
        checks=checks,
        shadow=counted.shadow,
    )
