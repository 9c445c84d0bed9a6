"""The RetrainingLoop's gate: guardrails and the improvement rule, as pure functions.

Runs inside the workflow sandbox: stdlib `math` and our pydantic models only (no numpy, no I/O).
The numbers come from the evaluation activity's `EvaluationReport`; the policy from the spec.

Guardrails, each a `SafetyCheck` carrying every number behind its verdict:

- `golden_floor`: the candidate's golden-set metric meets the floor (a ceiling for metrics where
  lower is better).
- `baseline_drift`: |candidate - champion| of the baseline metric on the baseline set stays within
  `max_baseline_drift`.
- `prediction_shift`: KL(candidate || champion) of the holdout prediction histograms stays within
  `max_prediction_kl`.
- `error_concentration`: the largest share of the candidate's holdout errors in one segment (or
  error type) stays within `max_error_concentration`.

Loops that answer a change add to these (`GateContext`):

- after a regime change (the window starts at a change point) `baseline_drift`'s limit grows by
  `regime_gap`: how far the champion falls between the old regime (the baseline set) and the
  new one, plus how much more of the new one the candidate knows (a model of the new concept
  is expected to lose on the old data about what it gains on the new);
- `quality_improvement`, when a performance trigger found a metric degraded: the candidate must
  improve it significantly (the low end of the paired-bootstrap interval of the delta above 0)
  on the new regime's labelled data (replayed live traffic when there is enough, else the
  window's holdout after a change, else its recent slice); when it does, a prediction shift
  beyond its limit is explained (the canary rule, offline).

Every loop's candidate must also not be *significantly* worse than the champion on the most
recent labelled data (`recent`) or on replayed live traffic (`replay`).

A passed check whose headroom to its limit is at most `near_miss_margin` x |limit| is a near
miss. The checks and the verdict are total: non-finite numbers, missing metrics and empty
histograms give a failed check (or a regression) with a sentence saying why, never an exception.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from workflows.loop.models import EvaluationReport, GateVerdict, SafetyCheck, TriggerContext
from workflows.spec.models import EvaluationPolicy, GuardrailPolicy, Metric, ModelSpec, Task

# Dataset names: keys of `EvaluationReport.candidate`, `.champion`, `.rows`; `MetricDelta.dataset`.
HOLDOUT = "holdout"
BASELINE = "baseline"
GOLDEN = "golden"
# The newest part of the holdout (by the timestamp column): the most recent labelled data the
# candidate never trained on; and captured live traffic replayed with its feedback labels.
RECENT = "recent"
REPLAY = "replay"

GOLDEN_FLOOR = "golden_floor"
BASELINE_DRIFT = "baseline_drift"
PREDICTION_SHIFT = "prediction_shift"
ERROR_CONCENTRATION = "error_concentration"

DEFAULT_KL_EPSILON = 1e-6
SUMMARY_MAX_CHARS = 4000


# ---- statistics ----------------------------------------------------------------------------


def kl_divergence(
    p_counts: Sequence[float], q_counts: Sequence[float], epsilon: float = DEFAULT_KL_EPSILON
) -> float:
    """KL(p || q) in nats between two histograms over the same bins.

    p is the candidate's histogram and q the champion's (as the error messages say). Counts are
    normalised; empty bins get probability `epsilon` (then both are renormalised), so a bin the
    champion never used gives a large but finite divergence.
    Raises ValueError when the histograms differ in length, are empty, hold no observations, or
    hold negative or non-finite counts.
    """
    if len(p_counts) != len(q_counts):
        raise ValueError(f"the histograms have {len(p_counts)} and {len(q_counts)} bins")
    if not (math.isfinite(epsilon) and 0 < epsilon < 1):
        raise ValueError(f"epsilon must lie in (0, 1), not {epsilon}")
    p = _smoothed_distribution(p_counts, epsilon, "candidate")
    q = _smoothed_distribution(q_counts, epsilon, "champion")
    divergence = math.fsum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    # Gibbs' inequality makes it >= 0; rounding can leave a tiny negative.
    return max(0.0, divergence)


def _smoothed_distribution(counts: Sequence[float], epsilon: float, which: str) -> list[float]:
    if not counts:
        raise ValueError(f"the {which} histogram has no bins")
    if not all(math.isfinite(count) and count >= 0 for count in counts):
        raise ValueError(f"the {which} histogram has negative or non-finite counts")
    largest = max(counts)
    if largest == 0:
        raise ValueError(f"the {which} histogram holds no observations")
    # Scaling by the largest count first keeps the sum from overflowing.
    scaled = [count / largest for count in counts]
    total = math.fsum(scaled)
    smoothed = [share / total if share > 0 else epsilon for share in scaled]
    norm = math.fsum(smoothed)
    return [share / norm for share in smoothed]


def error_concentration(errors_by_segment: Mapping[str, int]) -> tuple[str, float]:
    """The segment holding the most errors and its share of all errors, in [0, 1].

    Ties go to the alphabetically first segment; with no errors at all the answer is ("", 0.0).
    Raises ValueError on a negative count.
    """
    if any(count < 0 for count in errors_by_segment.values()):
        raise ValueError("error counts cannot be negative")
    total = sum(errors_by_segment.values())
    if total == 0:
        return "", 0.0
    segment, count = min(errors_by_segment.items(), key=lambda item: (-item[1], item[0]))
    return segment, count / total


# ---- guardrails ----------------------------------------------------------------------------


class _Bound(NamedTuple):
    passed: bool
    near_miss: bool
    numbers: dict[str, float]


def _bound(value: float, limit: float, *, ceiling: bool, near_miss_margin: float) -> _Bound:
    """Verdict of `value <= limit` (ceiling) or `value >= limit` (floor), for finite numbers."""
    headroom = limit - value if ceiling else value - limit
    band = near_miss_margin * abs(limit)
    passed = value <= limit if ceiling else value >= limit
    numbers = {
        "value": value,
        "limit": limit,
        "headroom": headroom,
        "near_miss_band": band,
        "near_miss_margin": near_miss_margin,
    }
    return _Bound(passed, passed and headroom <= band, numbers)


def _safety_check(
    name: str, passed: bool, numbers: Mapping[str, float], detail: str, *, near_miss: bool = False
) -> SafetyCheck:
    # The report model refuses NaN and infinities: keep only the finite numbers (the detail
    # names any that were not).
    finite = {key: value for key, value in numbers.items() if math.isfinite(value)}
    if near_miss:
        detail += (
            f" Near miss: {numbers['headroom']:.4g} from the limit, within the near-miss band "
            f"{numbers['near_miss_band']:.4g}."
        )
    return SafetyCheck(
        name=name, passed=passed, numbers=finite, near_miss=passed and near_miss, detail=detail
    )


def _non_finite(**numbers: float) -> str | None:
    """A sentence naming the first non-finite number, or None when all are finite."""
    for name, value in numbers.items():
        if not math.isfinite(value):
            return f"{name.replace('_', ' ')} is not a finite number ({value})"
    return None


def _metric(
    report_side: Mapping[str, Mapping[str, float]] | None, dataset: str, metric: str
) -> float | None:
    if report_side is None:
        return None
    return report_side.get(dataset, {}).get(metric)


def check_golden_floor(report: EvaluationReport, policy: GuardrailPolicy) -> SafetyCheck:
    """The candidate's `golden_metric` on the golden set meets `golden_floor`.

    For metrics where lower is better (log loss, RMSE, MAE) the floor is a ceiling.
    """
    metric = policy.golden_metric
    ceiling = not metric.higher_is_better
    kind = "ceiling" if ceiling else "floor"
    subject = f"The candidate's golden-set {metric.value}"
    numbers = {"limit": policy.golden_floor}
    value = _metric(report.candidate, GOLDEN, metric.value)
    if value is None:
        detail = f"The report has no golden-set {metric.value} for the candidate."
        return _safety_check(GOLDEN_FLOOR, False, numbers, detail)
    if problem := _non_finite(**{metric.value: value, kind: policy.golden_floor}):
        return _safety_check(GOLDEN_FLOOR, False, numbers, f"{subject}: {problem}.")
    bound = _bound(
        value, policy.golden_floor, ceiling=ceiling, near_miss_margin=policy.near_miss_margin
    )
    if ceiling:
        relation = "is within" if bound.passed else "is above"
        detail = f"{subject} {value:.4g} {relation} the ceiling {policy.golden_floor:.4g}"
        detail += " (lower is better)."
    else:
        relation = "meets" if bound.passed else "is below"
        detail = f"{subject} {value:.4g} {relation} the floor {policy.golden_floor:.4g}."
    return _safety_check(
        GOLDEN_FLOOR, bound.passed, bound.numbers, detail, near_miss=bound.near_miss
    )


def _new_regime(side: Mapping[str, Mapping[str, float]], metric: str) -> float | None:
    """A model's metric on the new regime's data: replayed traffic, else the recent slice, else
    the holdout (of a window that starts at the change)."""
    for dataset in (REPLAY, RECENT, HOLDOUT):
        value = _metric(side, dataset, metric)
        if value is not None and math.isfinite(value):
            return value
    return None


def regime_gap(report: EvaluationReport, metric: str) -> float | None:
    """What a model of the new regime may lose on the old one (the baseline set): how far the
    champion falls between the regimes, |champion(baseline) - champion(new)|, plus how much
    more of the new regime the candidate knows, max(0, candidate(new) - champion(new)).

    For a perfect model of each concept that disagree on a share d of the rows, the champion
    falls by d and the candidate gains d: the allowance 2d covers the candidate's loss d with
    room for imperfect models (a champion that had partly learned the change falls less, a
    candidate trained on little new data gains less). A candidate that moves on the old data
    without a matching gain on the new still fails. None when not measured."""
    champion, candidate = report.champion, report.candidate
    if champion is None:
        return None
    old = _metric(champion, BASELINE, metric)
    new = _new_regime(champion, metric)
    learned = _new_regime(candidate, metric)
    if old is None or new is None or learned is None or not math.isfinite(old):
        return None
    gain = learned - new if metric_higher_is_better(metric) else new - learned
    return abs(old - new) + max(0.0, gain)


def metric_higher_is_better(metric: str) -> bool:
    try:
        return Metric(metric).higher_is_better
    except ValueError:
        return True


def check_baseline_drift(
    report: EvaluationReport, policy: GuardrailPolicy, *, regime_change: bool = False
) -> SafetyCheck:
    """|candidate - champion| of `baseline_metric` on the baseline set <= `max_baseline_drift`.

    After a regime change the baseline set is the old regime, on which a model of the new one
    is expected to differ: the limit grows by `regime_gap` (how far the champion falls between
    the regimes plus how much more of the new one the candidate knows). Still a bound: a
    candidate that moves on the old data without a matching gain on the new fails."""
    metric = policy.baseline_metric.value
    limit = policy.max_baseline_drift
    numbers: dict[str, float] = {"limit": limit}
    allowance = regime_gap(report, metric) if regime_change else None
    if allowance is not None:
        limit += allowance
        numbers |= {"limit": limit, "regime_allowance": allowance}
    if report.champion is None:
        detail = "No champion: there is no baseline behaviour to drift from."
        return _safety_check(BASELINE_DRIFT, True, numbers, detail)
    candidate = _metric(report.candidate, BASELINE, metric)
    champion = _metric(report.champion, BASELINE, metric)
    if candidate is None or champion is None:
        side = "candidate" if candidate is None else "champion"
        detail = f"The report has no baseline-set {metric} for the {side}."
        return _safety_check(BASELINE_DRIFT, False, numbers, detail)
    numbers |= {"candidate": candidate, "champion": champion}
    if problem := _non_finite(candidate=candidate, champion=champion, limit=limit):
        return _safety_check(BASELINE_DRIFT, False, numbers, f"Baseline-set {metric}: {problem}.")
    drift = abs(candidate - champion)
    if problem := _non_finite(drift=drift):
        return _safety_check(BASELINE_DRIFT, False, numbers, f"Baseline-set {metric}: {problem}.")
    bound = _bound(drift, limit, ceiling=True, near_miss_margin=policy.near_miss_margin)
    relation = "within" if bound.passed else "beyond"
    detail = (
        f"Baseline-set {metric} moved by {drift:.4g} (candidate {candidate:.4g}, champion "
        f"{champion:.4g}), {relation} the limit {limit:.4g}"
    )
    if allowance is not None:
        detail += (
            f" ({policy.max_baseline_drift:.4g} + {allowance:.4g}: how far the champion falls "
            "between the old regime and the new, plus what the candidate gains on the new)"
        )
    detail += "."
    numbers |= bound.numbers
    return _safety_check(BASELINE_DRIFT, bound.passed, numbers, detail, near_miss=bound.near_miss)


def check_prediction_shift(
    report: EvaluationReport, policy: GuardrailPolicy, epsilon: float = DEFAULT_KL_EPSILON
) -> SafetyCheck:
    """KL(candidate || champion) of the holdout prediction histograms <= `max_prediction_kl`."""
    limit = policy.max_prediction_kl
    candidate_counts = report.candidate_prediction_counts
    champion_counts = report.champion_prediction_counts
    numbers: dict[str, float] = {"limit": limit, "bins": len(candidate_counts)}
    if report.champion is None:
        detail = "No champion: there is no prediction distribution to compare with."
        return _safety_check(PREDICTION_SHIFT, True, numbers, detail)
    try:
        divergence = kl_divergence(candidate_counts, champion_counts, epsilon)
    except ValueError as error:
        detail = f"Cannot compare the prediction distributions: {error}."
        return _safety_check(PREDICTION_SHIFT, False, numbers, detail)
    if problem := _non_finite(limit=limit):
        return _safety_check(PREDICTION_SHIFT, False, numbers, f"Prediction shift: {problem}.")
    bound = _bound(divergence, limit, ceiling=True, near_miss_margin=policy.near_miss_margin)
    relation = "within" if bound.passed else "beyond"
    detail = (
        f"KL divergence of the candidate's holdout predictions from the champion's is "
        f"{divergence:.4g} over {len(candidate_counts)} bins, {relation} the limit {limit:.4g}."
    )
    numbers |= bound.numbers | {"epsilon": epsilon}
    return _safety_check(PREDICTION_SHIFT, bound.passed, numbers, detail, near_miss=bound.near_miss)


def check_error_concentration(report: EvaluationReport, policy: GuardrailPolicy) -> SafetyCheck:
    """The largest share of the candidate's holdout errors in one segment <= the limit."""
    limit = policy.max_error_concentration
    errors = report.errors_by_segment
    numbers: dict[str, float] = {"limit": limit, "segments": len(errors)}
    try:
        segment, share = error_concentration(errors)
    except ValueError as error:
        return _safety_check(ERROR_CONCENTRATION, False, numbers, f"Error counts: {error}.")
    total = sum(errors.values())
    numbers |= {"errors": total}
    if total == 0:
        detail = "The candidate made no errors on the holdout."
        return _safety_check(ERROR_CONCENTRATION, True, numbers, detail)
    if problem := _non_finite(limit=limit):
        return _safety_check(
            ERROR_CONCENTRATION, False, numbers, f"Error concentration: {problem}."
        )
    bound = _bound(share, limit, ceiling=True, near_miss_margin=policy.near_miss_margin)
    source = f" (by {report.segment_source})" if report.segment_source else ""
    relation = "within" if bound.passed else "beyond"
    detail = (
        f"{share:.1%} of the candidate's {total} holdout errors fall in {segment!r}{source}, "
        f"{relation} the limit {limit:.1%}."
    )
    numbers |= bound.numbers | {"segment_errors": errors[segment]}
    return _safety_check(
        ERROR_CONCENTRATION, bound.passed, numbers, detail, near_miss=bound.near_miss
    )


# ---- improvement rule and verdict ----------------------------------------------------------


def find_regressions(report: EvaluationReport, policy: EvaluationPolicy) -> list[str]:
    """One sentence per policy metric on which the candidate fails to improve on the holdout.

    A metric regresses when its oriented delta (positive = better) is below `min_improvement`,
    or, with `require_significant`, when the low end of its bootstrap interval is. A metric
    without a finite holdout delta counts as a regression: it cannot show an improvement. With
    no champion nothing can regress.
    """
    if report.champion is None:
        return []
    required = policy.min_improvement
    if not math.isfinite(required):
        return [f"min_improvement is not a finite number ({required})"]
    deltas = {delta.metric: delta for delta in report.deltas if delta.dataset == HOLDOUT}
    regressions = []
    for metric in dict.fromkeys(policy.metrics):
        delta = deltas.get(metric)
        if delta is None:
            regressions.append(f"{metric.value}: no holdout delta (the metric was not measured)")
        elif problem := _non_finite(holdout_delta=delta.delta):
            regressions.append(f"{metric.value}: {problem}")
        elif delta.delta < required:
            regressions.append(
                f"{metric.value}: holdout delta {delta.delta:+.4g} is below the required "
                f"{required:+.4g} (candidate {delta.candidate:.4g}, champion {delta.champion:.4g})"
            )
        elif policy.require_significant and not math.isfinite(delta.ci_low):
            regressions.append(f"{metric.value}: the low end of its interval is not finite")
        elif policy.require_significant and delta.ci_low < required:
            regressions.append(
                f"{metric.value}: holdout delta {delta.delta:+.4g} is not significant: its "
                f"{policy.confidence:.0%} interval [{delta.ci_low:+.4g}, {delta.ci_high:+.4g}] "
                f"reaches below {required:+.4g}"
            )
    return regressions


def live_regressions(report: EvaluationReport, policy: EvaluationPolicy) -> list[str]:
    """One sentence per policy metric on which the candidate is *significantly* worse than the
    champion on the most recent labelled data or on replayed live traffic (the interval of its
    oriented delta lies wholly below min(0, min_improvement)). Noise alone does not reject: a
    candidate must be shown worse on the newest data."""
    if report.champion is None:
        return []
    floor = min(0.0, policy.min_improvement) if math.isfinite(policy.min_improvement) else 0.0
    wanted = set(policy.metrics)
    found = []
    for delta in report.deltas:
        if delta.dataset not in (RECENT, REPLAY) or delta.metric not in wanted:
            continue
        if math.isfinite(delta.ci_high) and delta.ci_high < floor:
            found.append(
                f"{delta.metric.value}: significantly worse on the {delta.dataset} data, delta "
                f"{delta.delta:+.4g} with its {policy.confidence:.0%} interval "
                f"[{delta.ci_low:+.4g}, {delta.ci_high:+.4g}] below {floor:+.4g} (candidate "
                f"{delta.candidate:.4g}, champion {delta.champion:.4g})"
            )
    return found


QUALITY_IMPROVEMENT = "quality_improvement"
# Replayed traffic judges the improvement when it has at least this many rows.
MIN_REPLAY_ROWS = 50


def check_improvement(
    report: EvaluationReport, metric: Metric, confidence: float, *, regime_change: bool = False
) -> SafetyCheck:
    """The loop answers degraded quality: the candidate must improve that metric significantly
    over the champion on the new regime's data: replayed live traffic when there is enough of
    it; else the holdout of a window that starts at the change (all new regime), or the recent
    slice of any other window; the low end of the delta's interval above 0."""
    numbers: dict[str, float] = {"confidence": confidence}
    if report.champion is None:
        detail = "No champion: there is no degraded quality to improve on."
        return _safety_check(QUALITY_IMPROVEMENT, True, numbers, detail)
    deltas = {(d.dataset, d.metric): d for d in report.deltas}
    order = [REPLAY] if report.rows.get(REPLAY, 0) >= MIN_REPLAY_ROWS else []
    order += [HOLDOUT, RECENT] if regime_change else [RECENT, HOLDOUT]
    delta = next((deltas[(name, metric)] for name in order if (name, metric) in deltas), None)
    if delta is None:
        detail = (
            f"No {metric.value} delta on {', '.join(order)}: the improvement the degraded "
            "quality asks for cannot be shown."
        )
        return _safety_check(QUALITY_IMPROVEMENT, False, numbers, detail)
    numbers |= {
        "candidate": delta.candidate,
        "champion": delta.champion,
        "delta": delta.delta,
        "ci_low": delta.ci_low,
        "ci_high": delta.ci_high,
        "rows": float(report.rows.get(delta.dataset, 0)),
    }
    passed = math.isfinite(delta.ci_low) and delta.ci_low > 0
    detail = (
        f"{metric.value} on the {delta.dataset} data ({report.rows.get(delta.dataset, 0)} rows): "
        f"candidate {delta.candidate:.4g} vs champion {delta.champion:.4g}, delta "
        f"{delta.delta:+.4g} [{delta.ci_low:+.4g}, {delta.ci_high:+.4g}] at {confidence:.0%}: "
        + ("a significant improvement." if passed else "not a significant improvement.")
    )
    return _safety_check(QUALITY_IMPROVEMENT, passed, numbers, detail)


def candidate_loss(report: EvaluationReport | None, task: Task) -> tuple[float, int] | None:
    """The candidate's loss per labelled prediction (the performance monitor's: 0/1 error of a
    classifier, absolute error of a regressor) on the newest data it was evaluated on (replayed
    traffic, else the recent slice, else the holdout), and over how many rows: what a fresh
    model achieves, for the coordinator's adaptive policy. None when not measured."""
    if report is None:
        return None
    metric, loss = ("accuracy", True) if task is Task.CLASSIFICATION else ("mae", False)
    for dataset in (REPLAY, RECENT, HOLDOUT):
        value = _metric(report.candidate, dataset, metric)
        rows = report.rows.get(dataset, 0)
        if value is not None and math.isfinite(value) and rows > 0:
            return (max(0.0, 1.0 - value) if loss else max(0.0, value)), rows
    return None


def _shift_explained(check: SafetyCheck) -> SafetyCheck:
    """A candidate answering degraded quality is expected to predict differently from the
    degraded champion: a prediction shift beyond the limit passes when the candidate is shown
    significantly better on the new regime's labels (as the canary's shift rule does live)."""
    if check.name != PREDICTION_SHIFT or check.passed:
        return check
    return check.model_copy(
        update={
            "passed": True,
            "detail": f"{check.detail} Explained: the candidate significantly improves the "
            "degraded quality (quality_improvement).",
        }
    )


@dataclass(frozen=True)
class GateContext:
    """What the loop answers: a regime change (its window starts there) and, for degraded
    quality, the metric the candidate must improve significantly."""

    regime_change: bool = False
    improve: Metric | None = None


def improvement_metric(trigger: TriggerContext) -> Metric | None:
    """The metric a performance trigger found degraded, as an evaluation metric (a label-free
    estimate of accuracy asks for accuracy); None without one."""
    if trigger.performance is None:
        return None
    name = trigger.performance.metric.removeprefix("estimated ").strip()
    try:
        return Metric(name)
    except ValueError:
        return None


def guardrail_checks(
    report: EvaluationReport, policy: GuardrailPolicy, *, regime_change: bool = False
) -> list[SafetyCheck]:
    return [
        check_golden_floor(report, policy),
        check_baseline_drift(report, policy, regime_change=regime_change),
        check_prediction_shift(report, policy),
        check_error_concentration(report, policy),
    ]


def gate_verdict(
    report: EvaluationReport, spec: ModelSpec, context: GateContext | None = None
) -> GateVerdict:
    """Passed iff every guardrail passed, no policy metric regressed on the holdout nor is
    significantly worse on the recent or replayed data, and, for a loop answering degraded
    quality, that quality improved significantly."""
    context = context or GateContext()
    checks = guardrail_checks(report, spec.loop.guardrails, regime_change=context.regime_change)
    if context.improve is not None:
        improvement = check_improvement(
            report,
            context.improve,
            spec.loop.evaluation.confidence,
            regime_change=context.regime_change,
        )
        checks.append(improvement)
        if improvement.passed and report.champion is not None:
            checks = [_shift_explained(check) for check in checks]
    regressions = find_regressions(report, spec.loop.evaluation)
    regressions += live_regressions(report, spec.loop.evaluation)
    failed = [check for check in checks if not check.passed]
    near_misses = [check.name for check in checks if check.near_miss]
    passed = not failed and not regressions
    return GateVerdict(
        passed=passed,
        checks=checks,
        regressions=regressions,
        near_misses=near_misses,
        summary=_summary(passed, checks, failed, regressions, near_misses, report),
    )


def _summary(
    passed: bool,
    checks: Sequence[SafetyCheck],
    failed: Sequence[SafetyCheck],
    regressions: Sequence[str],
    near_misses: Sequence[str],
    report: EvaluationReport,
) -> str:
    if passed:
        compared = (
            "there is no champion to compare with"
            if report.champion is None
            else ("no metric regressed on the holdout")
        )
        text = f"Passed: all {len(checks)} guardrails held and {compared}."
    else:
        text = "Rejected."
        if failed:
            text += " Failed " + "; ".join(f"{c.name}: {c.detail}" for c in failed)
        if regressions:
            text += " Regressed: " + "; ".join(regressions) + "."
    if near_misses:
        text += " Near misses: " + ", ".join(near_misses) + "."
    if len(text) > SUMMARY_MAX_CHARS:
        text = text[: SUMMARY_MAX_CHARS - 1] + "…"
    return text
