"""The canary verdict of a rollout stage: the policy applied to the measured statistics.

A pure function for the `StagedRollout` workflow: stdlib `math` and our pydantic models only (no
numpy, no I/O, no clock), deterministic. The numbers come from the `analyse_canary` activity
(`activities.rollout.statistics.compare`); shadow-stage statistics follow the same rules.

Significance: `alpha_check = policy.alpha / m` where m counts the checks that carry a p-value
(Bonferroni), so two identical variants fail at most `alpha` of the time. A check fails only
when the challenger is worse by more than its tolerance *and* significantly so, and only on
enough data of its own; below that, what would fail is inconclusive:

- sample_size: inconclusive while either variant has fewer than `min_requests` requests (the
  other checks are still evaluated and reported, but the verdict cannot pass).
- error_rate: fails when rate(challenger) - rate(champion) > `max_error_rate_increase` and
  p < alpha_check, with at least `min_requests` requests per variant.
- latency_p50 / latency_p99: fail when the ratio challenger / champion > `max_latency_ratio`
  and p < alpha_check, with at least `min_requests` successful calls per variant (p99: and at
  least 100, below which a p99 is just one of the slowest few calls).
- accuracy / log_loss: fail when the drop (increase) > `max_accuracy_drop`
  (`max_log_loss_increase`) and p < alpha_check, with at least `policy.min_labelled` labelled
  answers per variant. With fewer: "not enough labels yet (n/min)", inconclusive when
  `require_labels`, else passing. A quality check that does not apply to the model (not a
  classifier, no scores) passes and says so.
- prediction_shift: fails when the Jensen-Shannon distance > `max_prediction_shift` and (when the
  statistics carry a permutation p-value) p < alpha_check, with at least `min_requests` answers
  per variant, unless the quality checks ran on enough labels and passed: then it passes with
  "shift explained: labelled quality not worse" (a retrained model is expected to predict
  differently after a concept change). While labels are arriving but are still too few, such a
  shift is inconclusive (more baking brings the labels); with no labels at all it fails.
- A check that could not run (no successful call, a missing check) is inconclusive, except the
  quality checks, which follow the label rule above.

- With an improvement requirement (a rollout answering degraded quality): its quality check
  (accuracy or log loss) passes only when the challenger is better with `p_better` below
  alpha_check on at least `min_labelled` labels per variant; fewer labels, or a difference not
  (yet) significant, is inconclusive whatever `require_labels` says; significantly worse fails.

Overall: any fail -> fail; else any inconclusive -> inconclusive; else pass. The verdict is total:
non-finite numbers count as missing, never as an exception.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from workflows.rollout.models import (
    CanaryPolicy,
    CanaryStatistics,
    CanaryVerdict,
    CheckName,
    CheckResult,
    CheckStatistic,
    Outcome,
    QualityImprovement,
)

QUALITY_CHECKS = (CheckName.ACCURACY, CheckName.LOG_LOSS)
SHIFT_EXPLAINED = "shift explained: labelled quality not worse"


@dataclass(frozen=True)
class _Context:
    policy: CanaryPolicy
    min_requests: int
    alpha: float  # per check, after the Bonferroni split
    requests: int  # the smaller variant's
    labelled: int  # the smaller variant's


def canary_verdict(
    stats: CanaryStatistics,
    policy: CanaryPolicy,
    min_requests: int,
    improvement: QualityImprovement | None = None,
) -> CanaryVerdict:
    """Pass, fail or inconclusive for `stats`, with every check's numbers and reason.
    `improvement`: the rollout answers degraded quality, and that quality check must show the
    challenger significantly better (see the module docstring)."""
    measured = {check.name: check for check in stats.checks}
    tested = sum(
        1
        for check in stats.checks
        if check.name is not CheckName.SAMPLE_SIZE and _number(check.p_value) is not None
    )
    context = _Context(
        policy=policy,
        min_requests=min_requests,
        alpha=policy.alpha / max(1, tested),
        requests=min(stats.champion.requests, stats.challenger.requests),
        labelled=min(stats.champion.labelled, stats.challenger.labelled),
    )
    results: dict[CheckName, CheckResult] = {CheckName.SAMPLE_SIZE: _sample_size(stats, context)}
    # The shift is explained when the quality checks that ran on enough labels all passed.
    quality_ran, explained = False, True
    for name in QUALITY_CHECKS:
        if improvement is not None and improvement.check == name.value:
            result, ran = _improvement(_statistic(measured, name), context)
        else:
            result, ran = _quality(_statistic(measured, name), context)
        results[name] = result
        quality_ran = quality_ran or ran
        explained = explained and (not ran or result.outcome is Outcome.PASS)
    for name, rule in _LIVE_RULES.items():
        results[name] = rule(_statistic(measured, name), context)
    results[CheckName.PREDICTION_SHIFT] = _prediction_shift(
        _statistic(measured, CheckName.PREDICTION_SHIFT), context, quality_ran and explained
    )
    # Report in the statistics' order, then whatever they lacked in the enum's order.
    order = [*dict.fromkeys([*(check.name for check in stats.checks), *CheckName])]
    checks = [results[name] for name in order]
    outcome = _overall(checks)
    return CanaryVerdict(
        outcome=outcome, checks=checks, statistics=stats, summary=_summary(stats, checks, outcome)
    )


def _statistic(measured: dict[CheckName, CheckStatistic], name: CheckName) -> CheckStatistic:
    return measured.get(name) or CheckStatistic(name=name, detail="not measured")


def _number(value: float | None) -> float | None:
    """Finite numbers only: NaN or infinities (from a buggy producer) count as missing."""
    return value if value is not None and math.isfinite(value) else None


def _overall(checks: list[CheckResult]) -> Outcome:
    outcomes = {check.outcome for check in checks}
    if Outcome.FAIL in outcomes:
        return Outcome.FAIL
    if Outcome.INCONCLUSIVE in outcomes:
        return Outcome.INCONCLUSIVE
    return Outcome.PASS


# ---- the rules -----------------------------------------------------------------------------


def _result(
    check: CheckStatistic,
    outcome: Outcome,
    reason: str,
    *,
    threshold: float | None = None,
    alpha: float | None = None,
    value: float | None = None,
) -> CheckResult:
    return CheckResult(
        name=check.name,
        outcome=outcome,
        value=_number(check.difference) if value is None else value,
        threshold=threshold,
        p_value=_number(check.p_value),
        alpha=alpha if _number(check.p_value) is not None else None,
        reason=reason,
    )


def _sample_size(stats: CanaryStatistics, context: _Context) -> CheckResult:
    challenger, champion = stats.challenger.requests, stats.champion.requests
    enough = context.requests >= context.min_requests
    relation = ">=" if enough else "<"
    reason = (
        f"{challenger} vs {champion} requests ({context.requests} {relation} "
        f"{context.min_requests} per variant)"
    )
    return CheckResult(
        name=CheckName.SAMPLE_SIZE,
        outcome=Outcome.PASS if enough else Outcome.INCONCLUSIVE,
        value=context.requests,
        threshold=context.min_requests,
        reason=reason,
    )


def _significance(p_value: float | None, alpha: float) -> tuple[bool, str]:
    """Whether `p_value` is below `alpha`, and the clause saying so."""
    if p_value is None:
        return True, "no p-value"
    below = p_value < alpha
    return below, f"p={p_value:.2g} {'<' if below else '>='} {alpha:.2g}"


def _worse_rule(
    check: CheckStatistic,
    context: _Context,
    *,
    threshold: float,
    sides: Callable[[float, float], str],
    excess: Callable[[float], str],
    samples_needed: int,
    samples_unit: str,
) -> CheckResult:
    """Fail when `difference` > `threshold`, p < alpha and the check has enough samples."""
    difference = _number(check.difference)
    champion, challenger = _number(check.champion), _number(check.challenger)
    if difference is None or champion is None or challenger is None:
        reason = f"could not be measured: {check.detail or 'no numbers'}"
        return _result(check, Outcome.INCONCLUSIVE, reason, threshold=threshold)
    beyond = difference > threshold
    significant, clause = _significance(_number(check.p_value), context.alpha)
    numbers = (
        f"{sides(challenger, champion)} ({excess(difference)} {'>' if beyond else '<='} "
        f"{excess(threshold).lstrip('+')}, {clause})"
    )
    outcome = Outcome.PASS
    if beyond and significant:
        if check.samples >= samples_needed:
            outcome = Outcome.FAIL
        else:
            outcome = Outcome.INCONCLUSIVE
            numbers += (
                f"; only {check.samples} {samples_unit} per variant (< {samples_needed}) to fail on"
            )
    return _result(check, outcome, numbers, threshold=threshold, alpha=context.alpha)


def _error_rate(check: CheckStatistic, context: _Context) -> CheckResult:
    return _worse_rule(
        check,
        context,
        threshold=context.policy.max_error_rate_increase,
        sides=lambda chal, champ: f"{chal:.3f} vs {champ:.3f}",
        excess=lambda value: f"{value:+.3f}",
        samples_needed=context.min_requests,
        samples_unit="requests",
    )


# Below this many calls a p99 is one of the few slowest calls, whatever the bootstrap says.
P99_MIN_CALLS = 100


def _latency(check: CheckStatistic, context: _Context) -> CheckResult:
    needed = context.min_requests
    if check.name is CheckName.LATENCY_P99:
        needed = max(needed, P99_MIN_CALLS)
    return _worse_rule(
        check,
        context,
        threshold=context.policy.max_latency_ratio,
        sides=lambda chal, champ: f"{chal:.4g} vs {champ:.4g} ms",
        excess=lambda value: f"x{value:.2f}",
        samples_needed=needed,
        samples_unit="successful calls",
    )


_LIVE_RULES: dict[CheckName, Callable[[CheckStatistic, _Context], CheckResult]] = {
    CheckName.ERROR_RATE: _error_rate,
    CheckName.LATENCY_P50: _latency,
    CheckName.LATENCY_P99: _latency,
}


def _quality(check: CheckStatistic, context: _Context) -> tuple[CheckResult, bool]:
    """The check's result, and whether it ran on enough labels to speak for the challenger."""
    policy = context.policy
    accuracy = check.name is CheckName.ACCURACY
    threshold = policy.max_accuracy_drop if accuracy else policy.max_log_loss_increase
    measured = _number(check.difference) is not None
    # The labels the check used, never more than the summaries say arrived.
    count = min(check.samples, context.labelled) if measured else context.labelled
    if count < policy.min_labelled:
        reason = f"not enough labels yet ({count}/{policy.min_labelled})"
        outcome = Outcome.INCONCLUSIVE if policy.require_labels else Outcome.PASS
        if measured:
            reason += f"; so far {_quality_numbers(check, threshold, context)[1]}"
        return _result(check, outcome, reason, threshold=threshold, alpha=context.alpha), False
    if not measured:
        # Labels arrived, yet the metric cannot be computed for this model.
        reason = f"does not apply: {check.detail or 'not measured'}"
        return _result(check, Outcome.PASS, reason, threshold=threshold), False
    failed, numbers = _quality_numbers(check, threshold, context)
    outcome = Outcome.FAIL if failed else Outcome.PASS
    return _result(check, outcome, numbers, threshold=threshold, alpha=context.alpha), True


def _improvement(check: CheckStatistic, context: _Context) -> tuple[CheckResult, bool]:
    """A quality check that must show the challenger significantly *better* (the rollout
    answers degraded quality): fail when significantly worse, as always; pass only when better
    with p_better < alpha on enough labels; anything else is inconclusive (bake again)."""
    policy = context.policy
    accuracy = check.name is CheckName.ACCURACY
    threshold = policy.max_accuracy_drop if accuracy else policy.max_log_loss_increase
    measured = _number(check.difference) is not None
    count = min(check.samples, context.labelled) if measured else context.labelled
    required = "an improvement is required (the champion's quality degraded)"
    if count < policy.min_labelled:
        reason = f"{required}: not enough labels yet ({count}/{policy.min_labelled})"
        return _result(check, Outcome.INCONCLUSIVE, reason, threshold=0.0), False
    if not measured:
        reason = f"{required} but cannot be measured: {check.detail or 'not measured'}"
        return _result(check, Outcome.INCONCLUSIVE, reason, threshold=0.0), False
    failed, numbers = _quality_numbers(check, threshold, context)
    if failed:
        return _result(check, Outcome.FAIL, numbers, threshold=threshold, alpha=context.alpha), True
    difference = _number(check.difference) or 0.0
    p_better = _number(check.p_better)
    if p_better is None and _number(check.p_value) is not None:
        # One-sided tests of a continuous statistic: "better" is the complement of "worse".
        p_better = 1.0 - (_number(check.p_value) or 0.0)
    better = difference < 0 and p_better is not None and p_better < context.alpha
    clause = "no p-value" if p_better is None else f"p_better={p_better:.2g}"
    relation = "<" if better else ">="
    reason = f"{numbers}; improvement: {-difference:+.4g} ({clause} {relation} {context.alpha:.2g})"
    if better:
        return _result(
            check,
            Outcome.PASS,
            f"{reason}: significantly better",
            threshold=0.0,
            alpha=context.alpha,
        ), True
    return _result(
        check,
        Outcome.INCONCLUSIVE,
        f"{reason}: {required}, not shown yet",
        threshold=0.0,
        alpha=context.alpha,
    ), False


def _quality_numbers(
    check: CheckStatistic, threshold: float, context: _Context
) -> tuple[bool, str]:
    """Whether the measured quality check is worse beyond tolerance and significantly, and its
    numbers as a sentence."""
    difference = _number(check.difference) or 0.0
    champion, challenger = _number(check.champion), _number(check.challenger)
    beyond = difference > threshold
    significant, clause = _significance(_number(check.p_value), context.alpha)
    if check.name is CheckName.ACCURACY:
        sides = f"{_fixed(challenger, 3)} vs {_fixed(champion, 3)}"
        excess = f"drop {difference:+.3f} {'>' if beyond else '<='} {threshold:.3f}"
    else:
        sides = f"{_fixed(challenger, 4)} vs {_fixed(champion, 4)}"
        excess = f"{difference:+.4f} {'>' if beyond else '<='} {threshold:.4f}"
    return beyond and significant, f"{sides} ({excess}, {clause})"


def _fixed(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _prediction_shift(
    check: CheckStatistic, context: _Context, quality_passed: bool
) -> CheckResult:
    threshold = context.policy.max_prediction_shift
    distance = _number(check.difference)
    if distance is None:
        reason = f"could not be measured: {check.detail or 'no numbers'}"
        return _result(check, Outcome.INCONCLUSIVE, reason, threshold=threshold)
    beyond = distance > threshold
    significant, clause = _significance(_number(check.p_value), context.alpha)
    reason = (
        f"Jensen-Shannon distance {distance:.3f} ({'>' if beyond else '<='} {threshold:.3f}, "
        f"{clause})"
    )
    outcome = Outcome.PASS
    if beyond and significant:
        if quality_passed:
            reason += f"; {SHIFT_EXPLAINED}"
        elif check.samples < context.min_requests:
            outcome = Outcome.INCONCLUSIVE
            reason += (
                f"; only {check.samples} answers per variant (< {context.min_requests}) to fail on"
            )
        elif 0 < context.labelled < context.policy.min_labelled:
            # Labels are arriving: they may yet show the shift is an improvement (a retrained
            # model predicts differently after a concept change); bake longer, then a human.
            outcome = Outcome.INCONCLUSIVE
            reason += (
                f"; waiting for labels to explain it ({context.labelled}/"
                f"{context.policy.min_labelled})"
            )
        else:
            outcome = Outcome.FAIL
            reason += "; not explained by labelled quality"
    return _result(check, outcome, reason, threshold=threshold, alpha=context.alpha)


# ---- summary -------------------------------------------------------------------------------


def _summary(stats: CanaryStatistics, checks: list[CheckResult], outcome: Outcome) -> str:
    """A headline, then one line per check: `name: numbers: OUTCOME`."""
    stage = "Shadow canary" if stats.shadow else "Canary"
    headline = (
        f"{stage} {outcome.value.upper()}: challenger {stats.challenger.variant} vs champion "
        f"{stats.champion.variant}"
    )
    if outcome is Outcome.PASS:
        headline += f", all {len(checks)} checks passed"
    else:
        names = [check.name.value for check in checks if check.outcome is outcome]
        headline += f", {outcome.value}: {', '.join(names)}"
    lines = [
        f"{check.name.value}: {check.reason}: {check.outcome.value.upper()}" for check in checks
    ]
    return "\n".join([headline, *lines])
