"""Trigger events: the one message every source (CLI, UI, monitors, schedules, gateways) sends.

The field names are the public JSON contract, e.g. what a user types into the Temporal UI's
Signal dialog for `trigger`:

    {"kind": "drift", "source": "monitor", "priority": 2,
     "drift": {"score": 0.42, "features": ["age", "income"]}}
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import (
    AwareDatetime,
    Field,
    JsonValue,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from workflows.common.models import StrictModel, describe_validation_error

MAX_METADATA_BYTES = 8 * 1024
MAX_DRIFTED_FEATURES = 1000

ShortText = Annotated[str, Field(min_length=1, max_length=200)]


class TriggerKind(StrEnum):
    SCHEDULED = "scheduled"
    DATA_ARRIVED = "data_arrived"
    DRIFT = "drift"
    MANUAL = "manual"
    ALARM = "alarm"
    # Quality on labelled traffic (or its label-free estimate) degraded.
    PERFORMANCE = "performance"


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {Severity.LOW: 0, Severity.MEDIUM: 1, Severity.HIGH: 2, Severity.CRITICAL: 3}


class AlarmState(StrEnum):
    ALARM = "ALARM"
    OK = "OK"
    INSUFFICIENT_DATA = "INSUFFICIENT_DATA"


class DataArrival(StrictModel):
    """A new labelled-data object (file, S3/GCS object, table partition)."""

    uri: Annotated[str, Field(min_length=1, max_length=2048)]
    rows: Annotated[StrictInt, Field(ge=0)] | None = None
    size_bytes: Annotated[StrictInt, Field(ge=0)] | None = None


class DriftSignal(StrictModel):
    """What a drift monitor saw. Either `score` or `severity` (or both) must be given."""

    score: Annotated[StrictFloat, Field(ge=0)] | None = None
    severity: Severity | None = None
    features: Annotated[list[ShortText], Field(max_length=MAX_DRIFTED_FEATURES)] = []
    endpoint: ShortText | None = None
    window_start: AwareDatetime | None = None
    window_end: AwareDatetime | None = None
    # The monitor's full report (JSON) and its HTML page, linked from the loop's audit record.
    report_uri: Annotated[str, Field(max_length=2048)] | None = None
    html_uri: Annotated[str, Field(max_length=2048)] | None = None
    # When the monitor located the change (a change point): the loop's data window starts there.
    change_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.score is None and self.severity is None:
            raise ValueError("drift needs a score, a severity, or both")
        if self.window_start and self.window_end and self.window_start > self.window_end:
            raise ValueError("drift window_start is after window_end")
        return self


class AlarmCategory(StrEnum):
    # Business/KPI or infrastructure alarms ask for a retraining.
    KPI = "kpi"
    # The data itself is broken (missing columns, a type change, an all-missing column):
    # retraining on it would learn garbage, so the coordinator records and notifies instead.
    DATA_QUALITY = "data_quality"


class AlarmSignal(StrictModel):
    """A business/KPI or infrastructure alarm (CloudWatch, Alertmanager, Cloud Monitoring), or a
    data-quality alarm from the drift monitor."""

    name: ShortText
    state: AlarmState = AlarmState.ALARM
    reason: Annotated[str, Field(max_length=2000)] | None = None
    category: AlarmCategory = AlarmCategory.KPI


class PerformanceBasis(StrEnum):
    """What a degradation verdict rests on."""

    # The window's realized quality against the reference.
    REALIZED = "realized"
    # The stretch since the detector's latest change, against the reference (or, without one,
    # the stretch before the change).
    CHANGE = "change"
    # The label-free estimate against the reference (labels not there yet).
    LABEL_FREE = "label_free"


class PerformanceSignal(StrictModel):
    """What a performance monitor saw: a quality metric on labelled traffic (or its label-free
    estimate) worse than its reference, with the numbers. Severity is the monitor's (it knows
    the model's performance cut points); `score` is the relative degradation at the
    conservative end of the interval."""

    severity: Severity
    metric: ShortText
    reference: float
    current: float
    score: Annotated[float, Field(ge=0)] = 0.0
    basis: PerformanceBasis = PerformanceBasis.REALIZED
    ci_low: float | None = None
    ci_high: float | None = None
    confidence: Annotated[float, Field(gt=0, lt=1)] = 0.95
    rows: Annotated[int, Field(ge=0)] = 0
    version: ShortText | None = None
    endpoint: ShortText | None = None
    window_start: AwareDatetime | None = None
    window_end: AwareDatetime | None = None
    # The detector's latest change (when it made the loss worse): the new regime starts here.
    change_at: AwareDatetime | None = None
    detected_at: AwareDatetime | None = None
    mean_loss_before: float | None = None
    mean_loss_after: float | None = None
    # The label-free estimate of accuracy beside the realized figure, when there is one.
    estimated_accuracy: Annotated[float, Field(ge=0, le=1)] | None = None
    summary: Annotated[str, Field(max_length=2000)] = ""

    @model_validator(mode="after")
    def _check(self) -> Self:
        low, high = self.ci_low, self.ci_high
        if low is not None and high is not None and low > high:
            raise ValueError("performance ci_low is above ci_high")
        if self.window_start and self.window_end and self.window_start > self.window_end:
            raise ValueError("performance window_start is after window_end")
        return self


_DETAIL_FIELD = {
    TriggerKind.DATA_ARRIVED: "data",
    TriggerKind.DRIFT: "drift",
    TriggerKind.ALARM: "alarm",
    TriggerKind.PERFORMANCE: "performance",
}


class TriggerEvent(StrictModel):
    kind: TriggerKind
    source: ShortText = "unspecified"
    # Dedup key. Senders should always set one; when absent the coordinator assigns one and
    # the event cannot be deduplicated.
    event_id: ShortText | None = None
    occurred_at: AwareDatetime | None = None
    # 1 is the most urgent, 5 the least. Strict: `"1"` or `true` is refused, not read as 1.
    priority: Annotated[StrictInt, Field(ge=1, le=5)] = 3
    metadata: dict[Annotated[str, Field(max_length=200)], JsonValue] = {}
    data: DataArrival | None = None
    drift: DriftSignal | None = None
    alarm: AlarmSignal | None = None
    performance: PerformanceSignal | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata_size(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not value:
            return value
        size = len(json.dumps(value, separators=(",", ":")).encode())
        if size > MAX_METADATA_BYTES:
            raise ValueError(f"metadata is {size} bytes; the limit is {MAX_METADATA_BYTES}")
        return value

    @model_validator(mode="after")
    def _details_match_kind(self) -> Self:
        for kind, field in _DETAIL_FIELD.items():
            present = getattr(self, field) is not None
            if kind == self.kind and not present:
                article = "an" if kind.value[0] in "aeiou" else "a"
                raise ValueError(f"{article} {kind.value} trigger needs the '{field}' object")
            if kind != self.kind and present:
                raise ValueError(f"'{field}' is only allowed on {kind.value} triggers")
        return self


class PerformanceObservation(StrictModel):
    """One performance check's labelled traffic, as the monitor reports it to the coordinator
    after every check it judged (signal `performance_observed`): what the adaptive policy
    learns from. `event` is the degradation trigger of the same check, when there is one."""

    check_id: ShortText
    # The champion whose answers were measured.
    version: ShortText | None = None
    window_start: AwareDatetime | None = None
    window_end: AwareDatetime | None = None
    # The per-prediction loss summed over `count` labelled answers (0/1 error of a classifier,
    # absolute error of a regressor), its sum of squares, and the answers served in the
    # window, labelled or not.
    loss: ShortText = "zero_one"
    loss_sum: Annotated[float, Field(ge=0)]
    loss_sq_sum: Annotated[float, Field(ge=0)] | None = None
    count: Annotated[int, Field(ge=0)]
    volume: Annotated[int, Field(ge=0)]
    status: ShortText | None = None
    event: TriggerEvent | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.count == 0 and self.loss_sum > 0:
            raise ValueError("an observation without labelled answers cannot have a loss")
        if self.event is not None and self.event.kind is not TriggerKind.PERFORMANCE:
            raise ValueError("an observation's event must be a performance trigger")
        return self


def parse_observation(raw: Any) -> PerformanceObservation:
    """Validate an untrusted observation; raises ValueError with every error."""
    if isinstance(raw, PerformanceObservation):
        return raw
    if not isinstance(raw, dict):
        raise ValueError(f"an observation must be a JSON object, got {type(raw).__name__}")
    try:
        return PerformanceObservation.model_validate(raw)
    except ValidationError as err:
        raise ValueError(describe_validation_error(err)) from None


MAX_EVENTS_PER_BATCH = 500


class TriggerBatch(StrictModel):
    """Many trigger events in one message, for high-volume senders (gateways, pipelines):
    one history event instead of one per trigger. Each event is decided on its own."""

    events: Annotated[list[TriggerEvent], Field(min_length=1, max_length=MAX_EVENTS_PER_BATCH)]


def parse_trigger(raw: Any) -> TriggerEvent:
    """Validate an untrusted payload (signal JSON, UI input); raises ValueError with every error."""
    if isinstance(raw, TriggerEvent):
        return raw
    if not isinstance(raw, dict):
        raise ValueError(f"a trigger must be a JSON object, got {type(raw).__name__}")
    try:
        return TriggerEvent.model_validate(raw)
    except ValidationError as err:
        raise ValueError(describe_validation_error(err, TriggerEvent)) from None


def severity_from_score(score: float, cut_points: tuple[float, float, float]) -> Severity:
    medium, high, critical = cut_points
    if score >= critical:
        return Severity.CRITICAL
    if score >= high:
        return Severity.HIGH
    if score >= medium:
        return Severity.MEDIUM
    return Severity.LOW


def event_time(event: TriggerEvent, received_at: datetime) -> datetime:
    return event.occurred_at or received_at
