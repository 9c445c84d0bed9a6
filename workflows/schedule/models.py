"""Scheduled triggers: a model's Temporal Schedule and the `ScheduledTrigger` runs it starts.

`retrain schedule set MODEL` creates the Schedule `schedule-<model>`; each action starts a
`ScheduledTrigger` workflow (`scheduled-<model>-<time>`, Temporal appends the scheduled time)
whose input is a `ScheduledTriggerInput` and whose result is a `ScheduledRunReport`. Field names
are the public JSON contract (`retrain schedule describe --json`, the run's result in the UI).
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    AwareDatetime,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from workflows.common.models import (
    Duration,
    StrictModel,
    TimeZoneName,
    format_duration,
    parse_duration,
)
from workflows.common.names import validate_model_name
from workflows.coordinator.models import Decision
from workflows.coordinator.triggers import TriggerEvent

SCHEDULED_TRIGGER_WORKFLOW = "ScheduledTrigger"
SCHEDULE_SOURCE = "schedule"
MIN_INTERVAL = timedelta(seconds=1)
# Temporal refuses shorter catch-up windows.
MIN_CATCHUP_WINDOW = timedelta(seconds=10)
MAX_CRON_EXPRESSIONS = 20
_TIMEDELTA = TypeAdapter(timedelta)


def scheduled_run_prefix(model: str) -> str:
    """The id of the action's workflow; Temporal appends `-<scheduled time>` to each run's."""
    return f"scheduled-{model}"


class OverlapPolicy(StrEnum):
    """What Temporal does when a run is due while the previous one still runs. Member names are
    those of `temporalio.client.ScheduleOverlapPolicy`, so the two map by name."""

    SKIP = "skip"
    BUFFER_ONE = "buffer-one"
    BUFFER_ALL = "buffer-all"
    CANCEL_OTHER = "cancel-other"
    TERMINATE_OTHER = "terminate-other"
    ALLOW_ALL = "allow-all"


# ------------------------------------------------------------------ cron expressions

_PREDEFINED = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
# (field name, low, high, names counted from `low`)
_FIELDS: tuple[tuple[str, int, int, list[str]], ...] = (
    ("minute", 0, 59, []),
    ("hour", 0, 23, []),
    ("day of month", 1, 31, []),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
_ITEM = re.compile(r"^(?P<range>\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(?P<step>\d+))?$")


def _value(text: str, field: str, low: int, high: int, names: list[str]) -> int:
    if text in names:
        return low + names.index(text)
    if not text.isdigit():
        raise ValueError(f"{field}: {text!r} is not a number" + (" or a name" if names else ""))
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"{field}: {value} is outside {low}-{high}")
    return value


def _check_field(text: str, field: str, low: int, high: int, names: list[str]) -> None:
    for item in text.split(","):
        match = _ITEM.fullmatch(item)
        if match is None:
            raise ValueError(f"{field}: cannot read {item!r}")
        step = match.group("step")
        if step is not None and int(step) == 0:
            raise ValueError(f"{field}: a step of 0 in {item!r}")
        if match.group("range") == "*":
            continue
        start, _, end = match.group("range").partition("-")
        first = _value(start, field, low, high, names)
        if end and _value(end, field, low, high, names) < first:
            raise ValueError(f"{field}: the range {item!r} runs backwards")


def validate_cron(expression: str) -> str:
    """A standard five-field cron expression (minute hour day-of-month month day-of-week, with
    `*`, lists, ranges, steps and month/day names) or @hourly/@daily/@weekly/@monthly/@yearly.
    Returns it normalised (lowercase, single spaces); raises ValueError saying what is wrong."""
    text = " ".join(expression.lower().split())
    if text.startswith(("cron_tz=", "tz=")):
        raise ValueError(f"{expression!r}: give the time zone with --tz, not inside the cron")
    if text.startswith("@every"):
        raise ValueError(f"{expression!r}: use --every for intervals")
    if text.startswith("@"):
        if text not in _PREDEFINED:
            raise ValueError(f"{expression!r}: use one of {', '.join(sorted(_PREDEFINED))}")
        return text
    fields = text.split(" ")
    if len(fields) != len(_FIELDS):
        raise ValueError(
            f"{expression!r} has {len(fields)} fields; a cron expression has 5: "
            "minute hour day-of-month month day-of-week (e.g. '0 3 * * *')"
        )
    for value, (field, low, high, names) in zip(fields, _FIELDS, strict=True):
        try:
            _check_field(value, field, low, high, names)
        except ValueError as err:
            raise ValueError(f"{expression!r}: {err}") from None
    return text


CronExpression = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(validate_cron)]


# ------------------------------------------------------------------ the schedule


class ScheduleSettings(StrictModel):
    """What `retrain schedule set` configures: when, how overlaps and outages are handled, and
    what each run sends and checks. Carried in every run's input, so each run (and
    `retrain schedule describe`) knows the settings it was started under."""

    cron: Annotated[list[CronExpression], Field(max_length=MAX_CRON_EXPRESSIONS)] = []
    every: Duration | None = None
    timezone: TimeZoneName = "UTC"
    overlap: OverlapPolicy = OverlapPolicy.SKIP
    # A run due while Temporal was unavailable starts late if it is at most this late, and is
    # counted as missed (and alerted) otherwise.
    catchup_window: Duration = timedelta(hours=1)
    jitter: Duration | None = None
    # The newest labelled partition may be at most this old at a run; older alerts.
    stale_after: Duration | None = None
    priority: Annotated[int, Field(ge=1, le=5)] = 3

    @field_validator("every", "catchup_window", "jitter", "stale_after", mode="before")
    @classmethod
    def _readable_duration(cls, value: Any) -> Any:
        # pydantic's own message for "3 fortnights" talks about ISO 8601 internals.
        parsed = parse_duration(value)
        if isinstance(parsed, str):
            try:
                return _TIMEDELTA.validate_python(parsed)
            except ValidationError:
                raise ValueError(
                    f"{value!r} is not a duration (use e.g. 90s, 15m, 6h, 1d, 1h30m or PT1H)"
                ) from None
        return parsed

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if bool(self.cron) == (self.every is not None):
            raise ValueError("give either cron expressions or an interval (every), not both")
        if self.every is not None and self.every < MIN_INTERVAL:
            raise ValueError(f"every must be at least {format_duration(MIN_INTERVAL)}")
        if self.catchup_window < MIN_CATCHUP_WINDOW:
            raise ValueError(
                f"catchup_window must be at least {format_duration(MIN_CATCHUP_WINDOW)}"
            )
        if self.jitter is not None:
            if self.jitter < timedelta(0):
                raise ValueError("jitter cannot be negative")
            if self.every is not None and self.jitter >= self.every:
                raise ValueError("jitter must be shorter than the interval")
        if self.stale_after is not None and self.stale_after <= timedelta(0):
            raise ValueError("stale_after must be positive")
        return self

    def describe_when(self) -> str:
        if self.every is not None:
            return f"every {format_duration(self.every)}"
        return " | ".join(self.cron) + f" ({self.timezone})"


class ScheduledTriggerInput(StrictModel):
    model: str
    settings: ScheduleSettings

    @field_validator("model")
    @classmethod
    def _model_name(cls, value: str) -> str:
        return validate_model_name(value)


# ------------------------------------------------------------------ the run and its activities


class ScheduledRunReport(StrictModel):
    """A `ScheduledTrigger` run's result: what the coordinator decided, what Temporal skipped or
    missed since the previous run, and how fresh the model's data is."""

    model: str
    schedule_id: str
    workflow_id: str
    scheduled_at: AwareDatetime
    event_id: str
    decision: Decision | None = None
    delivery_error: str | None = None
    # Temporal's counters for the schedule as this run saw them (None: schedule not found).
    missed_total: int | None = None
    skipped_total: int | None = None
    # The part of those counters no earlier run had reported.
    missed_new: int = 0
    skipped_new: int = 0
    # Where the new counts are counted from: a previous run's id, or how the baseline was chosen.
    counted_since: str = ""
    overlap: OverlapPolicy | None = None
    catchup_window: timedelta | None = None
    health_error: str | None = None
    # Freshness: None when unknown (no spec registered, no partitions, the check failed).
    newest_partition: date | None = None
    newest_data_at: AwareDatetime | None = None
    stale: bool | None = None
    freshness_note: str = ""
    alerts: list[str] = []


class DeliveryRequest(StrictModel):
    model: str
    # The coordinator's task queue: the run's own, so a schedule and its coordinator share one.
    task_queue: str
    event: TriggerEvent


class HealthRequest(StrictModel):
    schedule_id: str
    # This run: excluded when looking for what earlier runs reported (by run id: a repeated
    # backfill reuses the workflow id of the earlier run for the same time).
    workflow_id: str
    run_id: str


class ScheduleHealth(StrictModel):
    schedule_id: str
    exists: bool
    paused: bool = False
    overlap: OverlapPolicy | None = None
    catchup_window: timedelta | None = None
    missed_total: int = 0
    skipped_total: int = 0
    # What the other completed runs still listed by the schedule reported (their largest
    # counters: the counters only grow), and the latest of them.
    runs_compared: int = 0
    seen_missed: int | None = None
    seen_skipped: int | None = None
    previous: ScheduledRunReport | None = None


class FreshnessRequest(StrictModel):
    model: str


class Freshness(StrictModel):
    model: str
    known: bool
    newest_partition: date | None = None
    location: str | None = None
    note: str = ""
