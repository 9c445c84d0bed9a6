"""The coordinator's state survives continue-as-new exactly, and stays small enough to."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from workflows.coordinator.models import MAX_PENDING_EVENTS, Action, CoordinatorState, Reason
from workflows.coordinator.policy import TriggerPolicy
from workflows.coordinator.rules import CoordinatorRules, new_state
from workflows.coordinator.triggers import DataArrival, DriftSignal, TriggerEvent, TriggerKind

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TWO_MB = 2 * 1024 * 1024


def data(i: int) -> TriggerEvent:
    return TriggerEvent(
        kind=TriggerKind.DATA_ARRIVED,
        event_id=f"{i:032x}",  # uuid-sized ids: the worst common case
        source="pipeline",
        data=DataArrival(
            uri=f"s3://datalake-prod/labelled/churn/date=2026-03-01/part-{i:06d}.parquet", rows=1000
        ),
    )


def test_state_round_trips_through_json_exactly() -> None:
    rules = CoordinatorRules(
        new_state("m", TriggerPolicy(batch_size=50, cooldown=timedelta(hours=1)))
    )
    for i in range(120):
        rules.on_trigger(data(i), T0 + timedelta(seconds=i * 1.25, microseconds=i))
    rules.on_trigger(TriggerEvent(kind=TriggerKind.MANUAL, event_id="m"), T0 + timedelta(hours=1))
    state = rules.state
    again = CoordinatorState.model_validate_json(state.model_dump_json())
    assert again.model_dump() == state.model_dump()  # private indexes are rebuilt on use
    assert list(again.seen_events) == list(state.seen_events)


def test_worst_case_state_stays_under_the_payload_limit() -> None:
    """A full dedup memory, a full backlog and a full decision log, with long ids and uris:
    the continue-as-new input (and a loop's input) must stay well under Temporal's 2 MB."""
    policy = TriggerPolicy(batch_size=10_000, cooldown=timedelta(hours=6), dedup_max_events=10_000)
    rules = CoordinatorRules(new_state("m", policy))
    rules.on_trigger(TriggerEvent(kind=TriggerKind.MANUAL, event_id="first"), T0)  # loop runs
    refused = 0
    for i in range(MAX_PENDING_EVENTS + 500):
        step = rules.on_trigger(data(i), T0 + timedelta(seconds=i))
        refused += step.decision.reason is Reason.BACKLOG_FULL
    assert refused == 500
    for i in range(policy.dedup_max_events):  # remembered, nothing pending
        low = TriggerEvent(
            kind=TriggerKind.DRIFT, event_id=f"drift-{i:026x}", drift=DriftSignal(score=0.01)
        )
        rules.on_trigger(low, T0 + timedelta(hours=1, seconds=i))
    assert len(rules.state.seen_events) == policy.dedup_max_events
    size = len(rules.state.model_dump_json().encode())
    assert size < TWO_MB / 2, f"state is {size} bytes"
    assert rules.state.batch is not None
    pending = rules.state.batch.model_dump_json().encode()
    assert len(pending) < TWO_MB / 4, "a loop's input carries at most the pending events"


def test_backlog_full_refuses_data_without_remembering_it() -> None:
    rules = CoordinatorRules(new_state("m", TriggerPolicy(batch_size=10_000)))
    for i in range(MAX_PENDING_EVENTS):
        assert rules.on_trigger(data(i), T0).decision.action is Action.BUFFER
    refused = rules.on_trigger(data(MAX_PENDING_EVENTS), T0).decision
    assert (refused.action, refused.reason) == (Action.SUPPRESS, Reason.BACKLOG_FULL)
    assert refused.numbers == {"pending_events": MAX_PENDING_EVENTS}
    assert f"{MAX_PENDING_EVENTS:032x}" not in rules.state.seen_events
    # Other kinds still get through: a human or a drift monitor is never pushed back.
    manual = rules.on_trigger(TriggerEvent(kind=TriggerKind.MANUAL, event_id="m"), T0).decision
    assert manual.action is Action.START


def test_an_id_accepted_again_after_its_window_is_the_newest() -> None:
    """Eviction is oldest-first: a re-accepted id must not shield older ones from expiry."""
    policy = TriggerPolicy(dedup_window=timedelta(hours=1), cooldown=timedelta(0))
    rules = CoordinatorRules(new_state("m", policy))
    low = {"kind": "drift", "drift": {"score": 0.01}}
    rules.on_trigger(TriggerEvent.model_validate({**low, "event_id": "a"}), T0)
    rules.on_trigger(
        TriggerEvent.model_validate({**low, "event_id": "b"}), T0 + timedelta(minutes=30)
    )
    again = rules.on_trigger(
        TriggerEvent.model_validate({**low, "event_id": "a"}), T0 + timedelta(minutes=90)
    )
    assert again.decision.reason is Reason.DRIFT_LOW  # accepted: its window had expired
    rules.on_trigger(
        TriggerEvent.model_validate({**low, "event_id": "c"}), T0 + timedelta(minutes=95)
    )
    assert list(rules.state.seen_events) == ["a", "c"]  # "b" (T0+30m) expired behind "a"
