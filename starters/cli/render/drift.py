"""Rich output for drift reports and the drift monitor's status (the CLI's output).

Column names, issues and summaries come from data: they go into `Text` objects, never into
markup strings, so a name like `[/]` prints as itself instead of breaking the console.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from activities.drift.formatting import (
    format_missing,
    format_number,
    format_pvalue,
    format_status,
    format_time,
    is_drifted,
    ordered_columns,
)
from workflows.common.models import format_duration
from workflows.common.names import drift_monitor_id
from workflows.coordinator.triggers import Severity
from workflows.drift.models import (
    CheckRecord,
    ColumnDrift,
    ColumnKind,
    ColumnStatus,
    Delivery,
    DriftReport,
    MonitorStatus,
    PerformanceCheck,
    ReportStatus,
)
from workflows.drift.performance_models import LabelFreeMetric, MetricQuality, PerformanceStatus

# The CLI's tables show a missing value as "-" (starters/render.py).
NONE = "-"
# Newest first; the monitor keeps more than a terminal needs.
HISTORY_ROWS = 10

SEVERITY_STYLE = {
    Severity.LOW: "green",
    Severity.MEDIUM: "yellow",
    Severity.HIGH: "dark_orange",
    Severity.CRITICAL: "bold red",
}
COLUMN_STATUS_STYLE = {
    ColumnStatus.OK: "green",
    ColumnStatus.DRIFTED: "bold red",
    ColumnStatus.DATA_QUALITY: "yellow",
    ColumnStatus.INSUFFICIENT_DATA: "cyan",
}
REPORT_STATUS_STYLE = {
    ReportStatus.OK: "green",
    ReportStatus.DRIFT: "bold red",
    ReportStatus.DATA_QUALITY: "yellow",
    ReportStatus.INSUFFICIENT_DATA: "cyan",
}
DELIVERY_STYLE = {Delivery.SENT: "green", Delivery.NOT_SENT: "dim", Delivery.FAILED: "bold red"}


def _num(value: float | None) -> str:
    return format_number(value, none=NONE)


def _time(value: datetime | None) -> str:
    return format_time(value, none=NONE)


def _severity(severity: Severity) -> Text:
    return Text(severity.value, style=SEVERITY_STYLE[severity])


def _report_status(status: ReportStatus) -> Text:
    return Text(format_status(status.value), style=REPORT_STATUS_STYLE[status])


def _two_stats(column: ColumnDrift) -> tuple[str, str]:
    """(KS D or chi2, W1 or Cramér's V): the kind decides which pair applies. The chi2's degrees
    of freedom are left to the HTML page: the p-value says what they would."""
    if column.kind is ColumnKind.NUMERIC:
        return _num(column.ks_statistic), _num(column.wasserstein)
    return _num(column.chi2), _num(column.cramers_v)


def drift_report_table(report: DriftReport) -> Table:
    """One row per column, drifted first, then by score."""
    title = Text.assemble(
        (report.model, "bold"),
        ": severity ",
        _severity(report.severity),
        f", score {_num(report.score)} ({report.statistic.value.upper()}), ",
        _report_status(report.status),
        f", {report.rows:,} rows vs {report.reference_rows:,} reference",
    )
    table = Table(title=title)
    # Numbers never wrap; two-line headings keep their columns narrow, so the names and issues
    # keep room on a 120-column terminal.
    table.add_column("column", overflow="fold")
    table.add_column("role", overflow="fold")
    table.add_column("status", overflow="fold")
    for heading in ("score", "thres-\nhold", "p-value", "PSI", "JS", "KS D\nchi2", "W1\nCramér V"):
        table.add_column(heading, justify="right", no_wrap=True)
    table.add_column("missing\nref→cur", no_wrap=True)
    table.add_column("issues", overflow="fold", ratio=1)
    for column in ordered_columns(report):
        drifted = is_drifted(report, column)
        status = ColumnStatus.DRIFTED if drifted else column.status
        over = column.score is not None and column.score >= column.threshold
        first, second = _two_stats(column)
        table.add_row(
            Text(column.name, style="bold red" if drifted else ""),
            column.role.value,
            Text(format_status(status.value), style=COLUMN_STATUS_STYLE[status]),
            Text(_num(column.score), style="bold" if over else ""),
            _num(column.threshold),
            format_pvalue(column.pvalue, none=NONE),
            _num(column.psi),
            _num(column.js),
            first,
            second,
            format_missing(column),
            Text("\n".join(column.issues), style="yellow"),
        )
    if not report.columns:
        table.caption = "no column statistics"
    return table


def drift_report_header(report: DriftReport) -> list[Text]:
    """Summary lines above the table; `Text`, so data never reads as console markup."""
    window = report.window_end - report.window_start
    profile = f"v{report.profile_version}" if report.profile_version else "baseline (no champion)"
    if report.profile_source:
        profile += f" from {report.profile_source}"
    where = f", endpoint {report.endpoint}" if report.endpoint else ""
    lines = [
        Text.assemble(
            ("drift report ", "bold"),
            (report.model, "bold"),
            f"  check {report.check_id} at {_time(report.checked_at)} UTC{where}",
        ),
        Text(
            f"window   {_time(report.window_start)} - {_time(report.window_end)} UTC "
            f"({format_duration(window)}), {report.rows:,} rows vs "
            f"{report.reference_rows:,} reference rows"
        ),
        Text(f"profile  {profile}"),
        Text.assemble(
            f"score    {_num(report.score)} ({report.statistic.value.upper()}), severity ",
            _severity(report.severity),
            ", status ",
            _report_status(report.status),
        ),
    ]
    if report.summary:
        lines.append(Text(report.summary))
    drifted = ", ".join(report.drifted) if report.drifted else "none"
    lines.append(Text.assemble("drifted  ", (drifted, "bold red" if report.drifted else "")))
    for i, problem in enumerate(report.data_quality):
        lines.append(Text.assemble("quality  " if i == 0 else "         ", (problem, "yellow")))
    for i, note in enumerate(report.notes):
        lines.append(Text.assemble("notes    " if i == 0 else "         ", (note, "dim")))
    if report.report_uri:
        lines.append(Text(f"report   {report.report_uri}"))
    if report.html_uri:
        lines.append(Text(f"html     {report.html_uri}"))
    return lines


def drift_report_panel(report: DriftReport) -> Panel:
    return Panel(Group(*drift_report_header(report)), title="drift report", expand=False)


def _delivery(record: CheckRecord) -> Text:
    if record.trigger is None:
        return Text("none", style="dim")
    return Text.assemble(
        f"{record.trigger} ",
        (format_status(record.delivery.value), DELIVERY_STYLE[record.delivery]),
    )


def _history_table(history: list[CheckRecord]) -> Table:
    table = Table(show_edge=False, pad_edge=False)
    for heading in ("check", "UTC", "reason", "status", "severity"):
        table.add_column(heading, overflow="fold")
    table.add_column("score", justify="right")
    table.add_column("drifted", justify="right")
    table.add_column("trigger")
    table.add_column("note", overflow="fold")
    recent = list(reversed(history[-HISTORY_ROWS:]))
    for record in recent:
        table.add_row(
            Text(record.check_id),
            _time(record.checked_at),
            Text(record.reason),
            _report_status(record.status),
            _severity(record.severity),
            _num(record.score),
            str(len(record.drifted)),
            _delivery(record),
            Text(record.delivery_note),
        )
    if len(history) > len(recent):
        table.caption = f"{len(history) - len(recent)} older checks not shown"
    return table


def monitor_status_table(status: MonitorStatus) -> Table:
    table = Table(title=Text(drift_monitor_id(status.model)), show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    table.add_row("enabled", "yes" if status.enabled else "[yellow]no[/]")
    table.add_row("interval", format_duration(timedelta(seconds=status.interval_seconds)))
    table.add_row("checks", f"{status.checks}" + (" (one running now)" if status.checking else ""))
    table.add_row("next check", _time(status.next_check_at))
    last = status.last_report
    if last is None:
        table.add_row("last report", NONE)
    else:
        summary = Text.assemble(
            f"{last.check_id} at {_time(last.checked_at)}: ",
            _report_status(last.status),
            ", severity ",
            _severity(last.severity),
            f", score {_num(last.score)}, {len(last.drifted)} drifted",
        )
        if last.summary:
            summary.append(f"\n{last.summary}")
        table.add_row("last report", summary)
        if last.html_uri:
            table.add_row("last html", Text(last.html_uri))
    if status.history:
        table.add_row("recent checks", _history_table(status.history))
    else:
        table.add_row("recent checks", "none yet")
    if not status.performance_enabled:
        table.add_row("performance", "[yellow]disabled[/] (`performance.enabled = false`)")
    elif status.last_performance is not None:
        table.add_row("performance", Group(*performance_check_lines(status.last_performance)))
    else:
        table.add_row("performance", "no check yet")
    if status.performance_error:
        table.add_row("performance error", Text(status.performance_error, style="yellow"))
    return table


# ---- performance checks --------------------------------------------------------------------

PERFORMANCE_STATUS_STYLE = {
    PerformanceStatus.OK: "green",
    PerformanceStatus.DEGRADED: "bold red",
    PerformanceStatus.INCONCLUSIVE: "yellow",
    PerformanceStatus.NO_REFERENCE: "cyan",
    PerformanceStatus.DATA_QUALITY: "yellow",
    PerformanceStatus.INSUFFICIENT_DATA: "cyan",
}


def _quality_line(label: str, quality: MetricQuality) -> Text:
    reference = f" vs reference {quality.reference:.3f}" if quality.reference is not None else ""
    return Text(
        f"{label:<12} {quality.metric.value} {quality.value:.3f} "
        f"[{quality.ci_low:.3f}, {quality.ci_high:.3f}]{reference} "
        f"({quality.rows:,} rows, {quality.confidence:.0%} {quality.method.value})"
    )


def performance_check_lines(check: PerformanceCheck) -> list[Text]:
    """What one performance check measured and decided, one `Text` per line."""
    report, verdict = check.report, check.verdict
    version = f"v{report.version}" if report.version else "no champion"
    lines = [
        Text.assemble(
            ("performance check ", "bold"),
            (report.model, "bold"),
            f"  {check.check_id} at {_time(check.checked_at)} UTC, {version}",
        ),
        Text(
            f"window       labels received {_time(report.window_start)} - "
            f"{_time(report.window_end)} UTC: {report.rows.labelled:,} labelled rows "
            f"({check.volume.value})"
            + (f", reference from {report.reference_source}" if report.reference_source else "")
        ),
    ]
    rows = report.rows
    if rows.bad or rows.skipped_files:
        lines.append(
            Text(
                f"feedback     {rows.unmatched} unmatched, {rows.invalid} invalid labels, "
                f"{rows.skipped_files} skipped files",
                style="yellow",
            )
        )
    for quality in report.quality:
        lines.append(_quality_line("realized", quality))
    detector = report.detector
    if detector is not None:
        change = detector.last_change
        found = (
            f"change at {_time(change.at)} (detected {_time(change.detected_at)}): mean loss "
            f"{change.mean_before:.3f} -> {change.mean_after:.3f}"
            if change is not None
            else "no change"
        )
        lines.append(
            Text(
                f"detector     {detector.method.value.upper()} on the {detector.loss.value} "
                f"loss of {detector.observations:,} labelled answers (false-alarm rate "
                f"{detector.false_alarm_rate:g}): {found}"
            )
        )
    for quality in report.since_change:
        lines.append(_quality_line("since change", quality))
    estimate = report.label_free
    if estimate is not None:
        accuracy = estimate.estimate(LabelFreeMetric.ACCURACY)
        calibration = estimate.calibration
        usable = (
            "calibrated" if estimate.usable else "not calibrated: " + "; ".join(calibration.reasons)
        )
        if accuracy is not None:
            lines.append(
                Text(
                    f"label-free   estimated accuracy {accuracy.value:.3f} "
                    f"[{accuracy.ci_low:.3f}, {accuracy.ci_high:.3f}] on {estimate.rows:,} "
                    f"answers without a label yet (ECE {calibration.ece:.3f}, {usable}; it "
                    "cannot see a change of P(y | x))"
                )
            )
    lines.append(
        Text.assemble(
            "verdict      ",
            (
                verdict.status.value,
                PERFORMANCE_STATUS_STYLE.get(verdict.status, ""),
            ),
            (f", {verdict.severity.value}" if verdict.status is PerformanceStatus.DEGRADED else ""),
            f": {verdict.summary.removeprefix(verdict.status.value + ': ')}",
        )
    )
    for note in report.notes:
        lines.append(Text(f"notes        {note}", style="dim"))
    if check.event_id or check.delivery_note:
        lines.append(
            Text.assemble(
                "trigger      ",
                (format_status(check.delivery.value), DELIVERY_STYLE[check.delivery]),
                f" {check.event_id or ''} {check.delivery_note}".rstrip(),
            )
        )
    return lines
