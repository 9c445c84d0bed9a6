"""The canary analysis' statistics: challenger against champion on one window of live traffic.

`compare` is pure (no I/O, randomness only from `seed`) and vectorised: 100k answers per side
take a few tens of milliseconds. It measures; the verdict (`workflows.rollout.rules.canary_verdict`,
no numpy) applies the policy's tolerances and the significance level to these numbers.

Every check reports `difference` oriented so that positive means the challenger is worse, and
`p_value` of a one-sided test of "the challenger is worse" (prediction shift: of "the variants
predict differently", distance being non-directional); `samples` is the smaller side's count.

- sample_size: requests per side (no test).
- error_rate: errors are calls with status >= 500; pooled two-proportion z-test; difference =
  challenger rate - champion rate.
- latency_p50: Mann-Whitney U (`alternative="greater"`) on successful calls' latencies, i.e.
  challenger latencies stochastically larger; difference = median ratio challenger / champion.
- latency_p99: difference = p99 ratio. p-value from a seeded bootstrap of both p99s,
  (1 + #{resamples where the challenger's p99 is not above the champion's}) / (1 + resamples).
  The bootstrap p99 is drawn exactly and in O(resamples) rather than by resampling rows: the
  k-th smallest of n draws from the empirical distribution is F_n^-1(U_(k)) with U_(k) ~
  Beta(k, n - k + 1), and the next one F_n^-1(U_(k+1)) with U_(k+1) = U_(k) + (1 - U_(k)) x
  Beta(1, n - k); numpy's linear percentile interpolates between the two.
- accuracy (classification): over successful calls with a label; pooled two-proportion z-test
  that the challenger's accuracy is lower; difference = champion - challenger accuracy.
- log_loss (binary scores with labels): per-answer losses (scores clipped to [1e-15, 1 - 1e-15]),
  Welch t-test (`alternative="greater"`); difference = challenger - champion mean loss.
- prediction_shift: Jensen-Shannon distance (base 2, 0..1) between the variants' histograms:
  20 equal bins on [0, 1] of the scores when both sides have scores, else class frequencies
  (classification) or 20 bins at the pooled quantiles (regression). Its p-value is a seeded
  permutation test (the challenger's counts of a random split of the pooled answers follow the
  multivariate hypergeometric law): with 200 answers per side, identical variants already show
  a distance near 0.17 from sampling noise alone, so the distance needs a significance test too.

A check that cannot run (no successful call, no label yet, not a classifier) is listed with
None numbers and a `detail` saying why. The model's task is not part of the request: a model is
taken for a classifier when it reports scores, or when its predictions and labels are all
integers with at most `MAX_CLASSES` distinct values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
import scipy.stats  # type: ignore[import-untyped, unused-ignore]
from scipy.spatial.distance import jensenshannon  # type: ignore[import-untyped, unused-ignore]

from activities.rollout.window import FloatArray, VariantSample
from workflows.rollout.models import (
    CanaryPolicy,
    CanaryStatistics,
    CheckName,
    CheckStatistic,
    VariantSummary,
)

IntArray = npt.NDArray[np.int64]

# 10k draws cost ~1 ms; the smallest p-value they can show is 1e-4.
BOOTSTRAP_RESAMPLES = 10_000
# The permutation test of the shift: at most this many splits (smallest p-value 5e-5) ...
SHIFT_PERMUTATIONS = 20_000
# ... drawn in batches, stopping at this many splits as far apart as observed.
SHIFT_EXCEEDANCES = 20
_SHIFT_BATCH = 1_000
SHIFT_BINS = 20
MAX_CLASSES = 50
LOG_LOSS_CLIP = 1e-15
P99 = 0.99
# Permuted distances within this of the observed one count as equal (float noise).
_DISTANCE_TOLERANCE = 1e-12


@dataclass(frozen=True)
class _Side:
    """What the checks need of one variant, each array sorted so that results depend on the
    sample's contents only, never on its row order (seeded draws included)."""

    name: str
    classification: bool
    requests: int
    errors: int
    latencies: FloatArray  # successful calls, sorted
    labelled: int  # successful calls with a label and a prediction
    correct: int
    losses: FloatArray  # per-answer log loss, sorted (empty unless binary scores + labels)
    scores: FloatArray  # successful calls' scores, sorted
    predictions: FloatArray  # successful calls' predictions, sorted

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.classification and self.labelled else None


def compare(
    champion: VariantSample,
    challenger: VariantSample,
    policy: CanaryPolicy,
    *,
    seed: int,
    shadow: bool = False,
    champion_name: str = "champion",
    challenger_name: str = "challenger",
) -> CanaryStatistics:
    """Every check's numbers for `challenger` against `champion`.

    `policy` is not applied here (the verdict does that); it is taken so that callers state
    which policy the numbers are for. Deterministic for a given seed and the samples' contents.
    """
    del policy  # the tolerances belong to the verdict
    rng = np.random.default_rng(seed)
    classification = _is_classification(champion, challenger)
    positive = _positive_class(champion, challenger) if classification else None
    champ = _side(champion_name, champion, classification, positive)
    chal = _side(challenger_name, challenger, classification, positive)
    checks = [
        _sample_size(champ, chal),
        error_rate_check(champ, chal),
        _latency_p50(champ, chal),
        _latency_p99(champ, chal, rng),
        _accuracy(champ, chal, classification),
        _log_loss(champ, chal, classification, positive),
        _prediction_shift(champ, chal, classification, rng),
    ]
    return CanaryStatistics(
        champion=_summary(champ),
        challenger=_summary(chal),
        checks=checks,
        shadow=shadow,
    )


# ---- preparing the sides -------------------------------------------------------------------


def _is_classification(*samples: VariantSample) -> bool:
    if any(np.isfinite(sample.score).any() for sample in samples):
        return True
    values = np.concatenate([column for s in samples for column in (s.prediction, s.label)])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return False
    return bool(np.all(values == np.round(values))) and np.unique(values).size <= MAX_CLASSES


def _positive_class(*samples: VariantSample) -> float | None:
    """The label a score is the probability of: 1 for 0/1 labels, else the larger of exactly
    two labels (scikit-learn's positive class); None when that cannot be told."""
    labels = np.concatenate([s.label[np.isfinite(s.label)] for s in samples])
    classes = np.unique(labels)
    if classes.size == 0 or np.isin(classes, (0.0, 1.0)).all():
        return 1.0
    if classes.size == 2:
        return float(classes[1])
    return None


def _side(name: str, sample: VariantSample, classification: bool, positive: float | None) -> _Side:
    ok = sample.ok
    has_label = ok & np.isfinite(sample.label)
    labelled = has_label & np.isfinite(sample.prediction)
    correct = int(np.count_nonzero(sample.prediction[labelled] == sample.label[labelled]))
    scored = has_label & np.isfinite(sample.score) & (sample.score >= 0) & (sample.score <= 1)
    losses = np.empty(0)
    if classification and positive is not None:
        truth = sample.label[scored] == positive
        probability = np.clip(sample.score[scored], LOG_LOSS_CLIP, 1 - LOG_LOSS_CLIP)
        losses = -np.where(truth, np.log(probability), np.log1p(-probability))
    return _Side(
        name=name,
        classification=classification,
        requests=sample.size,
        errors=int(np.count_nonzero(~ok)),
        latencies=_sorted(sample.latency_ms[ok]),
        labelled=int(np.count_nonzero(labelled)),
        correct=correct,
        losses=_sorted(losses),
        scores=_sorted(sample.score[ok]),
        predictions=_sorted(sample.prediction[ok]),
    )


def _sorted(values: FloatArray) -> FloatArray:
    finite: FloatArray = np.sort(values[np.isfinite(values)])
    return finite


def _summary(side: _Side) -> VariantSummary:
    central = side.scores if side.scores.size else side.predictions
    return VariantSummary(
        variant=side.name,
        requests=side.requests,
        errors=side.errors,
        error_rate=side.error_rate,
        latency_p50_ms=_quantile(side.latencies, 0.5),
        latency_p99_ms=_quantile(side.latencies, P99),
        labelled=side.labelled,
        accuracy=side.accuracy,
        log_loss=_mean(side.losses),
        mean_prediction=_mean(central),
    )


def _quantile(values: FloatArray, q: float) -> float | None:
    return _finite(float(np.percentile(values, q * 100))) if values.size else None


def _mean(values: FloatArray) -> float | None:
    return _finite(float(np.mean(values))) if values.size else None


def _finite(value: float | None) -> float | None:
    """The messages refuse NaN and infinities: such a number is reported as missing."""
    return value if value is not None and math.isfinite(value) else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None:
        return None
    if denominator <= 0:
        return 1.0 if numerator <= 0 else None
    return _finite(numerator / denominator)


# ---- the checks ----------------------------------------------------------------------------


def _sample_size(champ: _Side, chal: _Side) -> CheckStatistic:
    return CheckStatistic(
        name=CheckName.SAMPLE_SIZE,
        champion=champ.requests,
        challenger=chal.requests,
        samples=min(champ.requests, chal.requests),
        detail=f"{chal.requests} requests on the challenger, {champ.requests} on the champion",
    )


def greater_proportion_p(x1: int, n1: int, x2: int, n2: int) -> float:
    """One-sided p-value of the pooled two-proportion z-test of x1/n1 > x2/n2."""
    pooled = (x1 + x2) / (n1 + n2)
    variance = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if variance <= 0:  # no event (or only events) on both sides: equal proportions
        return 1.0
    z = (x1 / n1 - x2 / n2) / math.sqrt(variance)
    return float(scipy.stats.norm.sf(z))


class Counted(Protocol):
    """A variant's requests and the errors among them (from its rows, or a metrics store)."""

    @property
    def requests(self) -> int: ...
    @property
    def errors(self) -> int: ...
    @property
    def error_rate(self) -> float: ...


def error_rate_check(
    champ: Counted, chal: Counted, requests: str = "requests", errors: str = "errors"
) -> CheckStatistic:
    """The challenger's error rate against the champion's; `requests` and `errors` name what
    was counted (a metrics store's own names)."""
    name = CheckName.ERROR_RATE
    if not (champ.requests and chal.requests):
        return CheckStatistic(
            name=name, detail=missing_detail(f"no {requests}", chal.requests, champ.requests)
        )
    return CheckStatistic(
        name=name,
        champion=champ.error_rate,
        challenger=chal.error_rate,
        difference=chal.error_rate - champ.error_rate,
        p_value=greater_proportion_p(chal.errors, chal.requests, champ.errors, champ.requests),
        samples=min(champ.requests, chal.requests),
        detail=(
            f"{chal.errors} {errors} in {chal.requests} {requests} on the challenger "
            f"({chal.error_rate:.2%}), {champ.errors} in {champ.requests} on the champion "
            f"({champ.error_rate:.2%}); pooled two-proportion z-test, one-sided"
        ),
    )


def missing_detail(what: str, challenger_count: int, champion_count: int) -> str:
    """Why a check could not run: `what` is lacking on the side(s) whose count is 0."""
    sides = [
        role
        for role, count in (("challenger", challenger_count), ("champion", champion_count))
        if count == 0
    ]
    return f"{what} on the {' and the '.join(sides) or 'either side'}"


def _latency_p50(champ: _Side, chal: _Side) -> CheckStatistic:
    name = CheckName.LATENCY_P50
    if not (champ.latencies.size and chal.latencies.size):
        detail = missing_detail("no successful call", chal.latencies.size, champ.latencies.size)
        return CheckStatistic(name=name, detail=detail)
    p50_champ = _quantile(champ.latencies, 0.5)
    p50_chal = _quantile(chal.latencies, 0.5)
    result = scipy.stats.mannwhitneyu(chal.latencies, champ.latencies, alternative="greater")
    # All latencies tied: no evidence either way.
    p_value = _finite(float(result.pvalue))
    return CheckStatistic(
        name=name,
        champion=p50_champ,
        challenger=p50_chal,
        difference=ratio(p50_chal, p50_champ),
        p_value=1.0 if p_value is None else p_value,
        samples=min(champ.latencies.size, chal.latencies.size),
        detail=(
            f"median latency {_ms(p50_chal)} on the challenger over {chal.latencies.size} "
            f"successful calls, {_ms(p50_champ)} on the champion over {champ.latencies.size}; "
            "Mann-Whitney U, one-sided (challenger slower)"
        ),
    )


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g} ms"


def bootstrap_quantile(
    sorted_values: FloatArray, q: float, resamples: int, rng: np.random.Generator
) -> FloatArray:
    """`resamples` draws of the bootstrap distribution of numpy's (linear) q-quantile of
    `sorted_values`, exactly as resampling rows would give, in O(resamples): see the module
    docstring for the order-statistic identity."""
    n = sorted_values.size
    position = (n - 1) * q
    lower = math.floor(position)
    fraction = position - lower
    k = lower + 1  # 1-based rank of the lower order statistic

    def inverse_cdf(u: FloatArray) -> FloatArray:
        index = np.clip(np.ceil(n * u).astype(np.int64) - 1, 0, n - 1)
        values: FloatArray = sorted_values[index]
        return values

    u_k = rng.beta(k, n - k + 1, size=resamples)
    quantiles = inverse_cdf(u_k)
    if fraction > 0 and k < n:
        u_next = u_k + (1 - u_k) * rng.beta(1, n - k, size=resamples)
        quantiles = quantiles + fraction * (inverse_cdf(u_next) - quantiles)
    return quantiles


def _latency_p99(champ: _Side, chal: _Side, rng: np.random.Generator) -> CheckStatistic:
    name = CheckName.LATENCY_P99
    if not (champ.latencies.size and chal.latencies.size):
        detail = missing_detail("no successful call", chal.latencies.size, champ.latencies.size)
        return CheckStatistic(name=name, detail=detail)
    p99_champ = _quantile(champ.latencies, P99)
    p99_chal = _quantile(chal.latencies, P99)
    boot_chal = bootstrap_quantile(chal.latencies, P99, BOOTSTRAP_RESAMPLES, rng)
    boot_champ = bootstrap_quantile(champ.latencies, P99, BOOTSTRAP_RESAMPLES, rng)
    not_above = int(np.count_nonzero(boot_chal <= boot_champ))
    return CheckStatistic(
        name=name,
        champion=p99_champ,
        challenger=p99_chal,
        difference=ratio(p99_chal, p99_champ),
        p_value=(not_above + 1) / (BOOTSTRAP_RESAMPLES + 1),
        samples=min(champ.latencies.size, chal.latencies.size),
        detail=(
            f"p99 latency {_ms(p99_chal)} on the challenger over {chal.latencies.size} "
            f"successful calls, {_ms(p99_champ)} on the champion over {champ.latencies.size}; "
            f"bootstrap ({BOOTSTRAP_RESAMPLES} resamples): the challenger's p99 was not above "
            f"the champion's in {not_above}"
        ),
    )


def _accuracy(champ: _Side, chal: _Side, classification: bool) -> CheckStatistic:
    name = CheckName.ACCURACY
    if not classification:
        detail = "not a classifier (no scores, non-integer predictions): accuracy does not apply"
        return CheckStatistic(name=name, detail=detail)
    acc_champ, acc_chal = champ.accuracy, chal.accuracy
    if acc_champ is None or acc_chal is None:
        detail = missing_detail("no labelled successful call yet", chal.labelled, champ.labelled)
        return CheckStatistic(name=name, detail=detail)
    return CheckStatistic(
        name=name,
        champion=acc_champ,
        challenger=acc_chal,
        difference=acc_champ - acc_chal,
        p_value=greater_proportion_p(champ.correct, champ.labelled, chal.correct, chal.labelled),
        p_better=greater_proportion_p(chal.correct, chal.labelled, champ.correct, champ.labelled),
        samples=min(champ.labelled, chal.labelled),
        detail=(
            f"{chal.correct} of {chal.labelled} labelled answers right on the challenger "
            f"({acc_chal:.2%}), {champ.correct} of {champ.labelled} on the champion "
            f"({acc_champ:.2%}); pooled two-proportion z-test, one-sided"
        ),
    )


def _log_loss(
    champ: _Side, chal: _Side, classification: bool, positive: float | None
) -> CheckStatistic:
    name = CheckName.LOG_LOSS
    if not classification:
        detail = "not a classifier: log loss does not apply"
        return CheckStatistic(name=name, detail=detail)
    if positive is None:
        detail = "the labels are not binary: log loss of the positive-class score does not apply"
        return CheckStatistic(name=name, detail=detail)
    if not (champ.losses.size and chal.losses.size):
        what = "no labelled answer with a score in [0, 1]"
        detail = missing_detail(what, chal.losses.size, champ.losses.size)
        return CheckStatistic(name=name, detail=detail)
    loss_champ = float(np.mean(champ.losses))
    loss_chal = float(np.mean(chal.losses))
    p_value: float | None = None
    p_better: float | None = None
    if champ.losses.size >= 2 and chal.losses.size >= 2:
        result = scipy.stats.ttest_ind(
            chal.losses, champ.losses, equal_var=False, alternative="greater"
        )
        p_value = _finite(float(result.pvalue))
        lower = scipy.stats.ttest_ind(
            chal.losses, champ.losses, equal_var=False, alternative="less"
        )
        p_better = _finite(float(lower.pvalue))
    if p_value is None:
        # One answer a side, or no spread on either: the means are compared as they are.
        p_value = 0.0 if loss_chal > loss_champ else 1.0
        p_better = 0.0 if loss_chal < loss_champ else 1.0
    return CheckStatistic(
        name=name,
        champion=loss_champ,
        challenger=loss_chal,
        difference=loss_chal - loss_champ,
        p_value=p_value,
        p_better=p_better,
        samples=min(champ.losses.size, chal.losses.size),
        detail=(
            f"mean log loss {loss_chal:.4f} over {chal.losses.size} labelled answers on the "
            f"challenger, {loss_champ:.4f} over {champ.losses.size} on the champion; Welch "
            "t-test, one-sided"
        ),
    )


def _prediction_shift(
    champ: _Side, chal: _Side, classification: bool, rng: np.random.Generator
) -> CheckStatistic:
    name = CheckName.PREDICTION_SHIFT
    scored = bool(champ.scores.size and chal.scores.size)
    champ_values = champ.scores if scored else champ.predictions
    chal_values = chal.scores if scored else chal.predictions
    if not (champ_values.size and chal_values.size):
        what = "no successful answer with a prediction"
        detail = missing_detail(what, chal_values.size, champ_values.size)
        return CheckStatistic(name=name, detail=detail)
    pooled = np.concatenate([champ_values, chal_values])
    if scored:
        what = f"scores ({SHIFT_BINS} equal bins on [0, 1])"
        edges = np.linspace(0, 1, SHIFT_BINS + 1)[1:-1]
    elif classification:
        what = "predicted class frequencies"
        # Edges halfway between consecutive classes: one bin per class.
        classes = np.unique(pooled)
        edges = (classes[1:] + classes[:-1]) / 2
    else:
        what = f"predictions ({SHIFT_BINS} bins at the pooled quantiles)"
        edges = np.unique(np.quantile(pooled, np.linspace(0, 1, SHIFT_BINS + 1)[1:-1]))
    bins = edges.size + 1
    champ_counts = np.bincount(np.searchsorted(edges, champ_values, side="right"), minlength=bins)
    chal_counts = np.bincount(np.searchsorted(edges, chal_values, side="right"), minlength=bins)
    distance = float(jensenshannon(chal_counts, champ_counts, base=2))
    p_value = _permutation_p(champ_counts, chal_counts, distance, rng)
    return CheckStatistic(
        name=name,
        champion=_mean(champ_values),
        challenger=_mean(chal_values),
        difference=_finite(distance),
        p_value=p_value,
        samples=min(champ_values.size, chal_values.size),
        detail=(
            f"Jensen-Shannon distance {distance:.4f} (base 2) between the {what} of "
            f"{chal_values.size} challenger and {champ_values.size} champion answers; "
            "permutation test"
        ),
    )


def _permutation_p(
    champ_counts: IntArray, chal_counts: IntArray, distance: float, rng: np.random.Generator
) -> float:
    """Monte Carlo p-value of the distance: the share of random splits of the pooled answers at
    least as far apart as observed, with Besag & Clifford's sequential stopping (1991): drawing
    stops at the `SHIFT_EXCEEDANCES`-th split that far apart (p = exceedances / splits drawn),
    else after `SHIFT_PERMUTATIONS` splits (p = (exceedances + 1) / (splits + 1)). Unremarkable
    distances are settled in one batch; small p-values get the full resolution."""
    pooled = (champ_counts + chal_counts).astype(np.int64)
    pooled = pooled[pooled > 0]
    if pooled.size < 2:  # one bin: nothing can differ
        return 1.0
    drawn = exceedances = 0
    while drawn < SHIFT_PERMUTATIONS:
        split = rng.multivariate_hypergeometric(pooled, int(chal_counts.sum()), _SHIFT_BATCH)
        distances = jensenshannon(split, pooled - split, base=2, axis=1)
        hits = np.flatnonzero(distances >= distance - _DISTANCE_TOLERANCE)
        if exceedances + hits.size >= SHIFT_EXCEEDANCES:
            stop = drawn + int(hits[SHIFT_EXCEEDANCES - exceedances - 1]) + 1
            return SHIFT_EXCEEDANCES / stop
        exceedances += hits.size
        drawn += _SHIFT_BATCH
    return (exceedances + 1) / (drawn + 1)
