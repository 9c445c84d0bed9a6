"""Performance decisions as plain functions (no Temporal, no numpy): when a window has enough
labels to be checked, and from a check's numbers (`PerformanceReport`) to a verdict, a
severity and what the coordinator is told.

**Volume.** A window gathers labels until it has `min_rows`; a low-volume model's window keeps
gathering (its start stays put) up to `max_window_age`, then is checked with what it has (wider
intervals say how little that is). Only a window that is old *and* nearly empty is reported as
too small, once per maximum age. A model with 180 labels a day and the default policy is
checked about every three days.

**Verdict.** Each comparison sets a current value with its interval against a baseline:

- *realized*: the window's metric against the reference (the quality recorded at promotion);
- *change*: when the detector found a degradation, the stretch since its latest change against
  the reference, or without one the stretch before the change. A change late in a long window
  moves the window's average little; the stretch since the change shows its full size;
- *label-free*: the estimated accuracy of predictions still without labels (calibrated scores
  only) against the reference accuracy; it can warn but never raise the severity above
  `label_free_max_severity`.

The degradation is relative to the baseline (positive = worse, in the metric's direction). A
comparison is **degraded** when the degradation reaches `min_degradation` *and* the whole
interval is worse than the baseline; **inconclusive** when only the first holds. The severity
follows the policy's cut points applied to the degradation at the interval's better end (what
the data shows at least), so noise cannot inflate it. Bad feedback (unmatched or invalid labels)
above `max_bad_label_share` is a data-quality problem: nothing is triggered on broken data.
"""

from __future__ import annotations

from datetime import UTC, datetime

from workflows.coordinator.triggers import (
    PerformanceObservation,
    Severity,
    TriggerEvent,
    TriggerKind,
    severity_from_score,
)
from workflows.drift.performance_models import (
    Basis,
    EstimatedMetric,
    LabelFreeMetric,
    MetricJudgement,
    MetricQuality,
    PerformancePolicy,
    PerformanceReport,
    PerformanceSignal,
    PerformanceStatus,
    PerformanceVerdict,
    VolumeDecision,
)
from workflows.spec.models import Metric

_SUMMARY_LIMIT = 2000


# ---- volume --------------------------------------------------------------------------------


def volume_decision(
    labelled_rows: int, window_start: datetime, now: datetime, policy: PerformancePolicy
) -> VolumeDecision:
    """What to do with a window that has gathered `labelled_rows` labels since `window_start`."""
    if labelled_rows >= policy.min_rows:
        return VolumeDecision.CHECK
    if now - window_start < policy.max_window_age:
        return VolumeDecision.WAIT
    if labelled_rows >= policy.min_rows_at_max_age:
        return VolumeDecision.CHECK_AVAILABLE
    return VolumeDecision.TOO_FEW


def next_window_start(decision: VolumeDecision, window_start: datetime, now: datetime) -> datetime:
    """A waiting window keeps its start; any other decision closes it and opens the next."""
    return window_start if decision is VolumeDecision.WAIT else now


# ---- comparisons ---------------------------------------------------------------------------


def judge(
    basis: Basis,
    metric: str,
    higher_is_better: bool,
    current: float,
    ci_low: float,
    ci_high: float,
    baseline: float,
    rows: int,
    min_degradation: float,
) -> MetricJudgement:
    """One current value (with its interval) against a baseline."""
    scale = abs(baseline) if baseline != 0 else 1.0
    if higher_is_better:
        degradation = (baseline - current) / scale
        conservative = (baseline - ci_high) / scale
    else:
        degradation = (current - baseline) / scale
        conservative = (ci_low - baseline) / scale
    if degradation >= min_degradation and conservative > 0:
        status = PerformanceStatus.DEGRADED
    elif degradation >= min_degradation:
        status = PerformanceStatus.INCONCLUSIVE
    else:
        status = PerformanceStatus.OK
    return MetricJudgement(
        basis=basis,
        metric=metric,
        current=current,
        ci_low=ci_low,
        ci_high=ci_high,
        baseline=baseline,
        degradation=degradation,
        conservative=conservative,
        rows=rows,
        status=status,
    )


def _judge_quality(
    basis: Basis, quality: MetricQuality, baseline: float, policy: PerformancePolicy
) -> MetricJudgement:
    return judge(
        basis,
        quality.metric.value,
        quality.metric.higher_is_better,
        quality.value,
        quality.ci_low,
        quality.ci_high,
        baseline,
        quality.rows,
        policy.min_degradation,
    )


def _watched(qualities: list[MetricQuality], policy: PerformancePolicy) -> list[MetricQuality]:
    return [q for q in qualities if not policy.metrics or q.metric in policy.metrics]


def _reference(report: PerformanceReport, metric: Metric) -> float | None:
    return next(
        (q.reference for q in report.quality if q.metric is metric and q.reference is not None),
        None,
    )


def _label_free_judgement(
    report: PerformanceReport, policy: PerformancePolicy
) -> MetricJudgement | None:
    estimate = report.label_free
    if estimate is None or not estimate.usable or estimate.rows == 0:
        return None
    accuracy: EstimatedMetric | None = estimate.estimate(LabelFreeMetric.ACCURACY)
    if accuracy is None:
        return None
    baseline = _reference(report, Metric.ACCURACY)
    if baseline is None:
        baseline = accuracy.reference
    if baseline is None:
        return None
    return judge(
        Basis.LABEL_FREE,
        f"estimated {LabelFreeMetric.ACCURACY.value}",
        True,
        accuracy.value,
        accuracy.ci_low,
        accuracy.ci_high,
        baseline,
        estimate.rows,
        policy.min_degradation,
    )


def judgements(report: PerformanceReport, policy: PerformancePolicy) -> list[MetricJudgement]:
    """Every comparison the report's numbers allow (see the module's docstring)."""
    made = [
        _judge_quality(Basis.REALIZED, quality, quality.reference, policy)
        for quality in _watched(report.quality, policy)
        if quality.reference is not None
    ]
    detector = report.detector
    if detector is not None and detector.degraded:
        before = {q.metric: q.value for q in report.before_change}
        for quality in _watched(report.since_change, policy):
            baseline = quality.reference
            if baseline is None:
                baseline = before.get(quality.metric)
            if baseline is not None:
                made.append(_judge_quality(Basis.CHANGE, quality, baseline, policy))
    if (label_free := _label_free_judgement(report, policy)) is not None:
        made.append(label_free)
    return made


# ---- the verdict ---------------------------------------------------------------------------


def _severity(judgement: MetricJudgement, policy: PerformancePolicy) -> Severity:
    severity = severity_from_score(max(judgement.conservative, 0.0), policy.severity_cut_points)
    if judgement.basis is Basis.LABEL_FREE and severity.rank > policy.label_free_max_severity.rank:
        return policy.label_free_max_severity
    return severity


def _describe(judgement: MetricJudgement) -> str:
    return (
        f"{judgement.metric} {judgement.current:.4g} "
        f"[{judgement.ci_low:.4g}, {judgement.ci_high:.4g}] vs {judgement.baseline:.4g} "
        f"({judgement.basis.value}, {judgement.rows} rows, "
        f"{judgement.degradation:+.1%} worse)"
    )


def assess_performance(report: PerformanceReport, policy: PerformancePolicy) -> PerformanceVerdict:
    """The report's verdict: status, severity, score and the comparison behind them."""
    rows = report.rows
    if rows.labels > 0 and rows.bad / rows.labels > policy.max_bad_label_share:
        shown = "; ".join(rows.problems[:3])
        return PerformanceVerdict(
            status=PerformanceStatus.DATA_QUALITY,
            summary=_clip(
                f"data quality: {rows.bad} of {rows.labels} labels unusable ({rows.unmatched} "
                f"unmatched, {rows.invalid} invalid): {shown}; no performance trigger on broken "
                "data"
            ),
        )
    made = judgements(report, policy)
    degraded = [j for j in made if j.status is PerformanceStatus.DEGRADED]
    if degraded:
        headline = max(degraded, key=lambda j: (_severity(j, policy).rank, j.conservative))
        severity = _severity(headline, policy)
        others = len(degraded) - 1
        return PerformanceVerdict(
            status=PerformanceStatus.DEGRADED,
            severity=severity,
            score=max(headline.conservative, 0.0),
            headline=headline,
            judgements=made,
            summary=_clip(
                f"{severity.value} degradation: {_describe(headline)}"
                + (f"; {others} more comparison(s) degraded" if others else "")
            ),
        )
    inconclusive = [j for j in made if j.status is PerformanceStatus.INCONCLUSIVE]
    if inconclusive:
        headline = max(inconclusive, key=lambda j: j.degradation)
        return PerformanceVerdict(
            status=PerformanceStatus.INCONCLUSIVE,
            headline=headline,
            judgements=made,
            summary=_clip(
                f"inconclusive: {_describe(headline)}; the interval still reaches the baseline"
            ),
        )
    if made:
        headline = max(made, key=lambda j: j.degradation)
        return PerformanceVerdict(
            status=PerformanceStatus.OK,
            headline=headline,
            judgements=made,
            summary=_clip(f"ok: {len(made)} comparison(s), worst {_describe(headline)}"),
        )
    if report.quality:
        measured = ", ".join(f"{q.metric.value} {q.value:.4g}" for q in report.quality)
        return PerformanceVerdict(
            status=PerformanceStatus.NO_REFERENCE,
            summary=_clip(
                f"no reference quality to compare with ({measured} on {rows.labelled} rows) "
                "and no degradation detected"
            ),
        )
    return PerformanceVerdict(
        status=PerformanceStatus.INSUFFICIENT_DATA,
        summary=f"nothing to measure: {rows.labelled} labelled rows",
    )


def performance_signal(
    report: PerformanceReport, verdict: PerformanceVerdict
) -> PerformanceSignal | None:
    """What a `performance` trigger carries for a degraded verdict (None otherwise). The
    detector's latest change goes with it whenever that change made the loss worse, whatever
    comparison the verdict rests on: the new regime starts there."""
    headline = verdict.headline
    if verdict.status is not PerformanceStatus.DEGRADED or headline is None:
        return None
    detector = report.detector
    change = detector.last_change if detector is not None and detector.degraded else None
    estimate = report.label_free.estimate(LabelFreeMetric.ACCURACY) if report.label_free else None
    confidence = next(
        (q.confidence for q in (*report.quality, *report.since_change)),
        estimate.confidence if estimate is not None else 0.95,
    )
    return PerformanceSignal(
        severity=verdict.severity,
        score=verdict.score,
        basis=headline.basis,
        metric=headline.metric,
        reference=headline.baseline,
        current=headline.current,
        ci_low=headline.ci_low,
        ci_high=headline.ci_high,
        confidence=confidence,
        rows=headline.rows,
        version=report.version,
        window_start=report.window_start,
        window_end=report.window_end,
        change_at=change.at if change is not None else None,
        detected_at=change.detected_at if change is not None else None,
        mean_loss_before=change.mean_before if change is not None else None,
        mean_loss_after=change.mean_after if change is not None else None,
        estimated_accuracy=(
            estimate.value
            if estimate is not None and report.label_free is not None and report.label_free.usable
            else None
        ),
        summary=verdict.summary,
    )


# ---- one check, as the monitor runs it -----------------------------------------------------


def waiting_verdict(
    decision: VolumeDecision,
    labelled: int,
    window_start: datetime,
    policy: PerformancePolicy,
) -> PerformanceVerdict:
    """The verdict of a window that is not judged (yet): why, with its numbers."""
    if decision is VolumeDecision.WAIT:
        until = window_start + policy.max_window_age
        summary = (
            f"waiting for labels: {labelled} of {policy.min_rows} since "
            f"{window_start.isoformat()}; checked with what it has from {until.isoformat()} "
            f"(at least {policy.min_rows_at_max_age})"
        )
    else:
        summary = (
            f"too few labels: {labelled} in {policy.max_window_age} (fewer than "
            f"{policy.min_rows_at_max_age}); a new window starts"
        )
    return PerformanceVerdict(status=PerformanceStatus.INSUFFICIENT_DATA, summary=summary)


def judge_check(
    report: PerformanceReport, policy: PerformancePolicy, window_start: datetime, now: datetime
) -> tuple[VolumeDecision, PerformanceVerdict]:
    """Whether the window is judged now (volume) and, if so, its verdict. Bad feedback is
    reported whatever the volume: broken data is not a reason to wait quietly."""
    decision = volume_decision(report.rows.labelled, window_start, now, policy)
    rows = report.rows
    if rows.labels > 0 and rows.bad / rows.labels > policy.max_bad_label_share:
        return decision, assess_performance(report, policy)
    if decision in (VolumeDecision.WAIT, VolumeDecision.TOO_FEW):
        return decision, waiting_verdict(decision, report.rows.labelled, window_start, policy)
    return decision, assess_performance(report, policy)


def performance_event_id(model: str, signal: PerformanceSignal, check_id: str) -> str:
    """Dedup key of a performance trigger: the change point when there is one (overlapping
    checks that find the same change send the same id, which the coordinator ignores), else
    the check."""
    if signal.change_at is not None:
        moment = signal.change_at.astimezone(UTC).strftime("%Y%m%dT%H%M%S%f")
        return f"perf-{model}-v{signal.version or 'none'}-change-{moment}"[:200]
    return f"perf-{check_id}"[:200]


def performance_trigger(
    report: PerformanceReport, verdict: PerformanceVerdict, endpoint: str | None = None
) -> TriggerEvent | None:
    """The trigger the coordinator hears for a degraded verdict (None otherwise)."""
    signal = performance_signal(report, verdict)
    if signal is None:
        return None
    if endpoint is not None:
        signal = signal.model_copy(update={"endpoint": endpoint[:200]})
    return TriggerEvent(
        kind=TriggerKind.PERFORMANCE,
        source="performance-monitor",
        event_id=performance_event_id(report.model, signal, report.check_id),
        occurred_at=report.checked_at,
        # A critical degradation is as urgent as critical drift: it may skip the cooldown.
        priority=2 if signal.severity.rank >= Severity.HIGH.rank else 3,
        performance=signal,
        metadata={"check_id": report.check_id},
    )


def observation_of(
    check_id: str,
    report: PerformanceReport,
    verdict: PerformanceVerdict,
    volume: VolumeDecision,
    event: TriggerEvent | None,
) -> PerformanceObservation | None:
    """What the coordinator learns from a judged window: its loss, labelled and served answers,
    and the degradation trigger when there is one. None for a window not judged (waiting for
    labels, too few) or broken feedback (its losses would be wrong): the policy learns nothing
    from them."""
    if volume in (VolumeDecision.WAIT, VolumeDecision.TOO_FEW) or report.loss is None:
        return None
    if verdict.status in (PerformanceStatus.DATA_QUALITY, PerformanceStatus.INSUFFICIENT_DATA):
        return None
    return PerformanceObservation(
        check_id=check_id,
        version=report.version,
        window_start=report.window_start,
        window_end=report.window_end,
        loss=report.loss.value,
        loss_sum=report.loss_sum,
        loss_sq_sum=report.loss_sq_sum,
        count=report.rows.labelled,
        volume=max(report.served, report.rows.labelled),
        status=verdict.status.value,
        event=event,
    )


def _clip(text: str, limit: int = _SUMMARY_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
