"""Hypothesis properties of the pure coordinator rules over random histories.

A history is a random sequence of operations on one coordinator: triggers of every kind with
random priorities (some reusing earlier ids), time advances that fire every due timer (as the
workflow does), loop closures with random statuses and costs, stale closures, pause/resume,
policy changes and invalid signals, under small policies whose limits actually bind.

Starts are collected from the returned `Step.start`, decisions from `Step.decisions` (never from
the bounded `state.decisions` log).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from workflows.coordinator.models import TERMINAL_ACTIONS, Action, Decision, LoopStart, Reason
from workflows.coordinator.policy import CostModel, TriggerPolicy
from workflows.coordinator.rules import CoordinatorRules, Step, new_state
from workflows.coordinator.triggers import TriggerEvent, TriggerKind, parse_trigger
from workflows.loop.models import EventRef, LoopResult, LoopStatus

MODEL = "prop"
T0 = datetime(2024, 3, 30, 20, 0, tzinfo=UTC)  # the night Europe/Paris switches to summer time
EPSILON = 1e-9
# Decisions about calls whose event was never accepted (it may be accepted later, or already was).
NOT_ACCEPTED = frozenset({Reason.PAUSED, Reason.DUPLICATE_EVENT, Reason.INVALID_TRIGGER})

PROPERTY_SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


# ------------------------------------------------------------------ operations


@dataclass(frozen=True)
class Send:
    """Signal a trigger (kind-specific fields are used by their kind only)."""

    kind: TriggerKind
    priority: int
    reuse: int | None  # index of an earlier id to send again, or None for a fresh id
    uri: int = 0
    rows: int | None = None
    score: float | None = None
    severity: str | None = None
    alarm_state: str = "ALARM"


@dataclass(frozen=True)
class Advance:
    """Let time pass, waking at every due timer on the way."""

    minutes: int


@dataclass(frozen=True)
class Wake:
    """Jump exactly to the next wakeup, if any."""


@dataclass(frozen=True)
class Close:
    """The active loop (if any) ends."""

    status: LoopStatus
    actual_cost: float | None


@dataclass(frozen=True)
class CloseStale:
    """Report the end of a loop that is not the active one."""


@dataclass(frozen=True)
class Pause:
    """Pause the coordinator."""


@dataclass(frozen=True)
class Resume:
    """Resume the coordinator (a no-op re-evaluation when it is not paused)."""


@dataclass(frozen=True)
class SetPolicy:
    """Apply a new policy."""

    policy: TriggerPolicy


@dataclass(frozen=True)
class Invalid:
    """A signal that failed validation."""


Op = Send | Advance | Wake | Close | CloseStale | Pause | Resume | SetPolicy | Invalid


def make_policy(
    cooldown_min: int,
    batch_size: int,
    window_min: int,
    wait_factor: int,
    max_daily: int,
    budget: float,
    hourly_rate: float,
    per_million_rows: float,
    auto_retrain: bool,
    timezone: str,
) -> TriggerPolicy:
    """A small policy whose cooldown, batch, daily limit and budget bind within a history."""
    return TriggerPolicy(
        cooldown=timedelta(minutes=cooldown_min),
        batch_size=batch_size,
        batch_window=timedelta(minutes=window_min),
        max_wait=timedelta(minutes=window_min * wait_factor),
        max_daily_trainings=max_daily,
        daily_budget=budget,
        cost=CostModel(
            hourly_rate=hourly_rate, base_hours=1.0, hours_per_million_rows=per_million_rows
        ),
        auto_retrain=auto_retrain,
        timezone=timezone,
        # Nothing is forgotten within a history, so "duplicate" has a simple meaning here.
        dedup_window=timedelta(days=365),
        dedup_max_events=1000,
    )


def policy_strategy(
    min_daily: int = 0,
    budgets: tuple[float, ...] = (0.0, 1.0, 2.5, 4.0, 10.0, 50.0),
) -> st.SearchStrategy[TriggerPolicy]:
    """Small policies: cooldown 0-3h, batch_size 1-5, and (by default) limits that bind."""
    return st.builds(
        make_policy,
        cooldown_min=st.sampled_from([0, 30, 90, 180]),
        batch_size=st.integers(1, 5),
        window_min=st.sampled_from([5, 15, 30]),
        wait_factor=st.integers(1, 4),
        max_daily=st.integers(min_daily, 5),
        budget=st.sampled_from(budgets),
        hourly_rate=st.sampled_from([0.5, 1.0, 2.0]),
        per_million_rows=st.sampled_from([0.0, 1.0, 3.0]),
        auto_retrain=st.booleans(),
        timezone=st.sampled_from(["UTC", "Europe/Paris", "Pacific/Auckland"]),
    )


ADVANCE_MINUTES = [1, 5, 10, 20, 30, 45, 60, 90, 180, 1440]
BINDING_LIMITS = policy_strategy()
# Daily limit and budget rarely in the way, so that the cooldown is what decides most starts.
LOOSE_LIMITS = policy_strategy(min_daily=3, budgets=(10.0, 50.0))

sends = st.builds(
    Send,
    kind=st.sampled_from([*TriggerKind, TriggerKind.DATA_ARRIVED, TriggerKind.DRIFT] * 2),
    priority=st.integers(1, 5),
    # About one trigger in six re-sends an earlier id.
    reuse=st.integers(0, 5).flatmap(lambda n: st.integers(0, 50) if n == 0 else st.none()),
    uri=st.integers(0, 3),
    rows=st.sampled_from([None, 0, 100_000, 1_000_000, 3_000_000]),
    score=st.one_of(st.none(), st.sampled_from([0.0, 0.05, 0.1, 0.2, 0.3, 0.45, 0.5, 0.9])),
    severity=st.one_of(st.none(), st.sampled_from(["low", "medium", "high", "critical"])),
    alarm_state=st.sampled_from(["ALARM", "ALARM", "OK", "INSUFFICIENT_DATA"]),
)


def history_strategy(policies: st.SearchStrategy[TriggerPolicy]) -> st.SearchStrategy[list[Op]]:
    """Random operation sequences; set_policy draws from `policies`.

    Mostly triggers, with enough time advances and loop ends for cooldowns, batches,
    follow-ups and day rollovers to happen, and a little of everything else.
    """
    weights: dict[str, tuple[int, st.SearchStrategy[Op]]] = {
        "send": (12, sends),
        "advance": (4, st.builds(Advance, minutes=st.sampled_from(ADVANCE_MINUTES))),
        "wake": (3, st.just(Wake())),
        "close": (
            5,
            st.builds(
                Close,
                status=st.sampled_from(list(LoopStatus)),
                actual_cost=st.one_of(st.none(), st.sampled_from([0.0, 0.5, 3.0])),
            ),
        ),
        "stale": (1, st.just(CloseStale())),
        "pause": (1, st.just(Pause())),
        "resume": (2, st.just(Resume())),
        "policy": (1, st.builds(SetPolicy, policy=policies)),
        "invalid": (1, st.just(Invalid())),
    }
    names = [name for name, (weight, _) in weights.items() for _ in range(weight)]
    operations = st.sampled_from(names).flatmap(lambda name: weights[name][1])
    return st.lists(operations, min_size=20, max_size=80)


# ------------------------------------------------------------------ the harness


@dataclass
class Started:
    """A start, with the policy figures in force when it happened."""

    at: datetime
    start: LoopStart
    cooldown: timedelta
    daily_budget: float
    spent_after: float
    cost: CostModel


@dataclass
class Harness:
    """Runs a history against CoordinatorRules, checking step-level invariants as it goes."""

    rules: CoordinatorRules
    now: datetime = T0
    starts: list[Started] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)
    sent_ids: list[str] = field(default_factory=list)
    closed: set[str] = field(default_factory=set)

    @classmethod
    def run(cls, policy: TriggerPolicy, ops: list[Op]) -> Harness:
        harness = cls(CoordinatorRules(new_state(MODEL, policy)))
        for op in ops:
            harness.apply(op)
            harness.check_state()
        return harness

    # -------------------------------------------------------------- operations

    def apply(self, op: Op) -> None:
        rules = self.rules
        match op:
            case Send():
                self.send(op)
            case Advance(minutes):
                self.advance_to(self.now + timedelta(minutes=minutes))
            case Wake():
                wakeup = rules.next_wakeup()
                if wakeup is not None:
                    self.advance_to(max(wakeup, self.now))
            case Close(status, actual_cost):
                active = rules.state.active_loop
                if active is not None:
                    result = LoopResult(
                        loop_id=active.loop_id, status=status, actual_cost=actual_cost
                    )
                    self.closed.add(active.loop_id)
                    self.record(rules.on_loop_closed(result, self.now))
            case CloseStale():
                before = rules.state.model_dump()
                stale_ids = [*sorted(self.closed), f"retrain-{MODEL}-999"]
                for loop_id in stale_ids:
                    result = LoopResult(loop_id=loop_id, status=LoopStatus.FAILED, actual_cost=7)
                    assert rules.on_loop_closed(result, self.now) == Step()
                assert rules.state.model_dump() == before, "a stale loop report changed state"
            case Pause():
                self.record(rules.set_paused(True, "hypothesis", self.now))
            case Resume():
                self.record(rules.set_paused(False, "", self.now))
            case SetPolicy(policy):
                self.record(rules.set_policy(policy, self.now))
            case Invalid():
                exclude = {
                    "decisions",
                    "decision_seq",
                    "events_received",
                    "unarchived",
                    "decisions_dropped",
                }
                before = rules.state.model_dump(exclude=exclude)
                step = self.record(rules.on_invalid_trigger({"event_id": "bad"}, "bad", self.now))
                assert [(d.action, d.reason) for d in step.decisions] == [
                    (Action.IGNORE, Reason.INVALID_TRIGGER)
                ]
                assert rules.state.model_dump(exclude=exclude) == before

    def send(self, op: Send) -> None:
        rules = self.rules
        if op.reuse is not None and self.sent_ids:
            event_id = self.sent_ids[op.reuse % len(self.sent_ids)]
        else:
            event_id = f"e{len(self.sent_ids)}"
        self.sent_ids.append(event_id)
        paused, duplicate = rules.state.paused, event_id in self.accepted
        step = self.record(rules.on_trigger(build_event(op, event_id), self.now))
        assert len(step.decisions) == 1, "a trigger yields exactly one decision"
        decision = step.decision
        assert event_id in decision.event_ids
        if paused:
            assert (decision.action, decision.reason) == (Action.SUPPRESS, Reason.PAUSED)
        elif duplicate:
            assert (decision.action, decision.reason) == (Action.IGNORE, Reason.DUPLICATE_EVENT)
        else:
            assert decision.reason not in NOT_ACCEPTED
            self.accepted.append(event_id)
        if paused or duplicate:
            assert step.start is None and step.notifications == []

    def advance_to(self, target: datetime) -> None:
        """Move the clock as the workflow does: wake at every due timer, then at `target`."""
        rules = self.rules
        wakeup = rules.next_wakeup()
        for _ in range(1000):
            if wakeup is None or wakeup > target:
                break
            self.now = max(self.now, wakeup)
            self.record(rules.on_timer(self.now))
            wakeup = rules.next_wakeup()
            assert wakeup is None or wakeup > self.now, "on_timer left due work behind"
        else:
            raise AssertionError("timers never settle")
        self.now = target
        self.record(rules.on_timer(self.now))

    # -------------------------------------------------------------- bookkeeping

    def record(self, step: Step) -> Step:
        for decision in step.decisions:
            expected_seq = len(self.decisions) + 1
            assert decision.seq == expected_seq, "a decision was made but not returned"
            assert decision.at == self.now
            assert decision.event_count == len(decision.event_ids)
            self.decisions.append(decision)
        start = step.start
        if start is not None:
            policy = self.rules.policy
            assert self.rules.state.active_loop is not None
            assert self.rules.state.active_loop.loop_id == start.loop_id
            assert start.number == len(self.starts) + 1
            if self.starts:
                previous = self.starts[-1].start.loop_id
                assert previous in self.closed, f"{start.loop_id} started while {previous} ran"
            [start_decision] = [d for d in step.decisions if d.action is Action.START]
            assert start_decision.event_ids == event_ids(start.trigger.events)
            assert start_decision.loop_id == start.loop_id
            assert start_decision.numbers["estimated_cost"] == start.estimated_cost
            self.starts.append(
                Started(
                    at=self.now,
                    start=start,
                    cooldown=policy.cooldown,
                    daily_budget=policy.daily_budget,
                    spent_after=self.rules.state.spent_today,
                    cost=policy.cost,
                )
            )
        else:
            assert all(d.action is not Action.START for d in step.decisions)
        return step

    def check_state(self) -> None:
        """Nothing waits without a way to be woken up."""
        state = self.rules.state
        assert (state.deferred is None) == (state.deferred_until is None)
        if state.paused:
            assert self.rules.next_wakeup() is None
            return
        wakeup = self.rules.next_wakeup()
        assert wakeup is None or wakeup > self.now, "due work left after an operation"
        if state.follow_up is not None:
            assert state.active_loop is not None, "a follow-up waits for no loop"
        if state.batch is not None:
            assert len(state.batch.events) < state.policy.batch_size
            assert wakeup is not None

    # -------------------------------------------------------------- results

    def pending_ids(self) -> list[str]:
        state = self.rules.state
        pending: list[EventRef] = []
        for request in (state.batch, state.deferred, state.follow_up):
            if request is not None:
                pending.extend(request.events)
        return event_ids(pending)


def event_ids(events: list[EventRef]) -> list[str]:
    return [e.event_id for e in events]


def build_event(op: Send, event_id: str) -> TriggerEvent:
    """The TriggerEvent an operation sends (validated like a real signal)."""
    raw: dict[str, Any] = {
        "kind": op.kind.value,
        "priority": op.priority,
        "event_id": event_id,
        "source": "hypothesis",
    }
    if op.kind is TriggerKind.DATA_ARRIVED:
        raw["data"] = {"uri": f"s3://bucket/part-{op.uri}", "rows": op.rows}
    elif op.kind is TriggerKind.DRIFT:
        score = op.score if op.score is not None or op.severity is not None else 0.2
        raw["drift"] = {"score": score, "severity": op.severity}
    elif op.kind is TriggerKind.ALARM:
        raw["alarm"] = {"name": f"alarm-{op.uri}", "state": op.alarm_state}
    elif op.kind is TriggerKind.PERFORMANCE:
        raw["performance"] = {
            "severity": op.severity or "medium",
            "metric": "accuracy",
            "reference": 0.9,
            "current": 0.9 - (op.score or 0.1),
        }
    return parse_trigger(raw)


def bypassed_cooldown(start: LoopStart) -> bool:
    """The started request carried a priority <= 2 drift or performance event (the only
    cooldown bypasses)."""
    urgent = (TriggerKind.DRIFT, TriggerKind.PERFORMANCE)
    return any(e.kind in urgent and e.priority <= 2 for e in start.trigger.events)


# ------------------------------------------------------------------ properties


@PROPERTY_SETTINGS
@given(policy=LOOSE_LIMITS, ops=history_strategy(LOOSE_LIMITS))
def test_no_two_starts_inside_the_cooldown_without_bypass(
    policy: TriggerPolicy, ops: list[Op]
) -> None:
    """(a) Two consecutive starts closer than the cooldown in force at the later one only
    happen when the later start answers a priority <= 2 drift event."""
    harness = Harness.run(policy, ops)
    for previous, later in pairwise(harness.starts):
        if later.at - previous.at < later.cooldown:
            assert bypassed_cooldown(later.start), (previous.at, later.at, later.start.trigger)


@PROPERTY_SETTINGS
@given(policy=BINDING_LIMITS, ops=history_strategy(BINDING_LIMITS))
def test_never_over_budget_without_priority_1(policy: TriggerPolicy, ops: list[Op]) -> None:
    """(b) At every start, spent_today + estimate <= daily_budget unless the request is
    priority 1 (spent_after is the day's spend including this start's estimate).

    The estimate is the one the rules charged; that it can miss absorbed data is the known bug
    of test_start_estimate_prices_all_the_loops_data."""
    harness = Harness.run(policy, ops)
    for started in harness.starts:
        if started.start.trigger.priority != 1:
            assert started.spent_after <= started.daily_budget + EPSILON, started


@PROPERTY_SETTINGS
@given(policy=BINDING_LIMITS, ops=history_strategy(BINDING_LIMITS))
def test_every_accepted_event_ends_in_exactly_one_place(
    policy: TriggerPolicy, ops: list[Op]
) -> None:
    """(c) Every accepted event id is in exactly one started loop, or exactly one terminal
    decision, or still pending (batch, deferred, follow-up): nothing lost, nothing twice."""
    harness = Harness.run(policy, ops)
    places: Counter[str] = Counter()
    for started in harness.starts:
        places.update(event_ids(started.start.trigger.events))
    for decision in harness.decisions:
        terminal = decision.action in TERMINAL_ACTIONS and decision.action is not Action.START
        if terminal and decision.reason not in NOT_ACCEPTED:
            places.update(decision.event_ids)
    places.update(harness.pending_ids())
    assert places == Counter(harness.accepted)
    assert len(set(harness.accepted)) == len(harness.accepted)
    assert harness.rules.state.events_accepted == len(harness.accepted)


# A history that makes a priority-2 drift start take a cooldown-deferred batch of 1M rows along.
ABSORBED_DATA_HISTORY: list[Op] = [
    Send(TriggerKind.MANUAL, priority=3, reuse=None),
    Close(LoopStatus.PROMOTED, actual_cost=None),
    Send(TriggerKind.DATA_ARRIVED, priority=3, reuse=None, rows=1_000_000),
    Send(TriggerKind.DRIFT, priority=2, reuse=None, score=0.2),
]


@PROPERTY_SETTINGS
@example(
    policy=make_policy(180, 1, 15, 2, 5, 10.0, 1.0, 3.0, True, "UTC"),
    ops=ABSORBED_DATA_HISTORY,
)
@given(policy=BINDING_LIMITS, ops=history_strategy(BINDING_LIMITS))
def test_start_estimate_prices_all_the_loops_data(policy: TriggerPolicy, ops: list[Op]) -> None:
    """The estimate charged for a start is the cost model's price of the data the loop gets.

    Known bug: a start absorbs cooldown-deferred work after rule 7 priced the request, so the
    absorbed rows are neither priced nor budget-checked (see the rules unit tests).
    """
    harness = Harness.run(policy, ops)
    for started in harness.starts:
        rows = sum(d.rows or 0 for d in started.start.trigger.data)
        assert started.start.estimated_cost == started.cost.estimate(rows), started
