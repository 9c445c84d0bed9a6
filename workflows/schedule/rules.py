"""Scheduled-trigger decisions as plain functions (no Temporal, no I/O): the event a run sends,
what is new in Temporal's missed/skipped counters, whether the data are stale, and the alerts.

Temporal keeps two monotonic counters per Schedule (runs missed outside the catch-up window,
runs skipped by the overlap policy) but no record of which of them anyone was told about. Each
`ScheduledTrigger` run reports the counters it saw in its result; the next run reads the results
of the other completed runs the Schedule still lists (its recent actions) and alerts on what
grew beyond the largest counters any of them reported. No store of our own is needed, and runs
finishing out of order (backfills, `allow-all`) still compare against the most anyone reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from workflows.common.models import format_duration
from workflows.common.notify import Notification
from workflows.coordinator.triggers import TriggerEvent, TriggerKind
from workflows.schedule.models import (
    SCHEDULE_SOURCE,
    Freshness,
    ScheduledRunReport,
    ScheduledTriggerInput,
    ScheduleHealth,
)

# Scheduler alerts answer no coordinator decision.
NO_DECISION = 0


def scheduled_event_id(model: str, scheduled_at: datetime) -> str:
    """One id per model and scheduled time, to the second (as Temporal names the run): a retried
    run, a repeated backfill or an overlapping run for the same time are one event to the
    coordinator, which ignores the repeats."""
    return f"scheduled-{model}-{scheduled_at.astimezone(UTC):%Y%m%dT%H%M%SZ}"


def scheduled_event(
    input: ScheduledTriggerInput, scheduled_at: datetime, schedule_id: str, workflow_id: str
) -> TriggerEvent:
    return TriggerEvent(
        kind=TriggerKind.SCHEDULED,
        source=SCHEDULE_SOURCE,
        event_id=scheduled_event_id(input.model, scheduled_at),
        occurred_at=scheduled_at,
        priority=input.settings.priority,
        metadata={
            "schedule_id": schedule_id,
            "scheduled_at": scheduled_at.astimezone(UTC).isoformat(),
            "workflow_id": workflow_id,
            "when": input.settings.describe_when(),
        },
    )


# ------------------------------------------------------------------ missed and skipped runs


@dataclass(frozen=True)
class NewCounts:
    missed: int
    skipped: int
    since: str

    @property
    def any(self) -> bool:
        return self.missed > 0 or self.skipped > 0


def new_since(total: int, seen: int | None) -> int:
    """How much of a monotonic counter is new: all of it when nobody reported it before, or when
    it went backwards (the schedule was deleted and created again)."""
    if seen is None or total < seen:
        return total
    return total - seen


def count_new(health: ScheduleHealth) -> NewCounts:
    if not health.exists:
        return NewCounts(0, 0, "schedule not found")
    if health.previous is not None:
        since = health.previous.workflow_id
        if health.runs_compared > 1:
            since += f" (the most any of {health.runs_compared} earlier runs reported)"
    else:
        # The counters start at zero when the schedule is created.
        since = "the schedule's creation (no earlier run reported)"
    return NewCounts(
        missed=new_since(health.missed_total, health.seen_missed),
        skipped=new_since(health.skipped_total, health.seen_skipped),
        since=since,
    )


def _runs(count: int) -> str:
    return f"{count} scheduled run{'s' if count != 1 else ''}"


def schedule_alert(
    model: str, health: ScheduleHealth, counts: NewCounts, scheduled_at: datetime
) -> Notification | None:
    """A warning naming what Temporal skipped or missed since `counts.since`, or None."""
    if not counts.any:
        return None
    overlap = health.overlap.value if health.overlap else "unknown"
    window = format_duration(health.catchup_window) if health.catchup_window else "unknown"
    lines = []
    if counts.skipped:
        lines.append(
            f"{_runs(counts.skipped)} skipped by the overlap policy '{overlap}' "
            f"({health.skipped_total} in total): a run was still going when the next was due. "
            "Look for a run stuck waiting (no worker polling, an unreachable coordinator), or "
            "choose another --overlap."
        )
    if counts.missed:
        lines.append(
            f"{_runs(counts.missed)} missed outside the catch-up window of {window} "
            f"({health.missed_total} in total): Temporal was unavailable when they were due. "
            f"`retrain schedule backfill {model} --start ... --end ...` runs them now."
        )
    what = " and ".join(
        part
        for part in (
            f"{counts.skipped} skipped" if counts.skipped else "",
            f"{counts.missed} missed" if counts.missed else "",
        )
        if part
    )
    return Notification(
        # Keyed by the totals: runs that see the same counters send one notification.
        key=f"{health.schedule_id}-missed{health.missed_total}-skipped{health.skipped_total}",
        model=model,
        level="warning",
        subject=f"{model}: {what} scheduled run(s)",
        body="\n".join(
            [
                *lines,
                f"Counted since {counts.since}; noticed by the run scheduled at "
                f"{scheduled_at.astimezone(UTC).isoformat()}.",
            ]
        ),
        decision_seq=NO_DECISION,
    )


# ------------------------------------------------------------------ data freshness


def partition_end(day: date) -> datetime:
    """A `date=YYYY-MM-DD` partition holds data up to the end of that UTC day."""
    return datetime.combine(day + timedelta(days=1), time(), tzinfo=UTC)


def is_stale(freshness: Freshness, now: datetime, stale_after: timedelta | None) -> bool | None:
    """None when unknown or not asked for; no partition at all is stale."""
    if stale_after is None or not freshness.known:
        return None
    if freshness.newest_partition is None:
        return True
    return now - partition_end(freshness.newest_partition) > stale_after


def stale_alert_due(
    stale: bool | None, newest: date | None, previous: ScheduledRunReport | None
) -> bool:
    """Alert when the data go stale, not at every run while they stay so: a previous run that
    already found the same newest partition stale has told the reviewers."""
    if stale is not True:
        return False
    return not (previous is not None and previous.stale and previous.newest_partition == newest)


def stale_alert(
    model: str, freshness: Freshness, stale_after: timedelta, now: datetime
) -> Notification:
    newest = freshness.newest_partition
    if newest is None:
        found = f"no labelled partition (date=YYYY-MM-DD/) under {freshness.location}"
    else:
        age = now - partition_end(newest)
        found = (
            f"the newest labelled partition, date={newest.isoformat()} under "
            f"{freshness.location}, ends {format_duration(age)} ago"
        )
    return Notification(
        key=f"data-stale-{model}-{newest.isoformat() if newest else 'none'}",
        model=model,
        level="warning",
        subject=f"{model}: labelled data are stale",
        body=(
            f"{found[0].upper()}{found[1:]}; the schedule allows {format_duration(stale_after)}. "
            "Scheduled retrainings keep training on old data until the pipeline delivers again."
        ),
        decision_seq=NO_DECISION,
    )


def delivery_alert(model: str, event_id: str, error: str) -> Notification:
    return Notification(
        key=f"{event_id}-undelivered",
        model=model,
        level="critical",
        subject=f"{model}: a scheduled trigger did not reach the coordinator",
        body=f"The scheduled trigger {event_id} could not be delivered: {error}",
        decision_seq=NO_DECISION,
    )


# ------------------------------------------------------------------ one run


def assess_run(
    input: ScheduledTriggerInput,
    report: ScheduledRunReport,
    health: ScheduleHealth | None,
    freshness: Freshness | None,
    freshness_error: str | None,
    now: datetime,
) -> tuple[ScheduledRunReport, list[Notification]]:
    """A run's report completed with what its checks found, and the alerts to send. `report`
    carries the delivery; None checks failed (their errors are in the report)."""
    alerts: list[Notification] = []
    if report.delivery_error is not None:
        alerts.append(delivery_alert(input.model, report.event_id, report.delivery_error))

    if health is not None and health.exists:
        counts = count_new(health)
        report = report.model_copy(
            update={
                "missed_total": health.missed_total,
                "skipped_total": health.skipped_total,
                "missed_new": counts.missed,
                "skipped_new": counts.skipped,
                "counted_since": counts.since,
                "overlap": health.overlap,
                "catchup_window": health.catchup_window,
            }
        )
        alert = schedule_alert(input.model, health, counts, report.scheduled_at)
        if alert is not None:
            alerts.append(alert)
    elif health is not None:
        report = report.model_copy(update={"counted_since": "schedule not found"})

    if freshness is None:
        report = report.model_copy(update={"freshness_note": freshness_error or ""})
    else:
        stale_after = input.settings.stale_after
        stale = is_stale(freshness, now, stale_after)
        newest = freshness.newest_partition
        report = report.model_copy(
            update={
                "newest_partition": newest,
                "newest_data_at": partition_end(newest) if newest else None,
                "stale": stale,
                "freshness_note": freshness.note,
            }
        )
        previous = health.previous if health is not None else None
        if stale_after is not None and stale_alert_due(stale, newest, previous):
            alerts.append(stale_alert(input.model, freshness, stale_after, now))
    return report.model_copy(update={"alerts": [a.key for a in alerts]}), alerts
