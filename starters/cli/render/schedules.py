"""Rich tables for `retrain schedule list|describe`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from rich.console import Group
from rich.table import Table
from rich.text import Text

from starters.api.schedules import ScheduleView
from workflows.common.models import format_duration


def _time(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _when(view: ScheduleView) -> str:
    return view.settings.describe_when() if view.settings else "(unreadable action)"


def _state(view: ScheduleView) -> Text:
    label = Text("paused", style="yellow") if view.paused else Text("active", style="green")
    if view.note:
        label.append(f" ({view.note})", style="dim")
    return label


def _last_run(view: ScheduleView) -> str:
    if not view.recent_runs:
        return "-"
    run = view.recent_runs[0]
    return f"{_time(run.scheduled_at)} {run.status}" + (f": {run.decision}" if run.decision else "")


def schedules_table(views: Sequence[ScheduleView]) -> Table:
    table = Table(title="schedules")
    for column in ("model", "when", "overlap", "next run", "state", "missed/skipped", "last run"):
        table.add_column(column, overflow="fold")
    for view in views:
        table.add_row(
            view.model,
            _when(view),
            view.overlap.value if view.overlap else "-",
            _time(view.next_runs[0]) if view.next_runs and not view.paused else "-",
            _state(view),
            f"{view.missed_total}/{view.skipped_total}",
            _last_run(view),
        )
    return table


def schedule_details(view: ScheduleView) -> Group:
    settings = view.settings
    table = Table(title=f"{view.schedule_id}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    rows: list[tuple[str, str | Text]] = [
        ("model", view.model),
        ("when", _when(view)),
        ("overlap", view.overlap.value if view.overlap else "-"),
        ("catch-up window", format_duration(view.catchup_window) if view.catchup_window else "-"),
        ("state", _state(view)),
        ("next runs", ", ".join(_time(t) for t in view.next_runs) or "-"),
        ("actions taken", str(view.actions_taken)),
        ("missed / skipped", f"{view.missed_total} / {view.skipped_total}"),
        ("task queue", view.task_queue or "-"),
    ]
    if settings is not None:
        rows += [
            ("priority", str(settings.priority)),
            ("jitter", format_duration(settings.jitter) if settings.jitter else "-"),
            (
                "stale after",
                format_duration(settings.stale_after) if settings.stale_after else "not checked",
            ),
        ]
    report = view.last_report
    if report is not None:
        freshness = (
            "unknown"
            if report.stale is None and report.newest_partition is None
            else f"newest date={report.newest_partition or '-'}"
            + ("" if report.stale is None else (" STALE" if report.stale else " fresh"))
        )
        rows += [
            (
                "data",
                f"{freshness} ({report.freshness_note})" if report.freshness_note else freshness,
            )
        ]
    for field, value in rows:
        table.add_row(field, value)
    runs = Table(title="recent runs")
    for column in ("scheduled", "workflow", "status", "decision", "alerts"):
        runs.add_column(column, overflow="fold")
    for run in view.recent_runs:
        runs.add_row(
            _time(run.scheduled_at),
            run.workflow_id,
            run.status,
            run.decision or "-",
            ", ".join(run.alerts) or "-",
        )
    return Group(table, runs)
