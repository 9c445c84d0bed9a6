"""TriggerPolicy: how a model's coordinator turns trigger events into retraining decisions."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated, Any, Self
from zoneinfo import ZoneInfo

from pydantic import (
    BaseModel,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from workflows.common.models import Duration, StrictModel, TimeZoneName, describe_validation_error


def merge_patch(current: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """JSON merge patch: nested objects change field by field, anything else is replaced."""
    merged = dict(current)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(current.get(key), dict):
            merged[key] = merge_patch(current[key], value)
        else:
            merged[key] = value
    return merged


class CostModel(StrictModel):
    """Estimated cost of one training, checked against the daily budget before starting.

    estimate = fixed_cost + hourly_rate x instance_count x (base_hours + hours_per_million_rows
    x rows / 1e6). The loop reports the actual cost when it ends and the day's spend is corrected.
    """

    currency: Annotated[str, Field(min_length=3, max_length=3)] = "USD"
    fixed_cost: Annotated[StrictFloat, Field(ge=0)] = 0.0
    hourly_rate: Annotated[StrictFloat, Field(ge=0)] = 1.0
    instance_count: Annotated[StrictInt, Field(ge=1, le=1000)] = 1
    base_hours: Annotated[StrictFloat, Field(ge=0)] = 1.0
    hours_per_million_rows: Annotated[StrictFloat, Field(ge=0)] = 0.0

    def estimate(self, rows: int) -> float:
        hours = self.base_hours + self.hours_per_million_rows * rows / 1_000_000
        return round(self.fixed_cost + self.hourly_rate * self.instance_count * hours, 6)


class TriggerPolicy(StrictModel):
    # data_arrived batching: fire at batch_size events, or batch_window after the latest event
    # (debounce), and never later than max_wait after the first event of the batch.
    batch_size: Annotated[StrictInt, Field(ge=1, le=10_000)] = 10
    batch_window: Duration = timedelta(minutes=15)
    max_wait: Duration = timedelta(hours=2)
    # Minimum time between two loop starts; triggers inside it are deferred, never dropped.
    cooldown: Duration = timedelta(hours=6)
    max_daily_trainings: Annotated[StrictInt, Field(ge=0, le=1000)] = 4
    daily_budget: Annotated[StrictFloat, Field(ge=0)] = 50.0
    cost: CostModel = CostModel()
    # Medium drift retrains only when this is on; high drift always asks for approval.
    auto_retrain: StrictBool = True
    # Drift score cut points for medium, high and critical severity.
    severity_cut_points: tuple[StrictFloat, StrictFloat, StrictFloat] = (0.1, 0.3, 0.5)
    timezone: TimeZoneName = "UTC"
    dedup_window: Duration = timedelta(days=7)
    dedup_max_events: Annotated[StrictInt, Field(ge=100, le=50_000)] = 10_000

    @field_validator("batch_window", "max_wait", "cooldown", "dedup_window")
    @classmethod
    def _non_negative(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            raise ValueError("durations cannot be negative")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.batch_window <= timedelta(0):
            raise ValueError("batch_window must be positive")
        if self.max_wait < self.batch_window:
            raise ValueError("max_wait must be at least batch_window")
        medium, high, critical = self.severity_cut_points
        if not 0 <= medium < high < critical:
            raise ValueError("severity_cut_points must be increasing: medium < high < critical")
        return self

    def with_changes(self, changes: Any) -> TriggerPolicy:
        """This policy with some fields changed: a JSON merge patch, so nested objects change
        field by field (`{"cost": {"hourly_rate": 3}}` keeps the rest of the cost model).
        Raises ValueError listing every problem."""
        if not isinstance(changes, dict):
            raise ValueError(f"policy changes must be a JSON object, got {type(changes).__name__}")
        try:
            return TriggerPolicy.model_validate(merge_patch(self.model_dump(mode="json"), changes))
        except ValidationError as err:
            raise ValueError(describe_validation_error(err, TriggerPolicy)) from None

    @classmethod
    def check_changes(cls, changes: dict[str, Any]) -> None:
        """Each changed field checked on its own (type, range, duration bounds), before any
        coordinator is asked: what depends on the current policy (max_wait >= batch_window)
        is left to `with_changes`. Raises ValueError listing every problem."""
        problems = _field_problems(cls, changes, "")
        if problems:
            raise ValueError("invalid policy changes: " + "; ".join(problems))

    def local_day(self, moment: datetime) -> date:
        """The policy's calendar day for `moment`: daily limits and budgets roll over here."""
        return moment.astimezone(ZoneInfo(self.timezone)).date()

    def next_day_start(self, moment: datetime) -> datetime:
        zone = ZoneInfo(self.timezone)
        today = moment.astimezone(zone).date()
        if today == date.max:  # the end of time: there is no next day (never raise)
            return datetime.max.replace(tzinfo=zone)
        tomorrow = today + timedelta(days=1)
        return datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=zone)


def _field_problems(model: type[BaseModel], changes: dict[str, Any], prefix: str) -> list[str]:
    problems = []
    for key, value in changes.items():
        field = model.model_fields.get(key)
        if field is None:
            expected = ", ".join(model.model_fields)
            problems.append(f"{prefix}{key}: unknown field; expected {{{expected}}}")
            continue
        nested = field.annotation
        if isinstance(value, dict) and isinstance(nested, type) and issubclass(nested, BaseModel):
            problems += _field_problems(nested, value, f"{prefix}{key}.")
            continue
        try:
            # The field's type with its constraints (ge/le, the duration bounds), alone.
            annotated: Any = Annotated[(field.annotation, *field.metadata)]
            TypeAdapter(annotated).validate_python(value)
        except ValidationError as err:
            for item in err.errors(include_url=False):
                problems.append(f"{prefix}{key}: {item['msg']}")
    return problems
