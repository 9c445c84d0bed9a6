"""TriggerPolicy: how a model's coordinator turns trigger events into retraining decisions."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal, Self
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


class AdaptiveSettings(StrictModel):
    """The cost-aware policy's inputs from the model's owner (`mode = "adaptive"`).

    Money is what a wrong prediction costs (`value_per_error`, per unit of the monitored loss:
    one error of a classifier, one unit of absolute error of a regressor) times the labelled
    traffic's loss; a retraining costs the cost model's estimate (the backend's real cost once
    a loop reported one) plus `retraining_overhead` (evaluation, review, rollout, risk), in
    `cost.currency`."""

    value_per_error: float
    retraining_overhead: Annotated[float, Field(ge=0)] = 0.0
    # One-sided confidence of the lower bound on the excess loss: noise alone does not retrain.
    confidence: Annotated[float, Field(ge=0.5, lt=1)] = 0.99
    # How many decision periods a retraining learns from, when known (None: a retraining after
    # a detected change learns the new regime only, its window starting at the change).
    training_batches: Annotated[int, Field(ge=1, le=1000)] | None = None
    # Longest forecast of a degradation's cost, in decision periods (None: as long as the
    # evidence says).
    max_horizon: Annotated[int, Field(ge=1)] | None = None

    @field_validator("value_per_error")
    @classmethod
    def _positive(cls, value: float) -> float:
        if not value > 0:
            raise ValueError(
                f"value_per_error must be positive (what one wrong prediction costs, in the cost "
                f"model's currency), got {value}"
            )
        return value


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
    # rules: the routing above decides alone. adaptive: a cost function decides when retraining
    # pays (workflows/coordinator/adaptive.py), inside the same hard limits (pause, dedup,
    # cooldown, daily limit, budget, approvals). Default: adaptive when `adaptive` is given.
    mode: Literal["rules", "adaptive"] = "rules"
    adaptive: AdaptiveSettings | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_mode(cls, data: Any) -> Any:
        # A policy that says what an error is worth and has a cost model is adaptive unless it
        # asks for the rules.
        if isinstance(data, dict) and data.get("mode") is None and data.get("adaptive"):
            return {**data, "mode": "adaptive"}
        return data

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
        if self.mode == "adaptive":
            if self.adaptive is None:
                raise ValueError(
                    'mode "adaptive" needs the adaptive settings: adaptive.value_per_error (what '
                    "one wrong prediction costs)"
                )
            if self.retraining_cost() <= 0:
                raise ValueError(
                    'mode "adaptive" needs a retraining cost: the cost model has no rate '
                    "(cost.hourly_rate and cost.fixed_cost are 0) and adaptive.retraining_overhead "
                    "is 0; a free retraining would be asked for every period"
                )
        return self

    def retraining_cost(self, actual: float | None = None) -> float:
        """What one retraining costs the adaptive policy: the backend's real cost when a loop
        reported one (`actual`), else the cost model's estimate; plus the overhead."""
        overhead = self.adaptive.retraining_overhead if self.adaptive is not None else 0.0
        return round((self.cost.estimate(0) if actual is None else actual) + overhead, 6)

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
