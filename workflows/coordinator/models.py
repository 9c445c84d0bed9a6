"""The coordinator's state and what it tells the outside: decisions, status, its outbox.

`CoordinatorState` is the whole state of one model's coordinator; it is carried unchanged
through continue-as-new, so every field here is part of a running execution's contract.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    Field,
    PrivateAttr,
    StrictInt,
    field_serializer,
    field_validator,
)

from workflows.common.models import StateModel, StrictModel, later
from workflows.common.notify import Notification
from workflows.coordinator.adaptive import AdaptiveState
from workflows.coordinator.policy import TriggerPolicy
from workflows.coordinator.triggers import (
    DataArrival,
    DriftSignal,
    PerformanceObservation,
    PerformanceSignal,
    Severity,
    TriggerKind,
)
from workflows.loop.models import AdaptiveRecord, EventRef, LoopStatus, TriggerContext

DECISIONS_KEPT = 200
# Decisions are archived (`archive_decisions`) in chunks of this many, so `retrain decisions`
# reaches back past the DECISIONS_KEPT the state holds; at most DECISIONS_UNARCHIVED wait for
# the archive (a worker or store down), the oldest beyond that are counted and dropped.
DECISIONS_PER_ARCHIVE = 100
DECISIONS_UNARCHIVED = 300
OUTCOMES_KEPT = 50
# Events waiting for a loop (batch + deferred + follow-up) are carried through continue-as-new
# and into the loop's input, both under Temporal's 2 MB payload limit: beyond this many the
# coordinator pushes back (`suppress` / `backlog_full`) instead of growing without bound.
MAX_PENDING_EVENTS = 1000
# A decision in the log names at most this many events (a merged follow-up may cover thousands);
# `event_count` always tells the full number.
EVENT_IDS_PER_LOGGED_DECISION = 20


class Action(StrEnum):
    START = "start"
    BUFFER = "buffer"
    DEFER = "defer"
    SUPPRESS = "suppress"
    IGNORE = "ignore"
    ESCALATE = "escalate"


class Reason(StrEnum):
    PAUSED = "paused"
    DUPLICATE_EVENT = "duplicate_event"
    INVALID_TRIGGER = "invalid_trigger"
    BATCH_BUFFERED = "batch_buffered"
    DRIFT_LOW = "drift_low"
    PERFORMANCE_LOW = "performance_low"
    PERFORMANCE_CRITICAL = "performance_critical"
    # The adaptive policy: keeping the serving model is cheaper than retraining it (yet).
    ADAPTIVE_KEEP = "adaptive_keep"
    # An observation of a version that no longer serves (a check in flight at a promotion).
    STALE_OBSERVATION = "stale_observation"
    AUTO_RETRAIN_OFF = "auto_retrain_off"
    DRIFT_CRITICAL = "drift_critical"
    HUMAN_REVIEW_PENDING = "human_review_pending"
    ALARM_NOT_FIRING = "alarm_not_firing"
    DATA_QUALITY = "data_quality"
    COOLDOWN = "cooldown"
    DAILY_LIMIT = "daily_limit"
    DAILY_BUDGET = "daily_budget"
    LOOP_ACTIVE = "loop_active"
    BACKLOG_FULL = "backlog_full"
    ELIGIBLE = "eligible"


# Actions after which an event needs nothing more from the coordinator.
TERMINAL_ACTIONS = frozenset({Action.START, Action.SUPPRESS, Action.IGNORE, Action.ESCALATE})

Number = float | int | str | bool | None


class Decision(StrictModel):
    seq: int
    at: datetime
    action: Action
    reason: Reason
    message: str
    event_ids: list[str]
    event_count: int
    kinds: list[TriggerKind] = []
    priority: int | None = None
    # How the request reached this decision: direct, batch_full, batch_window, batch_max_wait,
    # deferred (cooldown ended), follow_up (previous loop ended).
    origin: str = "direct"
    loop_id: str | None = None
    requires_approval: bool = False
    numbers: dict[str, Number] = {}
    error: str | None = None


class LoopStart(StrictModel):
    """A loop the rules decided to start; the workflow starts it as a child workflow."""

    loop_id: str
    number: int
    trigger: TriggerContext
    estimated_cost: float


class RetrainRequest(StateModel):
    """Work that wants a loop: one event, a fired batch, or several merged together."""

    events: list[EventRef]
    priority: int
    data: list[DataArrival] = []
    drift: DriftSignal | None = None
    drift_severity: Severity | None = None
    performance: PerformanceSignal | None = None
    adaptive: AdaptiveRecord | None = None
    alarms: list[str] = []
    requires_approval: bool = False
    approval_reasons: list[str] = []
    bypass_cooldown: bool = False
    from_human: bool = False
    _ids: set[str] | None = PrivateAttr(default=None)
    _uris: set[str] | None = PrivateAttr(default=None)

    @property
    def kinds(self) -> list[TriggerKind]:
        return sorted({e.kind for e in self.events})

    @property
    def rows(self) -> int:
        return sum(d.rows or 0 for d in self.data)

    def absorb(self, other: RetrainRequest) -> None:
        """Merge another request in: highest priority, union of events and data.

        Linear in the size of `other`: a follow-up that coalesces thousands of events must
        not cost quadratic time inside one workflow task."""
        event_ids, uris = self._index()
        for event in other.events:
            if event.event_id not in event_ids:
                event_ids.add(event.event_id)
                self.events.append(event)
        for item in other.data:
            if item.uri not in uris:
                uris.add(item.uri)
                self.data.append(item)
        self.priority = min(self.priority, other.priority)
        if other.drift_severity is not None and (
            self.drift_severity is None or other.drift_severity.rank > self.drift_severity.rank
        ):
            self.drift, self.drift_severity = other.drift, other.drift_severity
        if other.performance is not None and (
            self.performance is None
            or (other.performance.severity.rank, other.performance.score)
            > (self.performance.severity.rank, self.performance.score)
        ):
            self.performance = other.performance
        if other.adaptive is not None:
            self.adaptive = other.adaptive
        self.alarms.extend(a for a in other.alarms if a not in self.alarms)
        self.requires_approval = self.requires_approval or other.requires_approval
        self.approval_reasons.extend(
            r for r in other.approval_reasons if r not in self.approval_reasons
        )
        self.bypass_cooldown = self.bypass_cooldown or other.bypass_cooldown
        self.from_human = self.from_human or other.from_human

    def _index(self) -> tuple[set[str], set[str]]:
        # Built once per request (again after continue-as-new), then kept in step by absorb.
        if self._ids is None or self._uris is None:
            self._ids = {e.event_id for e in self.events}
            self._uris = {d.uri for d in self.data}
        return self._ids, self._uris

    def context(self, origin: str) -> TriggerContext:
        return TriggerContext(
            events=list(self.events),
            priority=self.priority,
            kinds=self.kinds,
            data=list(self.data),
            drift=self.drift,
            drift_severity=self.drift_severity,
            alarms=list(self.alarms),
            requires_approval=self.requires_approval,
            approval_reasons=list(self.approval_reasons),
            origin=origin,
            performance=self.performance,
            adaptive=self.adaptive,
        )


class PendingBatch(StateModel):
    events: list[EventRef] = []
    data: list[DataArrival] = []
    opened_at: datetime
    last_event_at: datetime
    _uris: set[str] | None = PrivateAttr(default=None)

    def add(self, ref: EventRef, data: DataArrival, now: datetime) -> None:
        if self._uris is None:
            self._uris = {d.uri for d in self.data}
        self.events.append(ref)
        if data.uri not in self._uris:
            self._uris.add(data.uri)
            self.data.append(data)
        self.last_event_at = now

    def fires_at(self, policy: TriggerPolicy) -> datetime:
        return min(
            later(self.last_event_at, policy.batch_window), later(self.opened_at, policy.max_wait)
        )


class ActiveLoop(StrictModel):
    loop_id: str
    number: int
    started_at: datetime
    day: date
    estimated_cost: float
    priority: int
    kinds: list[TriggerKind]
    event_count: int
    requires_approval: bool


class ReviewRequest(StrictModel):
    """Critical drift blocked automation; a human's manual trigger lifts it."""

    requested_at: datetime
    event_id: str
    severity: Severity
    score: float | None
    features: list[str]


class LoopOutcome(StrictModel):
    loop_id: str
    status: LoopStatus
    summary: str
    started_at: datetime
    closed_at: datetime
    estimated_cost: float
    actual_cost: float | None


class CoordinatorState(StateModel):
    model: str
    policy: TriggerPolicy = TriggerPolicy()
    policy_version: int = 1
    paused: bool = False
    paused_reason: str | None = None
    # event id -> when it was accepted, oldest first; bounded by the policy's dedup window.
    # Carried compactly (ids plus second offsets): it is most of a continue-as-new payload.
    seen_events: OrderedDict[str, datetime] = Field(default_factory=OrderedDict)
    batch: PendingBatch | None = None
    deferred: RetrainRequest | None = None
    deferred_until: datetime | None = None
    follow_up: RetrainRequest | None = None
    active_loop: ActiveLoop | None = None
    review: ReviewRequest | None = None
    last_started_at: datetime | None = None
    loops_started: int = 0
    day: date | None = None
    trainings_today: int = 0
    spent_today: float = 0.0
    decision_seq: int = 0
    auto_event_seq: int = 0
    events_received: int = 0  # every trigger, valid or not, including duplicates
    events_accepted: int = 0  # not paused, not a duplicate, not pushed back
    decisions: list[Decision] = []
    outcomes: list[LoopOutcome] = []
    # Effects decided but not yet carried out when the run continued-as-new: the next run
    # starts the loop and delivers the notifications.
    unstarted_loop: LoopStart | None = None
    outbox: list[Notification] = []
    # The latest regime change a performance or drift trigger located (its change point): every
    # loop started afterwards learns from the data since then.
    regime_start: datetime | None = None
    # The adaptive policy's memory (workflows/coordinator/adaptive.py), the monitor's last
    # observation, the last adaptive decision, and the last retraining's real cost.
    adaptive: AdaptiveState | None = None
    last_observation: PerformanceObservation | None = None
    last_adaptive: Decision | None = None
    last_training_cost: float | None = None
    # Decisions not yet in the archive (oldest first), and how many were dropped unarchived.
    unarchived: list[Decision] = []
    decisions_dropped: int = 0

    @field_serializer("seen_events")
    def _compact_seen(self, seen: OrderedDict[str, datetime]) -> dict[str, Any]:
        if not seen:
            return {"base": None, "ids": [], "offsets_s": []}
        base = next(iter(seen.values()))
        return {
            "base": base.isoformat(),
            "ids": list(seen),
            "offsets_s": [round((t - base).total_seconds(), 6) for t in seen.values()],
        }

    @field_validator("seen_events", mode="before")
    @classmethod
    def _expand_seen(cls, value: Any) -> Any:
        if isinstance(value, dict) and set(value) == {"base", "ids", "offsets_s"}:
            if value["base"] is None:
                return OrderedDict()
            base = datetime.fromisoformat(value["base"])
            return OrderedDict(
                (event_id, base + timedelta(seconds=offset))
                for event_id, offset in zip(value["ids"], value["offsets_s"], strict=True)
            )
        return value


class CoordinatorInput(StateModel):
    """Start a coordinator fresh (`model` only) or carry a previous run's state."""

    model: str
    policy: TriggerPolicy | None = None
    state: CoordinatorState | None = None


class PauseRequest(StrictModel):
    reason: Annotated[str, Field(max_length=500)] = ""
    by: Annotated[str, Field(max_length=200)] = "unknown"


class DecisionsQuery(StrictModel):
    limit: Annotated[StrictInt, Field(ge=1, le=DECISIONS_KEPT)] = 20
    # Only decisions before this sequence number (page back; older ones are in the archive).
    before_seq: Annotated[StrictInt, Field(ge=1)] | None = None


class DecisionArchive(StrictModel):
    """Decisions leaving the state for the archive (`archive_decisions`), oldest first."""

    model: str
    decisions: list[Decision]


class EventVerdict(StrictModel):
    """What became of one event of a `submit_triggers` batch (in the batch's order)."""

    event_id: str | None
    action: Action
    reason: Reason
    # The decision that answered it (0: refused before any decision, see `error`).
    seq: int
    # Refused for now (the backlog is full): send it again later; nothing was remembered.
    retry: bool = False
    error: str | None = None


class TriggerVerdicts(StrictModel):
    """The answer to `submit_triggers`: one verdict per event, so a sender resends exactly the
    events refused for now and nothing else."""

    verdicts: list[EventVerdict]

    @property
    def retry(self) -> list[int]:
        """Indexes of the events to send again."""
        return [i for i, verdict in enumerate(self.verdicts) if verdict.retry]


class BatchView(StrictModel):
    events: int
    uris: int
    rows: int
    opened_at: datetime
    fires_at: datetime


class PendingView(StrictModel):
    events: int
    priority: int
    kinds: list[TriggerKind]
    requires_approval: bool
    until: datetime | None = None


class CoordinatorStatus(StrictModel):
    model: str
    paused: bool
    paused_reason: str | None
    policy_version: int
    policy: TriggerPolicy
    day: date
    trainings_today: int
    spent_today: float
    budget_left: float
    cooldown_until: datetime | None
    batch: BatchView | None
    deferred: PendingView | None
    follow_up: PendingView | None
    active_loop: str | None
    active_loop_started_at: datetime | None
    review_pending: bool
    loops_started: int
    events_received: int
    events_accepted: int
    last_outcome: LoopOutcome | None
    recent_decisions: list[Decision]
    # The adaptive policy's last decision (mode adaptive) and the monitor's last observation.
    mode: str = "rules"
    last_adaptive: Decision | None = None
    last_observation: PerformanceObservation | None = None


def cooldown_until(state: CoordinatorState) -> datetime | None:
    if state.last_started_at is None or state.policy.cooldown <= timedelta(0):
        return None
    return later(state.last_started_at, state.policy.cooldown)
