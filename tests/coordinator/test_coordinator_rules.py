"""Unit tests of the pure coordinator rules (no Temporal, no asyncio), one group per rule.

Times are timezone-aware datetimes advanced by hand; every test asserts the action, the
reason and the numbers recorded in the Decision.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from workflows.coordinator.models import (
    DECISIONS_KEPT,
    EVENT_IDS_PER_LOGGED_DECISION,
    Action,
    LoopStart,
    Reason,
)
from workflows.coordinator.policy import CostModel, TriggerPolicy
from workflows.coordinator.rules import CoordinatorRules, Step, new_state
from workflows.coordinator.triggers import Severity, TriggerEvent, TriggerKind, parse_trigger
from workflows.loop.models import LoopResult, LoopStatus

MODEL = "churn"
T0 = datetime(2024, 6, 3, 9, 0, tzinfo=UTC)  # a Monday morning, UTC


def at(**delta: float) -> datetime:
    """T0 plus a delta, e.g. at(hours=2, minutes=30)."""
    return T0 + timedelta(**delta)


def make_rules(**policy: Any) -> CoordinatorRules:
    """Fresh rules for MODEL with a policy built from `policy` (validated like user input)."""
    return CoordinatorRules(new_state(MODEL, TriggerPolicy.model_validate(policy)))


def event(kind: str, event_id: str | None, priority: int = 3, **details: Any) -> TriggerEvent:
    """A validated trigger event."""
    raw: dict[str, Any] = {"kind": kind, "priority": priority, **details}
    if event_id is not None:
        raw["event_id"] = event_id
    return parse_trigger(raw)


def data(
    event_id: str, uri: str | None = None, rows: int | None = None, priority: int = 3
) -> TriggerEvent:
    """A data_arrived event for `uri` (defaults to one uri per event)."""
    return event(
        "data_arrived",
        event_id,
        priority,
        data={"uri": uri or f"s3://bucket/{event_id}", "rows": rows},
    )


def drift(
    event_id: str | None, score: float | None = None, severity: str | None = None, priority: int = 3
) -> TriggerEvent:
    """A drift event with a score and/or an explicit severity."""
    signal: dict[str, Any] = {"features": ["age", "income"]}
    if score is not None:
        signal["score"] = score
    if severity is not None:
        signal["severity"] = severity
    return event("drift", event_id, priority, drift=signal)


def manual(event_id: str, priority: int = 3) -> TriggerEvent:
    return event("manual", event_id, priority)


def scheduled(event_id: str, priority: int = 3) -> TriggerEvent:
    return event("scheduled", event_id, priority)


def alarm(event_id: str, state: str = "ALARM", priority: int = 3) -> TriggerEvent:
    return event("alarm", event_id, priority, alarm={"name": f"alarm-{event_id}", "state": state})


def started(step: Step) -> LoopStart:
    """The LoopStart of a step that must have started a loop."""
    assert step.start is not None, f"expected a start, got {step.decisions}"
    return step.start


def close(rules: CoordinatorRules, now: datetime, **result: Any) -> Step:
    """Close the active loop (default: promoted, no actual cost)."""
    active = rules.state.active_loop
    assert active is not None
    return rules.on_loop_closed(
        LoopResult(
            loop_id=active.loop_id, status=result.pop("status", LoopStatus.PROMOTED), **result
        ),
        now,
    )


def start_and_close(rules: CoordinatorRules, event_id: str, now: datetime) -> LoopStart:
    """Start a loop with a manual trigger at `now` and close it right away."""
    start = started(rules.on_trigger(manual(event_id), now))
    close(rules, now)
    return start


def ids(start: LoopStart) -> list[str]:
    return [e.event_id for e in start.trigger.events]


def uris(start: LoopStart) -> set[str]:
    return {d.uri for d in start.trigger.data}


# ------------------------------------------------------------------ basics


def test_first_trigger_starts_a_loop_and_records_it() -> None:
    """Rule 9: with nothing in the way, a trigger starts loop 1 and the decision says why."""
    rules = make_rules()
    step = rules.on_trigger(scheduled("s1", priority=4), T0)
    start = started(step)
    decision = step.decision
    assert (decision.action, decision.reason, decision.origin) == (
        Action.START,
        Reason.ELIGIBLE,
        "direct",
    )
    assert decision.seq == 1 and decision.at == T0
    assert decision.event_ids == ["s1"] and decision.event_count == 1
    assert decision.kinds == [TriggerKind.SCHEDULED] and decision.priority == 4
    assert decision.loop_id == start.loop_id == f"retrain-{MODEL}-1"
    assert decision.numbers == {
        "estimated_cost": 1.0,
        "trainings_today": 1,
        "spent_today": 1.0,
        "data_uris": 0,
        "cooldown": "6h",
    }
    assert start.number == 1 and start.estimated_cost == 1.0
    assert start.trigger.origin == "direct" and start.trigger.priority == 4
    state = rules.state
    assert state.active_loop is not None and state.active_loop.loop_id == start.loop_id
    assert state.last_started_at == T0 and state.trainings_today == 1
    assert state.day == date(2024, 6, 3) and state.events_accepted == 1
    assert state.decisions == [decision]


def test_nothing_pending_means_no_wakeup_and_empty_timer() -> None:
    """With nothing buffered or deferred there is no timer and on_timer does nothing."""
    rules = make_rules()
    assert rules.next_wakeup() is None
    assert rules.on_timer(at(hours=1)) == Step()


def test_auto_event_ids_are_assigned_and_never_deduplicated() -> None:
    """Events without an id get auto-N ids, so two identical id-less events are both accepted."""
    rules = make_rules()
    first = rules.on_trigger(drift(None, score=0.01), T0).decision
    second = rules.on_trigger(drift(None, score=0.01), T0).decision
    assert first.event_ids == ["auto-1"] and second.event_ids == ["auto-2"]
    assert second.reason is Reason.DRIFT_LOW
    assert rules.state.events_accepted == 2


# ------------------------------------------------------------------ rule 1: paused


def test_paused_suppresses_and_does_not_accept_the_event() -> None:
    """Rule 1: while paused every trigger is suppressed; its id is not remembered."""
    rules = make_rules()
    assert rules.set_paused(True, "maintenance", T0) == Step()
    decision = rules.on_trigger(manual("m1", priority=1), T0).decision
    assert (decision.action, decision.reason) == (Action.SUPPRESS, Reason.PAUSED)
    assert "maintenance" in decision.message
    assert decision.event_ids == ["m1"] and decision.priority == 1
    assert "m1" not in rules.state.seen_events
    assert rules.state.events_accepted == 0 and rules.state.active_loop is None

    rules.set_paused(False, "", at(minutes=1))
    assert rules.state.paused_reason is None
    again = rules.on_trigger(manual("m1"), at(minutes=2))
    assert again.decision.action is Action.START


def test_paused_without_reason_says_so() -> None:
    """A pause without a reason is reported as such."""
    rules = make_rules()
    rules.set_paused(True, "", T0)
    assert rules.state.paused_reason is None
    decision = rules.on_trigger(scheduled("s1"), T0).decision
    assert "no reason given" in decision.message


def test_paused_comes_before_duplicate() -> None:
    """Rule 1 before rule 2: a duplicate sent while paused is reported as paused."""
    rules = make_rules()
    rules.on_trigger(drift("d1", score=0.0), T0)
    rules.set_paused(True, "x", T0)
    assert rules.on_trigger(drift("d1", score=0.0), T0).decision.reason is Reason.PAUSED


# ------------------------------------------------------------------ rule 2: duplicates


def test_duplicate_event_id_is_ignored() -> None:
    """Rule 2: an id already accepted is ignored, recording when it was first seen."""
    rules = make_rules()
    rules.on_trigger(manual("m1"), T0)
    step = rules.on_trigger(manual("m1", priority=1), at(minutes=5))
    decision = step.decision
    assert (decision.action, decision.reason) == (Action.IGNORE, Reason.DUPLICATE_EVENT)
    assert decision.event_ids == ["m1"]
    assert decision.numbers == {"first_seen_at": T0.isoformat()}
    assert step.start is None and step.notifications == []
    assert rules.state.events_accepted == 1 and rules.state.loops_started == 1


def test_duplicate_across_kinds_is_ignored() -> None:
    """The dedup key is the id alone, whatever the kind."""
    rules = make_rules(batch_size=5)
    rules.on_trigger(data("x"), T0)
    assert rules.on_trigger(scheduled("x"), T0).decision.reason is Reason.DUPLICATE_EVENT
    assert rules.state.batch is not None and len(rules.state.batch.events) == 1


def test_dedup_window_evicts_by_count() -> None:
    """Beyond dedup_max_events remembered ids, the oldest is forgotten and accepted again."""
    rules = make_rules(dedup_max_events=100)
    for n in range(101):
        rules.on_trigger(drift(f"e{n}", score=0.0), T0)
    assert len(rules.state.seen_events) == 100
    assert "e0" not in rules.state.seen_events
    assert rules.on_trigger(drift("e100", score=0.0), T0).decision.reason is Reason.DUPLICATE_EVENT
    assert rules.on_trigger(drift("e1", score=0.0), T0).decision.reason is Reason.DUPLICATE_EVENT
    assert rules.on_trigger(drift("e0", score=0.0), T0).decision.reason is Reason.DRIFT_LOW


def test_dedup_window_evicts_by_time() -> None:
    """Ids older than dedup_window are forgotten; younger ones are still duplicates."""
    rules = make_rules(dedup_window="1h")
    rules.on_trigger(drift("old", score=0.0), T0)
    rules.on_trigger(drift("young", score=0.0), at(minutes=30))
    rules.on_trigger(drift("new", score=0.0), at(minutes=61))
    assert list(rules.state.seen_events) == ["young", "new"]
    assert rules.on_trigger(drift("old", score=0.0), at(minutes=62)).decision.reason is (
        Reason.DRIFT_LOW
    )
    assert rules.on_trigger(drift("young", score=0.0), at(minutes=62)).decision.reason is (
        Reason.DUPLICATE_EVENT
    )


def test_dedup_window_applies_without_other_traffic() -> None:
    """An id seen longer ago than dedup_window is accepted again, whatever came in between."""
    rules = make_rules(dedup_window="1h")
    rules.on_trigger(drift("a", score=0.0), T0)
    decision = rules.on_trigger(drift("a", score=0.0), at(hours=2)).decision
    assert decision.reason is Reason.DRIFT_LOW


# ------------------------------------------------------------------ rule 3: batching


def test_data_arrived_is_buffered_with_its_numbers() -> None:
    """Rule 3: a data event below batch_size is buffered; the timer is the debounce window."""
    rules = make_rules(batch_size=3, batch_window="15m", max_wait="2h")
    step = rules.on_trigger(data("d1", rows=100), T0)
    decision = step.decision
    assert (decision.action, decision.reason) == (Action.BUFFER, Reason.BATCH_BUFFERED)
    assert decision.numbers == {
        "batch_events": 1,
        "batch_size": 3,
        "fires_at": at(minutes=15).isoformat(),
    }
    assert step.start is None
    assert rules.next_wakeup() == at(minutes=15)
    assert rules.state.events_accepted == 1


def test_batch_fires_at_batch_size_with_every_uri() -> None:
    """The batch_size-th event fires the batch: one loop carries every event and every uri."""
    rules = make_rules(
        batch_size=3,
        cost=CostModel(hourly_rate=2.0, base_hours=1.0, hours_per_million_rows=1.0),
    )
    rules.on_trigger(data("d1", uri="s3://a", rows=500_000, priority=4), T0)
    rules.on_trigger(data("d2", uri="s3://b", rows=1_500_000, priority=2), at(minutes=1))
    step = rules.on_trigger(data("d3", uri="s3://a", rows=500_000, priority=5), at(minutes=2))
    start = started(step)
    decision = step.decision
    assert (decision.action, decision.reason, decision.origin) == (
        Action.START,
        Reason.ELIGIBLE,
        "batch_full",
    )
    assert decision.event_ids == ["d1", "d2", "d3"] and decision.event_count == 3
    assert decision.priority == 2  # the most urgent event of the batch
    # Same uri twice is one data object; rows 0.5M + 1.5M -> 2 * (1 + 2) = 6.
    assert uris(start) == {"s3://a", "s3://b"}
    assert decision.numbers["data_uris"] == 2
    assert decision.numbers["estimated_cost"] == 6.0 == start.estimated_cost
    assert ids(start) == ["d1", "d2", "d3"]
    assert start.trigger.origin == "batch_full" and start.trigger.priority == 2
    assert rules.state.batch is None and rules.next_wakeup() is None


def test_batch_fires_when_debounce_window_expires() -> None:
    """Each event pushes the window; on_timer fires exactly at the latest event + window."""
    rules = make_rules(batch_size=10, batch_window="15m", max_wait="2h")
    rules.on_trigger(data("d1"), T0)
    rules.on_trigger(data("d2"), at(minutes=10))
    assert rules.next_wakeup() == at(minutes=25)
    assert rules.on_timer(at(minutes=24, seconds=59)) == Step()
    step = rules.on_timer(at(minutes=25))
    start = started(step)
    assert (step.decision.action, step.decision.origin) == (Action.START, "batch_window")
    assert ids(start) == ["d1", "d2"]
    assert uris(start) == {"s3://bucket/d1", "s3://bucket/d2"}
    assert rules.state.batch is None


def test_batch_is_capped_by_max_wait_even_if_events_keep_coming() -> None:
    """A stream of events every 10 min never lets the 15-min window expire; max_wait fires it."""
    rules = make_rules(batch_size=100, batch_window="15m", max_wait="40m")
    for n, minute in enumerate((0, 10, 20, 30)):
        step = rules.on_trigger(data(f"d{n}"), at(minutes=minute))
        assert step.decision.action is Action.BUFFER
        assert rules.next_wakeup() == min(at(minutes=minute + 15), at(minutes=40))
        assert rules.on_timer(at(minutes=minute + 5)) == Step()
    step = rules.on_timer(at(minutes=40))
    start = started(step)
    assert (step.decision.action, step.decision.origin) == (Action.START, "batch_max_wait")
    assert ids(start) == ["d0", "d1", "d2", "d3"]
    assert len(uris(start)) == 4
    assert step.decision.numbers["data_uris"] == 4


def test_a_new_batch_opens_after_one_fires() -> None:
    """After a batch fires, the next data event opens a fresh batch with its own timers."""
    rules = make_rules(batch_size=2, cooldown="0s")
    rules.on_trigger(data("d1"), T0)
    started(rules.on_trigger(data("d2"), T0))
    rules.on_trigger(data("d3"), at(minutes=30))
    batch = rules.state.batch
    assert batch is not None and [e.event_id for e in batch.events] == ["d3"]
    assert batch.opened_at == at(minutes=30)


# ------------------------------------------------------------------ rule 4: drift, alarms


@pytest.mark.parametrize(
    ("score", "severity", "action", "reason"),
    [
        (0.05, Severity.LOW, Action.IGNORE, Reason.DRIFT_LOW),
        (0.1, Severity.MEDIUM, Action.START, Reason.ELIGIBLE),
        (0.3, Severity.HIGH, Action.START, Reason.ELIGIBLE),
        (0.5, Severity.CRITICAL, Action.ESCALATE, Reason.DRIFT_CRITICAL),
    ],
)
def test_drift_routing_by_score(
    score: float, severity: Severity, action: Action, reason: Reason
) -> None:
    """Rule 4: the score is mapped through severity_cut_points and routed by severity."""
    rules = make_rules()
    step = rules.on_trigger(drift("d1", score=score), T0)
    decision = step.decision
    assert (decision.action, decision.reason) == (action, reason)
    if action is Action.START:
        assert started(step).trigger.drift_severity is severity
    else:
        assert step.start is None
        assert decision.numbers == {
            "score": score,
            "severity": severity.value,
            "severity_from_score": severity.value,
            "drifted_features": 2,
        }


@pytest.mark.parametrize("score", [0.2, 0.4])
def test_drift_start_records_the_drift_numbers(score: float) -> None:
    """A start (or deferral) caused by drift records the score and severity behind it."""
    rules = make_rules()
    decision = rules.on_trigger(drift("d1", score=score), T0).decision
    assert decision.action is Action.START
    assert decision.numbers["score"] == score
    assert decision.numbers["severity"] in ("medium", "high")


def test_drift_cut_points_come_from_the_policy() -> None:
    """Custom cut points change the severity a score maps to."""
    rules = make_rules(severity_cut_points=(0.2, 0.4, 0.8), auto_retrain=False)
    medium = rules.on_trigger(drift("a", score=0.35), T0).decision
    assert medium.reason is Reason.AUTO_RETRAIN_OFF  # 0.35 would be high with the defaults
    assert medium.numbers["severity"] == "medium"
    step = rules.on_trigger(drift("b", score=0.7), T0)
    assert started(step).trigger.drift_severity is Severity.HIGH
    assert step.decision.requires_approval


def test_explicit_severity_wins_over_the_score() -> None:
    """An explicit severity overrides the one derived from the score; both are recorded."""
    rules = make_rules()
    decision = rules.on_trigger(drift("d1", score=0.01, severity="critical"), T0).decision
    assert (decision.action, decision.reason) == (Action.ESCALATE, Reason.DRIFT_CRITICAL)
    assert decision.numbers["severity"] == "critical"
    assert decision.numbers["severity_from_score"] == "low"
    step = rules.on_trigger(drift("d2", score=0.6, severity="low"), T0)
    assert (step.decision.action, step.decision.reason) == (Action.IGNORE, Reason.DRIFT_LOW)
    assert step.decision.numbers["severity_from_score"] == "critical"


def test_drift_with_severity_only() -> None:
    """A severity without a score records no score."""
    rules = make_rules()
    decision = rules.on_trigger(drift("d1", severity="low"), T0).decision
    assert (decision.action, decision.reason) == (Action.IGNORE, Reason.DRIFT_LOW)
    assert decision.numbers["score"] is None
    assert decision.numbers["severity_from_score"] is None
    assert rules.state.events_accepted == 1


def test_medium_drift_starts_without_approval_when_auto_retrain() -> None:
    """Medium drift retrains when auto_retrain is on, with no approval and no notification."""
    rules = make_rules(auto_retrain=True)
    step = rules.on_trigger(drift("d1", severity="medium"), T0)
    start = started(step)
    assert not step.decision.requires_approval and not start.trigger.requires_approval
    assert start.trigger.drift_severity is Severity.MEDIUM
    assert step.notifications == []


def test_medium_drift_is_suppressed_when_auto_retrain_is_off() -> None:
    """Medium drift with auto_retrain off is suppressed (auto_retrain_off)."""
    rules = make_rules(auto_retrain=False)
    step = rules.on_trigger(drift("d1", score=0.2), T0)
    assert (step.decision.action, step.decision.reason) == (
        Action.SUPPRESS,
        Reason.AUTO_RETRAIN_OFF,
    )
    assert step.decision.numbers["severity"] == "medium"
    assert step.start is None and rules.state.active_loop is None


def test_high_drift_starts_with_approval_and_notifies() -> None:
    """High drift starts (even with auto_retrain off) with approval required, and notifies."""
    rules = make_rules(auto_retrain=False)
    step = rules.on_trigger(drift("d1", score=0.35), T0)
    start = started(step)
    decision = step.decision
    assert (decision.action, decision.reason) == (Action.START, Reason.ELIGIBLE)
    assert decision.requires_approval and "approval required" in decision.message
    assert start.trigger.requires_approval
    assert start.trigger.approval_reasons == ["high drift (score 0.35)"]
    assert start.trigger.drift_severity is Severity.HIGH
    assert start.trigger.drift is not None and start.trigger.drift.score == 0.35
    assert rules.state.active_loop is not None and rules.state.active_loop.requires_approval
    [note] = step.notifications
    assert note.level == "warning" and note.decision_seq == decision.seq
    assert note.key == f"{MODEL}-decision-{decision.seq}" and note.model == MODEL
    assert "high drift" in note.subject and "start" in note.body


def test_high_drift_deferred_by_cooldown_still_notifies() -> None:
    """The high-drift notification reports the decision actually taken (here: defer)."""
    rules = make_rules()
    start_and_close(rules, "m0", T0)
    step = rules.on_trigger(drift("d1", score=0.4), at(hours=1))
    assert (step.decision.action, step.decision.reason) == (Action.DEFER, Reason.COOLDOWN)
    assert step.decision.requires_approval
    [note] = step.notifications
    assert "defer" in note.body


def test_critical_drift_escalates_and_blocks_automation_until_manual() -> None:
    """Critical drift escalates with a notification; automatic triggers are then suppressed
    (human_review_pending) until a manual trigger, which starts with approval required."""
    rules = make_rules(batch_size=1, cooldown="0s")
    step = rules.on_trigger(drift("crit", score=0.9), T0)
    assert (step.decision.action, step.decision.reason) == (Action.ESCALATE, Reason.DRIFT_CRITICAL)
    assert step.start is None
    [note] = step.notifications
    assert note.level == "critical" and note.decision_seq == step.decision.seq
    assert "age, income" in note.body
    assert rules.state.review is not None and rules.state.review.event_id == "crit"
    assert rules.status(T0).review_pending

    for n, automatic in enumerate(
        [
            scheduled("s", priority=1),
            drift("high", score=0.4, priority=1),
            drift("medium", score=0.2, priority=2),
            alarm("a", priority=1),
            data("d", priority=1),
        ]
    ):
        step = rules.on_trigger(automatic, at(minutes=n + 1))
        assert (step.decision.action, step.decision.reason) == (
            Action.SUPPRESS,
            Reason.HUMAN_REVIEW_PENDING,
        ), automatic.kind
        assert "crit" in step.decision.message
        assert step.start is None
    # Another critical drift keeps (renews) the block.
    assert rules.on_trigger(drift("crit2", severity="critical"), at(minutes=9)).decision.action is (
        Action.ESCALATE
    )

    step = rules.on_trigger(manual("human"), at(minutes=10))
    start = started(step)
    assert step.decision.requires_approval and start.trigger.requires_approval
    assert start.trigger.approval_reasons == ["manual override of critical drift review (crit2)"]
    assert rules.state.review is None
    close(rules, at(minutes=11))
    # Automation is back.
    assert rules.on_trigger(scheduled("after"), at(minutes=12)).decision.action is Action.START


@pytest.mark.parametrize("state", ["OK", "INSUFFICIENT_DATA"])
def test_alarm_not_firing_is_ignored(state: str) -> None:
    """An alarm in state OK or INSUFFICIENT_DATA is ignored (accepted, no loop)."""
    rules = make_rules()
    step = rules.on_trigger(alarm("a1", state=state), T0)
    assert (step.decision.action, step.decision.reason) == (Action.IGNORE, Reason.ALARM_NOT_FIRING)
    assert state in step.decision.message
    assert step.start is None and rules.state.events_accepted == 1


def test_firing_alarm_starts_a_loop_naming_the_alarm() -> None:
    """A firing alarm goes through rules 5-9 and its name reaches the loop."""
    rules = make_rules()
    start = started(rules.on_trigger(alarm("a1"), T0))
    assert start.trigger.alarms == ["alarm-a1"]
    assert start.trigger.kinds == [TriggerKind.ALARM]


# ------------------------------------------------------------------ rule 5: cooldown


def test_cooldown_defers_then_starts_when_it_ends() -> None:
    """Rule 5: inside the cooldown a trigger is deferred to last start + cooldown, and on_timer
    at that moment re-evaluates and starts it (origin deferred)."""
    rules = make_rules(cooldown="6h")
    start_and_close(rules, "m0", T0)
    step = rules.on_trigger(scheduled("s1"), at(hours=2))
    decision = step.decision
    assert (decision.action, decision.reason) == (Action.DEFER, Reason.COOLDOWN)
    assert decision.numbers == {
        "cooldown_until": at(hours=6).isoformat(),
        "cooldown_remaining_s": 4 * 3600.0,
    }
    assert rules.state.deferred_until == at(hours=6)
    assert rules.next_wakeup() == at(hours=6)
    status = rules.status(at(hours=2))
    assert status.cooldown_until == at(hours=6)
    assert status.deferred is not None and status.deferred.until == at(hours=6)

    assert rules.on_timer(at(hours=6) - timedelta(seconds=1)) == Step()
    step = rules.on_timer(at(hours=6))
    start = started(step)
    assert (step.decision.action, step.decision.reason, step.decision.origin) == (
        Action.START,
        Reason.ELIGIBLE,
        "deferred",
    )
    assert ids(start) == ["s1"] and start.trigger.origin == "deferred"
    assert rules.state.deferred is None and rules.state.deferred_until is None
    assert rules.state.last_started_at == at(hours=6)


def test_deferrals_coalesce_into_one_start() -> None:
    """Several deferred triggers start one loop with the highest priority and all the data."""
    rules = make_rules(cooldown="6h", batch_size=1)
    start_and_close(rules, "m0", T0)
    rules.on_trigger(scheduled("s1", priority=4), at(hours=1))
    rules.on_trigger(data("d1", priority=3), at(hours=2))
    rules.on_trigger(alarm("a1", priority=5), at(hours=3))
    assert rules.state.deferred is not None and len(rules.state.deferred.events) == 3
    start = started(rules.on_timer(at(hours=6)))
    assert ids(start) == ["s1", "d1", "a1"]
    assert start.trigger.priority == 3
    assert uris(start) == {"s3://bucket/d1"} and start.trigger.alarms == ["alarm-a1"]


@pytest.mark.parametrize("priority", [1, 2])
def test_urgent_drift_bypasses_cooldown_and_takes_deferred_work(priority: int) -> None:
    """Drift at priority <= 2 starts inside the cooldown; deferred work rides along."""
    rules = make_rules(cooldown="6h")
    start_and_close(rules, "m0", T0)
    rules.on_trigger(scheduled("s1"), at(hours=1))
    step = rules.on_trigger(drift("d1", score=0.2, priority=priority), at(hours=2))
    start = started(step)
    assert (step.decision.action, step.decision.origin) == (Action.START, "direct")
    assert set(ids(start)) == {"s1", "d1"}
    assert step.decision.event_count == 2
    assert rules.state.deferred is None and rules.next_wakeup() is None


def test_drift_at_priority_3_does_not_bypass_cooldown() -> None:
    """Only drift at priority <= 2 bypasses the cooldown."""
    rules = make_rules(cooldown="6h")
    start_and_close(rules, "m0", T0)
    decision = rules.on_trigger(drift("d1", score=0.4, priority=3), at(hours=1)).decision
    assert (decision.action, decision.reason) == (Action.DEFER, Reason.COOLDOWN)


@pytest.mark.parametrize("make", [manual, scheduled, alarm])
def test_other_kinds_at_priority_1_do_not_bypass_cooldown(make: Any) -> None:
    """Manual, scheduled and alarm triggers are deferred even at priority 1."""
    rules = make_rules(cooldown="6h")
    start_and_close(rules, "m0", T0)
    decision = rules.on_trigger(make("x", priority=1), at(hours=1)).decision
    assert (decision.action, decision.reason) == (Action.DEFER, Reason.COOLDOWN)


def test_zero_cooldown_never_defers() -> None:
    """A zero cooldown means back-to-back starts are allowed."""
    rules = make_rules(cooldown="0s")
    start_and_close(rules, "m0", T0)
    assert rules.on_trigger(scheduled("s1"), T0).decision.action is Action.START
    assert rules.status(T0).cooldown_until is None


def test_cooldown_is_checked_before_the_active_loop() -> None:
    """Rule 5 before rule 8: inside the cooldown a running loop still means defer(cooldown);
    when the cooldown ends and the loop still runs, the work becomes the follow-up."""
    rules = make_rules(cooldown="1h")
    started(rules.on_trigger(manual("m0"), T0))
    assert rules.on_trigger(scheduled("s1"), at(minutes=10)).decision.reason is Reason.COOLDOWN
    step = rules.on_timer(at(hours=1))
    assert (step.decision.action, step.decision.reason, step.decision.origin) == (
        Action.DEFER,
        Reason.LOOP_ACTIVE,
        "deferred",
    )
    assert rules.state.follow_up is not None and rules.next_wakeup() is None


# ------------------------------------------------------------------ rule 6: daily limit


@pytest.mark.parametrize(
    ("priority", "action"),
    [(1, Action.START), (2, Action.START), (3, Action.SUPPRESS), (5, Action.SUPPRESS)],
)
def test_daily_limit(priority: int, action: Action) -> None:
    """Rule 6: at max_daily_trainings, priority > 2 is suppressed; priority <= 2 passes."""
    rules = make_rules(cooldown="0s", max_daily_trainings=1)
    start_and_close(rules, "m0", T0)
    step = rules.on_trigger(manual("m1", priority=priority), at(hours=1))
    assert step.decision.action is action
    if action is Action.SUPPRESS:
        assert step.decision.reason is Reason.DAILY_LIMIT
        assert step.decision.numbers == {"trainings_today": 1, "max_daily_trainings": 1}
        assert step.start is None
    else:
        assert step.decision.numbers["trainings_today"] == 2


def test_zero_daily_trainings_blocks_normal_priority_from_the_start() -> None:
    """max_daily_trainings=0 suppresses every priority > 2 trigger."""
    rules = make_rules(max_daily_trainings=0)
    decision = rules.on_trigger(scheduled("s1"), T0).decision
    assert (decision.action, decision.reason) == (Action.SUPPRESS, Reason.DAILY_LIMIT)
    assert decision.numbers == {"trainings_today": 0, "max_daily_trainings": 0}


# ------------------------------------------------------------------ rule 7: budget


@pytest.mark.parametrize(
    ("priority", "action"), [(1, Action.START), (2, Action.SUPPRESS), (4, Action.SUPPRESS)]
)
def test_daily_budget(priority: int, action: Action) -> None:
    """Rule 7: spent + estimate > budget suppresses priority > 1; priority 1 passes."""
    rules = make_rules(cooldown="0s", max_daily_trainings=10, daily_budget=2.5)
    start_and_close(rules, "m0", T0)
    start_and_close(rules, "m1", T0)
    step = rules.on_trigger(manual("m2", priority=priority), at(hours=1))
    assert step.decision.action is action
    if action is Action.SUPPRESS:
        assert step.decision.reason is Reason.DAILY_BUDGET
        assert step.decision.numbers == {
            "estimated_cost": 1.0,
            "spent_today": 2.0,
            "daily_budget": 2.5,
        }
    else:
        assert step.decision.numbers["spent_today"] == 3.0
        assert rules.status(at(hours=1)).budget_left == 0.0


def test_budget_exactly_reached_is_allowed() -> None:
    """spent + estimate == budget is not over budget."""
    rules = make_rules(cooldown="0s", daily_budget=2.0)
    start_and_close(rules, "m0", T0)
    assert rules.on_trigger(manual("m1", priority=5), T0).decision.action is Action.START


def test_budget_uses_the_row_based_estimate() -> None:
    """The estimate grows with the batch's rows and is checked against the budget."""
    rules = make_rules(
        batch_size=1,
        daily_budget=5.0,
        cost=CostModel(hourly_rate=1.0, base_hours=1.0, hours_per_million_rows=2.0),
    )
    decision = rules.on_trigger(data("d1", rows=3_000_000), T0).decision
    assert (decision.action, decision.reason) == (Action.SUPPRESS, Reason.DAILY_BUDGET)
    assert decision.numbers["estimated_cost"] == 7.0
    assert decision.origin == "batch_full"


def test_daily_limit_is_checked_before_the_budget() -> None:
    """Rule 6 before rule 7: over both limits, the reason is the daily limit."""
    rules = make_rules(cooldown="0s", max_daily_trainings=1, daily_budget=1.0)
    start_and_close(rules, "m0", T0)
    assert rules.on_trigger(scheduled("s1"), T0).decision.reason is Reason.DAILY_LIMIT


def test_budget_counts_deferred_data_absorbed_by_a_bypassing_start() -> None:
    """A start that takes deferred data along is priced, and budget-checked, with that data."""
    cost = CostModel(hourly_rate=1.0, base_hours=1.0, hours_per_million_rows=5.0)
    rules = make_rules(cooldown="6h", batch_size=1, daily_budget=5.0, cost=cost)
    start_and_close(rules, "m0", T0)  # spent 1.0
    deferred = rules.on_trigger(data("d1", rows=1_000_000), at(hours=1)).decision
    assert deferred.reason is Reason.COOLDOWN
    step = rules.on_trigger(drift("urgent", score=0.2, priority=2), at(hours=2))
    # Taking the 1M-row deferred work along would cost 1 + 5 = 6.0 and 1.0 + 6.0 > 5.0 at
    # priority 2: the bypassing loop starts on its own and the deferral stays pending.
    start = started(step)
    assert uris(start) == set()
    assert start.estimated_cost == cost.estimate(0)
    assert rules.state.spent_today == 2.0 <= rules.policy.daily_budget
    assert rules.state.deferred is not None
    assert [e.event_id for e in rules.state.deferred.events] == ["d1"]


def test_bypassing_start_takes_affordable_deferred_work_along() -> None:
    """When the budget allows it, the bypassing loop answers the deferred work too, priced."""
    cost = CostModel(hourly_rate=1.0, base_hours=1.0, hours_per_million_rows=1.0)
    rules = make_rules(cooldown="6h", batch_size=1, daily_budget=10.0, cost=cost)
    start_and_close(rules, "m0", T0)
    rules.on_trigger(data("d1", rows=1_000_000), at(hours=1))
    start = started(rules.on_trigger(drift("urgent", score=0.2, priority=2), at(hours=2)))
    assert uris(start) == {"s3://bucket/d1"}
    assert start.estimated_cost == cost.estimate(1_000_000) == 2.0
    assert rules.state.deferred is None and rules.state.deferred_until is None


# ------------------------------------------------------------------ rule 8: active loop


def test_active_loop_coalesces_into_one_follow_up() -> None:
    """Rule 8: while a loop runs, triggers coalesce into ONE follow-up keeping the highest
    priority and the union of data; closing the loop starts it (origin follow_up)."""
    rules = make_rules(cooldown="0s", batch_size=1)
    first = started(rules.on_trigger(manual("m0"), T0))
    expectations = [
        (manual("m1", priority=4), 1, 4),
        (data("d1", uri="s3://a", priority=5), 2, 4),
        (alarm("a1", priority=2), 3, 2),
        (data("d2", uri="s3://b", priority=3), 4, 2),
        (data("d3", uri="s3://a", priority=4), 5, 2),
    ]
    for n, (trigger, count, priority) in enumerate(expectations):
        decision = rules.on_trigger(trigger, at(minutes=n + 1)).decision
        assert (decision.action, decision.reason) == (Action.DEFER, Reason.LOOP_ACTIVE)
        assert decision.numbers == {
            "active_loop": first.loop_id,
            "follow_up_events": count,
            "follow_up_priority": priority,
        }
    assert rules.next_wakeup() is None  # a follow-up waits for the loop, not for a timer
    follow = rules.status(at(minutes=6)).follow_up
    assert follow is not None and (follow.events, follow.priority) == (5, 2)

    step = close(rules, at(hours=1), status=LoopStatus.REJECTED_BY_GATE)
    start = started(step)
    assert (step.decision.action, step.decision.origin) == (Action.START, "follow_up")
    assert ids(start) == ["m1", "d1", "a1", "d2", "d3"]
    assert start.trigger.priority == 2 and step.decision.priority == 2
    assert uris(start) == {"s3://a", "s3://b"}
    assert start.trigger.alarms == ["alarm-a1"]
    assert start.loop_id == f"retrain-{MODEL}-2"
    assert rules.state.follow_up is None
    assert rules.state.outcomes[-1].loop_id == first.loop_id
    assert rules.state.outcomes[-1].status is LoopStatus.REJECTED_BY_GATE


def test_closing_a_loop_without_follow_up_only_records_the_outcome() -> None:
    """A loop close with nothing pending records the outcome and decides nothing."""
    rules = make_rules()
    start = started(rules.on_trigger(manual("m0"), T0))
    step = close(rules, at(hours=1), status=LoopStatus.FAILED, summary="oom")
    assert step == Step()
    assert rules.state.active_loop is None
    [outcome] = rules.state.outcomes
    assert (outcome.loop_id, outcome.status, outcome.summary) == (
        start.loop_id,
        LoopStatus.FAILED,
        "oom",
    )
    assert (outcome.started_at, outcome.closed_at) == (T0, at(hours=1))


def test_stale_loop_close_does_nothing() -> None:
    """on_loop_closed for a loop that is not the active one changes nothing at all."""
    rules = make_rules(cooldown="0s")
    started(rules.on_trigger(manual("m0"), T0))
    rules.on_trigger(scheduled("s1"), T0)  # follow-up pending
    before = rules.state.model_dump()
    stale = LoopResult(loop_id=f"retrain-{MODEL}-99", status=LoopStatus.PROMOTED, actual_cost=9)
    assert rules.on_loop_closed(stale, at(days=1)) == Step()
    assert rules.state.model_dump() == before
    # And closing the real loop twice: the second report is a no-op too.
    close(rules, at(hours=1))
    after_first = rules.state.model_dump()
    assert (
        rules.on_loop_closed(LoopResult(loop_id=f"retrain-{MODEL}-1", status="failed"), at(hours=2))
        == Step()
    )
    assert rules.state.model_dump() == after_first


def test_actual_cost_corrects_spent_today() -> None:
    """The loop's actual cost replaces its estimate in today's spend."""
    rules = make_rules(cooldown="0s")
    started(rules.on_trigger(manual("m0"), T0))
    assert rules.state.spent_today == 1.0
    close(rules, at(hours=1), actual_cost=3.5)
    assert rules.state.spent_today == 3.5
    assert rules.state.outcomes[-1].estimated_cost == 1.0
    assert rules.state.outcomes[-1].actual_cost == 3.5
    started(rules.on_trigger(manual("m1"), at(hours=2)))
    close(rules, at(hours=3), actual_cost=0.25)
    assert rules.state.spent_today == pytest.approx(3.75)
    assert rules.status(at(hours=3)).budget_left == pytest.approx(50 - 3.75)


def test_actual_cost_of_yesterdays_loop_does_not_touch_today() -> None:
    """A loop started yesterday and closed today does not correct today's spend."""
    rules = make_rules(cooldown="0s")
    started(rules.on_trigger(manual("m0"), T0))
    close(rules, at(days=1), actual_cost=40.0)
    assert rules.state.day == date(2024, 6, 4)
    assert rules.state.spent_today == 0.0


# ------------------------------------------------------------------ day rollover


def test_day_rolls_over_in_the_policy_time_zone() -> None:
    """Counters reset at midnight Europe/Paris (22:00 UTC in June), not at UTC midnight."""
    rules = make_rules(cooldown="0s", max_daily_trainings=1, timezone="Europe/Paris")
    evening = datetime(2024, 6, 3, 21, 0, tzinfo=UTC)  # 23:00 in Paris
    start_and_close(rules, "m0", evening)
    assert rules.state.day == date(2024, 6, 3)
    blocked = rules.on_trigger(scheduled("s1"), evening + timedelta(minutes=30))
    assert blocked.decision.reason is Reason.DAILY_LIMIT
    step = rules.on_trigger(scheduled("s2"), evening + timedelta(hours=1))  # 00:00 Paris
    assert step.decision.action is Action.START
    assert step.decision.numbers["trainings_today"] == 1
    assert step.decision.numbers["spent_today"] == 1.0
    assert rules.state.day == date(2024, 6, 4)


def test_day_does_not_roll_over_at_paris_midnight_for_a_utc_policy() -> None:
    """Control: the same times under a UTC policy are still the same day."""
    rules = make_rules(cooldown="0s", max_daily_trainings=1)
    evening = datetime(2024, 6, 3, 21, 0, tzinfo=UTC)
    start_and_close(rules, "m0", evening)
    step = rules.on_trigger(scheduled("s2"), evening + timedelta(hours=1))
    assert step.decision.reason is Reason.DAILY_LIMIT


def test_day_rollover_resets_the_budget() -> None:
    """spent_today resets with the day; status reports the new day's full budget."""
    rules = make_rules(cooldown="0s", daily_budget=1.0)
    start_and_close(rules, "m0", T0)
    assert rules.on_trigger(manual("m1"), at(hours=1)).decision.reason is Reason.DAILY_BUDGET
    tomorrow = at(days=1)
    status = rules.status(tomorrow)
    assert (status.day, status.trainings_today, status.spent_today, status.budget_left) == (
        date(2024, 6, 4),
        0,
        0.0,
        1.0,
    )
    assert rules.state.trainings_today == 1  # status() is a view: it changes nothing
    assert rules.on_trigger(manual("m2"), tomorrow).decision.action is Action.START


# ------------------------------------------------------------------ set_policy


def test_shorter_cooldown_makes_a_deferral_due() -> None:
    """set_policy with a shorter cooldown re-evaluates the deferral right away."""
    rules = make_rules(cooldown="6h")
    start_and_close(rules, "m0", T0)
    rules.on_trigger(scheduled("s1"), at(hours=1))
    step = rules.set_policy(TriggerPolicy.model_validate({"cooldown": "2h"}), at(hours=3))
    start = started(step)
    assert (step.decision.action, step.decision.origin) == (Action.START, "deferred")
    assert ids(start) == ["s1"]
    assert rules.state.policy_version == 2


def test_shorter_cooldown_not_yet_over_moves_the_deferral() -> None:
    """A shorter cooldown that has not ended yet moves the wakeup earlier."""
    rules = make_rules(cooldown="6h")
    start_and_close(rules, "m0", T0)
    rules.on_trigger(scheduled("s1"), at(hours=1))
    assert rules.set_policy(TriggerPolicy.model_validate({"cooldown": "4h"}), at(hours=2)) == Step()
    assert rules.state.deferred_until == at(hours=4) == rules.next_wakeup()


def test_longer_cooldown_extends_the_deferral() -> None:
    """A longer cooldown pushes the deferred re-evaluation later."""
    rules = make_rules(cooldown="1h")
    start_and_close(rules, "m0", T0)
    rules.on_trigger(scheduled("s1"), at(minutes=30))
    rules.set_policy(TriggerPolicy.model_validate({"cooldown": "3h"}), at(minutes=45))
    assert rules.next_wakeup() == at(hours=3)
    assert rules.on_timer(at(hours=1)) == Step()


def test_smaller_batch_size_fires_the_batch() -> None:
    """set_policy with batch_size below the pending count fires the batch (batch_full)."""
    rules = make_rules(batch_size=10)
    for n in range(3):
        rules.on_trigger(data(f"d{n}"), at(minutes=n))
    step = rules.set_policy(TriggerPolicy.model_validate({"batch_size": 2}), at(minutes=5))
    start = started(step)
    assert (step.decision.action, step.decision.origin) == (Action.START, "batch_full")
    assert ids(start) == ["d0", "d1", "d2"]


def test_set_policy_while_paused_only_stores_it() -> None:
    """A policy applied while paused decides nothing until resume."""
    rules = make_rules(batch_size=10)
    rules.on_trigger(data("d0"), T0)
    rules.set_paused(True, "", T0)
    assert rules.set_policy(TriggerPolicy.model_validate({"batch_size": 1}), T0) == Step()
    assert rules.state.batch is not None
    step = rules.set_paused(False, "", at(minutes=1))
    assert step.decision.origin == "batch_full" and step.start is not None


# ------------------------------------------------------------------ pause / resume


def test_pause_holds_pending_timers_and_resume_fires_what_became_due() -> None:
    """Paused: no wakeup and on_timer does nothing; resume re-evaluates what became due."""
    rules = make_rules(batch_size=10, batch_window="15m", max_wait="2h")
    rules.on_trigger(data("d1"), T0)
    rules.set_paused(True, "deploy", at(minutes=1))
    assert rules.next_wakeup() is None
    assert rules.on_timer(at(minutes=30)) == Step()
    assert rules.state.batch is not None
    step = rules.set_paused(False, "", at(minutes=45))
    start = started(step)
    assert step.decision.action is Action.START
    assert step.decision.origin == "batch_window"
    assert ids(start) == ["d1"]


def test_deferral_due_during_pause_starts_on_resume() -> None:
    """A cooldown that ended during a pause starts its deferred work on resume."""
    rules = make_rules(cooldown="1h")
    start_and_close(rules, "m0", T0)
    rules.on_trigger(scheduled("s1"), at(minutes=10))
    rules.set_paused(True, "", at(minutes=20))
    assert rules.next_wakeup() is None
    assert rules.on_timer(at(hours=2)) == Step()
    step = rules.set_paused(False, "", at(hours=3))
    assert (step.decision.action, step.decision.origin) == (Action.START, "deferred")
    assert rules.state.last_started_at == at(hours=3)


def test_loop_closed_while_paused_starts_follow_up_on_resume() -> None:
    """A loop that ends during a pause leaves its follow-up pending until resume."""
    rules = make_rules(cooldown="0s")
    started(rules.on_trigger(manual("m0"), T0))
    rules.on_trigger(scheduled("s1"), at(minutes=1))
    rules.set_paused(True, "", at(minutes=2))
    assert close(rules, at(minutes=3)) == Step()
    assert rules.state.active_loop is None and rules.state.follow_up is not None
    step = rules.set_paused(False, "", at(minutes=4))
    assert (step.decision.action, step.decision.origin) == (Action.START, "follow_up")


def test_resume_with_nothing_due_waits() -> None:
    """Resuming before anything is due decides nothing and restores the wakeup."""
    rules = make_rules(batch_size=10, batch_window="15m")
    rules.on_trigger(data("d1"), T0)
    rules.set_paused(True, "", T0)
    assert rules.set_paused(False, "", at(minutes=5)) == Step()
    assert rules.next_wakeup() == at(minutes=15)


# ------------------------------------------------------------------ invalid triggers


def test_invalid_trigger_is_recorded_and_changes_nothing_else() -> None:
    """on_invalid_trigger records ignore/invalid_trigger with the error; the rest of the state
    (batch, deferral, counters, dedup window) is untouched."""
    rules = make_rules(cooldown="1h", batch_size=5)
    start_and_close(rules, "m0", T0)
    rules.on_trigger(data("d1"), at(minutes=1))
    rules.on_trigger(scheduled("s1"), at(minutes=2))
    exclude = {"decisions", "decision_seq", "events_received", "unarchived", "decisions_dropped"}
    before = rules.state.model_dump(exclude=exclude)
    seq = rules.state.decision_seq
    step = rules.on_invalid_trigger(
        {"kind": "drift", "event_id": "bad-1", "priority": 9}, "priority: too big", at(days=2)
    )
    decision = step.decision
    assert (decision.action, decision.reason) == (Action.IGNORE, Reason.INVALID_TRIGGER)
    assert decision.error == "priority: too big"
    assert decision.event_ids == ["bad-1"] and decision.seq == seq + 1
    assert decision.kinds == [] and decision.priority is None
    assert step.start is None and step.notifications == []
    assert rules.state.model_dump(exclude=exclude) == before
    assert rules.state.decisions[-1] == decision
    assert "bad-1" not in rules.state.seen_events


@pytest.mark.parametrize("raw", [None, ["x"], "text", {"event_id": 7}, {"event_id": ""}])
def test_invalid_trigger_without_usable_id(raw: Any) -> None:
    """Without a string event_id the decision names '(invalid)'."""
    rules = make_rules()
    assert rules.on_invalid_trigger(raw, "bad", T0).decision.event_ids == ["(invalid)"]


def test_invalid_trigger_truncates_id_and_error() -> None:
    """An oversized claimed id and error are truncated (200 / 2000 characters)."""
    rules = make_rules()
    decision = rules.on_invalid_trigger({"event_id": "i" * 500}, "e" * 5000, T0).decision
    assert decision.event_ids == ["i" * 200]
    assert decision.error == "e" * 2000


def test_invalid_trigger_while_paused_is_still_recorded() -> None:
    """Paused or not, an invalid trigger is an ignore/invalid_trigger decision."""
    rules = make_rules()
    rules.set_paused(True, "", T0)
    assert rules.on_invalid_trigger({}, "bad", T0).decision.reason is Reason.INVALID_TRIGGER


# ------------------------------------------------------------------ decision log, status


def test_decision_log_is_bounded() -> None:
    """Only the last DECISIONS_KEPT decisions are kept; seq keeps counting."""
    rules = make_rules()
    total = DECISIONS_KEPT + 7
    for n in range(total):
        rules.on_trigger(drift(f"d{n}", score=0.0), T0)
    log = rules.state.decisions
    assert len(log) == DECISIONS_KEPT
    assert [d.seq for d in log] == list(range(8, total + 1))
    assert rules.state.decision_seq == total


def test_logged_decisions_cap_event_ids_but_keep_the_count() -> None:
    """A decision covering many events logs at most EVENT_IDS_PER_LOGGED_DECISION ids, while
    the step's decision names them all; event_count stays exact in both."""
    count = EVENT_IDS_PER_LOGGED_DECISION + 50
    rules = make_rules(batch_size=count)
    for n in range(count):
        step = rules.on_trigger(data(f"d{n}", uri="s3://same"), T0)
    start = started(step)
    full = step.decision
    assert len(full.event_ids) == count == full.event_count
    assert len(ids(start)) == count
    logged = rules.state.decisions[-1]
    assert logged.seq == full.seq
    assert logged.event_ids == full.event_ids[:EVENT_IDS_PER_LOGGED_DECISION]
    assert logged.event_count == count


def test_status_view() -> None:
    """status(now) reports the budget left, the running cooldown, the batch and the loop."""
    rules = make_rules(
        cooldown="2h", batch_size=10, batch_window="15m", max_wait="1h", daily_budget=10.0
    )
    start = started(rules.on_trigger(manual("m0"), T0))
    rules.on_trigger(data("d1", uri="s3://a", rows=100), at(minutes=10))
    rules.on_trigger(data("d2", uri="s3://a", rows=100), at(minutes=20))
    rules.on_trigger(data("d3", uri="s3://b", rows=50), at(minutes=30))
    status = rules.status(at(minutes=31))
    assert status.model == MODEL and not status.paused
    assert status.budget_left == 9.0 and status.spent_today == 1.0
    assert status.trainings_today == 1 and status.loops_started == 1
    assert status.cooldown_until == at(hours=2)
    assert status.active_loop == start.loop_id and status.active_loop_started_at == T0
    assert status.batch is not None
    assert (status.batch.events, status.batch.uris, status.batch.rows) == (3, 2, 150)
    assert status.batch.opened_at == at(minutes=10)
    assert status.batch.fires_at == at(minutes=45)  # min(30+15, 10+60)
    assert status.deferred is None and status.follow_up is None
    assert status.events_accepted == 4
    assert status.recent_decisions == rules.state.decisions[-5:]
    assert status.last_outcome is None
    # After the cooldown it is no longer reported.
    assert rules.status(at(hours=2)).cooldown_until is None


def test_status_reports_pause_and_last_outcome() -> None:
    """status shows the pause reason and the last loop outcome."""
    rules = make_rules()
    start_and_close(rules, "m0", T0)
    rules.set_paused(True, "freeze", T0)
    status = rules.status(T0)
    assert status.paused and status.paused_reason == "freeze"
    assert status.last_outcome is not None and status.last_outcome.status is LoopStatus.PROMOTED
    assert status.active_loop is None
