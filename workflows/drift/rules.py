"""Drift decisions as plain functions (no Temporal, no numpy): from per-column statistics to a
report's verdict, and from a report to what the coordinator is told.

A column **drifts** when its score (the policy's statistic) reaches its threshold *and* its
shift is significant (KS or chi-square p-value below alpha split over the columns tested).
A column has a **data-quality** problem when it is missing, changed type, is all missing, or its
missing rate rose by more than `max_missing_increase` (significantly). The overall **score** is
the largest weight x score among drifted columns (0 when none), and the severity follows the
trigger policy's cut points, so the monitor and the coordinator agree on what "high" means.

Broken data never asks for a retraining: a report with a data-quality problem sends a
data-quality alarm instead of a drift trigger. A report without enough rows sends nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from workflows.coordinator.triggers import (
    AlarmCategory,
    AlarmSignal,
    DriftSignal,
    Severity,
    TriggerEvent,
    TriggerKind,
    severity_from_score,
)
from workflows.drift.models import (
    ColumnDrift,
    ColumnRole,
    ColumnStatus,
    DriftPolicy,
    DriftReport,
    DriftStatistic,
    ReportStatus,
)

DRIFT_SOURCE = "drift-monitor"
DATA_QUALITY_ALARM = "data_quality"
# Drift triggers are as urgent as their severity; broken data is urgent.
SEVERITY_PRIORITY = {Severity.CRITICAL: 1, Severity.HIGH: 2, Severity.MEDIUM: 3, Severity.LOW: 4}
DATA_QUALITY_PRIORITY = 2
_REASON_LIMIT = 2000
_FEATURES_IN_TRIGGER = 200


@dataclass(frozen=True)
class Verdict:
    columns: list[ColumnDrift]
    score: float
    severity: Severity
    status: ReportStatus
    drifted: list[str]
    data_quality: list[str]
    summary: str


def _score(column: ColumnDrift, statistic: DriftStatistic) -> float | None:
    return column.psi if statistic is DriftStatistic.PSI else column.js


def _pvalue(column: ColumnDrift) -> float | None:
    return column.ks_pvalue if column.ks_pvalue is not None else column.chi2_pvalue


def _quality_issues(column: ColumnDrift, policy: DriftPolicy, rows: int) -> list[str]:
    """Problems of the data itself; an absent label or prediction is not one (labels arrive
    late, predictions of other versions are not the champion's)."""
    issues = list(column.issues)
    if column.role is not ColumnRole.FEATURE or issues:
        return issues
    if rows > 0 and column.n_current == 0:
        issues.append("all values missing in the current window")
    rise = column.missing_current - column.missing_reference
    if (
        column.n_current > 0
        and rise > policy.max_missing_increase
        and column.missing_pvalue is not None
        and column.missing_pvalue < policy.alpha
    ):
        issues.append(
            f"missing rate rose from {column.missing_reference:.1%} to {column.missing_current:.1%}"
        )
    return issues


def _enough(column: ColumnDrift, policy: DriftPolicy) -> bool:
    needed = policy.min_labels if column.role is ColumnRole.LABEL else policy.min_rows
    return column.n_current >= needed and column.n_reference > 0


def assess(
    columns: list[ColumnDrift],
    policy: DriftPolicy,
    cut_points: tuple[float, float, float],
    rows: int,
) -> Verdict:
    """Finalise every column (score, p-value, threshold, weight, significance, status) and the
    report's verdict. `rows` is the current window's row count."""
    if rows < policy.min_rows:
        finished = [
            column.model_copy(
                update={
                    "status": ColumnStatus.INSUFFICIENT_DATA,
                    "threshold": policy.rule(column.role, column.name).threshold
                    or policy.threshold,
                    "weight": policy.rule(column.role, column.name).weight,
                }
            )
            for column in columns
        ]
        return Verdict(
            columns=finished,
            score=0.0,
            severity=Severity.LOW,
            status=ReportStatus.INSUFFICIENT_DATA,
            drifted=[],
            data_quality=[],
            summary=f"{rows} rows in the window; at least {policy.min_rows} are needed",
        )

    issues = {id(column): _quality_issues(column, policy, rows) for column in columns}
    tested = [
        column
        for column in columns
        if not issues[id(column)]
        and _enough(column, policy)
        and _score(column, policy.statistic) is not None
        and _pvalue(column) is not None
    ]
    # Bonferroni over the columns actually tested.
    level = policy.alpha / max(len(tested), 1)
    tested_ids = {id(column) for column in tested}

    finished = []
    for column in columns:
        rule = policy.rule(column.role, column.name)
        threshold = rule.threshold or policy.threshold
        score = _score(column, policy.statistic)
        pvalue = _pvalue(column)
        significant = id(column) in tested_ids and pvalue is not None and pvalue < level
        if issues[id(column)]:
            status = ColumnStatus.DATA_QUALITY
        elif id(column) not in tested_ids:
            status = ColumnStatus.INSUFFICIENT_DATA
        elif significant and score is not None and score >= threshold and rule.weight > 0:
            status = ColumnStatus.DRIFTED
        else:
            status = ColumnStatus.OK
        finished.append(
            column.model_copy(
                update={
                    "status": status,
                    "score": score,
                    "pvalue": pvalue,
                    "threshold": threshold,
                    "weight": rule.weight,
                    "significant": significant,
                    "issues": issues[id(column)],
                }
            )
        )

    drifted_columns = sorted(
        (c for c in finished if c.status is ColumnStatus.DRIFTED),
        key=lambda c: -(c.weight * (c.score or 0.0)),
    )
    score = max((c.weight * (c.score or 0.0) for c in drifted_columns), default=0.0)
    severity = severity_from_score(score, cut_points)
    quality = [
        f"{c.name}: {issue}"
        for c in finished
        if c.status is ColumnStatus.DATA_QUALITY
        for issue in c.issues
    ]
    drifted = [c.name for c in drifted_columns]
    if quality:
        report_status = ReportStatus.DATA_QUALITY
        summary = (
            f"data quality: {len(quality)} problem(s) ({'; '.join(quality[:3])}); "
            "no drift trigger on broken data"
        )
    elif drifted:
        report_status = ReportStatus.DRIFT
        shown = ", ".join(drifted[:5]) + (", ..." if len(drifted) > 5 else "")
        summary = f"{severity.value} drift, score {score:.3g}: {len(drifted)} drifted ({shown})"
    else:
        report_status = ReportStatus.OK
        summary = f"no drift: {len(tested)} column(s) tested, none drifted"
    return Verdict(
        columns=finished,
        score=score,
        severity=severity,
        status=report_status,
        drifted=drifted,
        data_quality=quality,
        summary=summary,
    )


def repeats_data_quality(report: DriftReport, previous: DriftReport | None) -> bool:
    """The same data-quality problems as the previous check: reviewers were told already."""
    return (
        previous is not None
        and report.status is ReportStatus.DATA_QUALITY
        and previous.status is ReportStatus.DATA_QUALITY
        and previous.data_quality == report.data_quality
    )


def monitor_trigger(
    report: DriftReport, previous: DriftReport | None = None
) -> TriggerEvent | None:
    """What the coordinator hears about a report: a drift trigger when columns drifted (low
    severity included: the coordinator logs it), a data-quality alarm for broken data (once
    while the same problems persist), nothing for a clean or too-small window."""
    if repeats_data_quality(report, previous):
        return None
    if report.status is ReportStatus.DATA_QUALITY:
        return TriggerEvent(
            kind=TriggerKind.ALARM,
            source=DRIFT_SOURCE,
            event_id=f"{report.check_id}-data-quality",
            occurred_at=report.checked_at,
            priority=DATA_QUALITY_PRIORITY,
            alarm=AlarmSignal(
                name=DATA_QUALITY_ALARM,
                category=AlarmCategory.DATA_QUALITY,
                reason=_clip("; ".join(report.data_quality), _REASON_LIMIT),
            ),
            metadata=_links(report),
        )
    if report.status is not ReportStatus.DRIFT:
        return None
    return TriggerEvent(
        kind=TriggerKind.DRIFT,
        source=DRIFT_SOURCE,
        event_id=report.check_id,
        occurred_at=report.checked_at,
        priority=SEVERITY_PRIORITY[report.severity],
        drift=DriftSignal(
            score=report.score,
            severity=report.severity,
            features=[name[:200] for name in report.drifted[:_FEATURES_IN_TRIGGER]],
            endpoint=report.endpoint[:200] if report.endpoint else None,
            window_start=report.window_start,
            window_end=report.window_end,
            report_uri=report.report_uri,
            html_uri=report.html_uri,
        ),
        metadata=_links(report),
    )


def _links(report: DriftReport) -> dict[str, str | float | int | None]:
    return {
        "check_id": report.check_id,
        "statistic": report.statistic.value,
        "rows": report.rows,
        "report_uri": report.report_uri,
        "html_uri": report.html_uri,
    }


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
