"""The training-slot queue's rules (workflows/slots/rules.py), without Temporal: grant order,
idempotency, release, reclaim, limit changes, and invariants over random message sequences."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from workflows.slots import rules as slot_rules
from workflows.slots.models import MAX_WAITING, SlotRelease, SlotRequest, SlotsState

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def req(loop: str, priority: int = 3, at: int = 0, model: str = "m") -> SlotRequest:
    return SlotRequest(
        loop_id=loop, model=model, priority=priority, requested_at=T0 + timedelta(seconds=at)
    )


def holders(state: SlotsState) -> list[str]:
    return [h.loop_id for h in state.holders]


def waiting(state: SlotsState) -> list[str]:
    return [w.loop_id for w in state.waiting]


def test_grants_up_to_the_limit_then_queues() -> None:
    state = SlotsState(limit=2)
    assert slot_rules.request_slot(state, req("a"), T0) == ["a"]
    assert slot_rules.request_slot(state, req("b"), T0) == ["b"]
    assert slot_rules.request_slot(state, req("c"), T0) == []
    assert holders(state) == ["a", "b"] and waiting(state) == ["c"]
    assert state.unnotified == ["a", "b"] and state.granted_total == 2
    # Someone waits: the limiter looks for dead holders at once.
    assert state.reclaim_requested
    assert slot_rules.next_reclaim_at(state) is not None
    assert slot_rules.next_reclaim_at(state) <= T0  # type: ignore[operator]


def test_waiters_are_granted_by_priority_then_request_time_then_loop_id() -> None:
    state = SlotsState(limit=1)
    slot_rules.request_slot(state, req("holder"), T0)
    for loop, priority, at in [("e", 5, 0), ("d", 2, 9), ("c", 2, 3), ("b", 1, 7), ("a", 2, 3)]:
        slot_rules.request_slot(state, req(loop, priority, at), T0)
    assert waiting(state) == ["b", "a", "c", "d", "e"]
    order = []
    current = "holder"
    for _ in range(5):
        [granted] = slot_rules.release_slot(state, current, T0)
        order.append(granted)
        current = granted
    assert order == ["b", "a", "c", "d", "e"]


def test_repeated_requests_and_unknown_releases_change_nothing() -> None:
    state = SlotsState(limit=1)
    slot_rules.request_slot(state, req("a"), T0)
    slot_rules.request_slot(state, req("b", priority=4), T0)
    before = state.model_copy(deep=True)
    # A holder or a waiter asking again (even with another priority) keeps its place.
    assert slot_rules.request_slot(state, req("a", priority=1, at=50), T0) == []
    assert slot_rules.request_slot(state, req("b", priority=1, at=50), T0) == []
    assert slot_rules.release_slot(state, "nobody", T0) == []
    assert state == before


def test_a_waiter_can_leave_the_queue() -> None:
    state = SlotsState(limit=1)
    slot_rules.request_slot(state, req("a"), T0)
    slot_rules.request_slot(state, req("b"), T0)
    assert slot_rules.release_slot(state, "b", T0, "cancelled") == []
    assert holders(state) == ["a"] and waiting(state) == []
    assert slot_rules.release_slot(state, "a", T0) == []
    assert state.released_total == 2


def test_reclaim_frees_dead_holders_and_waiters() -> None:
    state = SlotsState(limit=2)
    for loop in ("a", "b", "c", "d", "e"):
        slot_rules.request_slot(state, req(loop), T0)
    later = T0 + timedelta(minutes=1)
    granted = slot_rules.reclaim(state, {"a": "terminated", "d": "timed_out"}, later)
    assert granted == ["c"]
    assert holders(state) == ["b", "c"] and waiting(state) == ["e"]
    assert state.reclaimed_total == 2 and state.last_reclaim_at == later
    assert not state.reclaim_requested
    assert slot_rules.next_reclaim_at(state) == later + slot_rules.RECLAIM_EVERY
    assert [e.kind for e in state.events if e.loop_id in ("a", "d")][-2:] == [
        "reclaimed",
        "reclaimed",
    ]
    # Nobody waits: no reclaim timer at all.
    slot_rules.release_slot(state, "e", later)
    assert slot_rules.next_reclaim_at(state) is None


def test_a_grant_that_cannot_be_delivered_goes_to_the_next() -> None:
    state = SlotsState(limit=1)
    slot_rules.request_slot(state, req("a"), T0)
    slot_rules.request_slot(state, req("b"), T0)
    assert slot_rules.grant_undeliverable(state, "a", T0, "not found") == ["b"]
    assert state.unnotified == ["b"] and holders(state) == ["b"]
    slot_rules.grant_delivered(state, "b")
    assert state.unnotified == []


def test_raising_the_limit_lets_waiters_in_and_lowering_preempts_nobody() -> None:
    state = SlotsState(limit=1)
    for loop in ("a", "b", "c", "d"):
        slot_rules.request_slot(state, req(loop), T0)
    assert slot_rules.set_limit(state, 3, T0, by="ana") == ["b", "c"]
    assert slot_rules.set_limit(state, 1, T0) == []
    assert holders(state) == ["a", "b", "c"]
    assert slot_rules.release_slot(state, "a", T0) == []
    assert slot_rules.release_slot(state, "b", T0) == []
    assert slot_rules.release_slot(state, "c", T0) == ["d"]
    with pytest.raises(ValueError, match=r"1\.\.1000"):
        slot_rules.set_limit(state, 0, T0)
    assert [e.detail for e in state.events if e.kind == "limit"] == ["1 -> 3 by ana", "3 -> 1"]


def test_a_full_queue_refuses() -> None:
    state = SlotsState(limit=1)
    slot_rules.request_slot(state, req("holder"), T0)
    for i in range(MAX_WAITING):
        slot_rules.request_slot(state, req(f"w{i}"), T0)
    assert slot_rules.request_slot(state, req("late"), T0) == []
    assert not slot_rules.waits(state, "late") and state.events[-1].kind == "refused"
    assert slot_rules.position(state, "late").position is None


def test_position_and_status() -> None:
    state = SlotsState(limit=1)
    for loop, priority in (("a", 3), ("b", 4), ("c", 1)):
        slot_rules.request_slot(state, req(loop, priority), T0)
    assert slot_rules.position(state, "a").holding
    assert slot_rules.position(state, "b").position == 2
    assert slot_rules.position(state, "c").position == 1
    status = slot_rules.status(state)
    assert status.in_use == 1 and [w.loop_id for w in status.waiting] == ["c", "b"]


@pytest.mark.parametrize(
    "fields",
    [
        {"loop_id": "", "model": "m", "priority": 3, "requested_at": T0},
        {"loop_id": "a b", "model": "m", "priority": 3, "requested_at": T0},
        {"loop_id": "a", "model": "Bad Name", "priority": 3, "requested_at": T0},
        {"loop_id": "a", "model": "m", "priority": 0, "requested_at": T0},
        {"loop_id": "a", "model": "m", "priority": 3, "requested_at": "2026-01-01T00:00:00"},
        {"loop_id": "a", "model": "m", "priority": 3, "requested_at": T0, "extra": 1},
    ],
)
def test_malformed_requests_are_refused_at_the_edge(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        SlotRequest.model_validate(fields)
    with pytest.raises(ValidationError):
        SlotRelease.model_validate({"loop_id": ""})


# ---- properties over random message sequences ------------------------------------------------

LOOPS = [f"loop-{i}" for i in range(8)]
ops = st.one_of(
    st.tuples(st.just("request"), st.sampled_from(LOOPS), st.integers(1, 5), st.integers(0, 100)),
    st.tuples(st.just("release"), st.sampled_from(LOOPS)),
    st.tuples(st.just("limit"), st.integers(1, 6)),
    st.tuples(st.just("reclaim"), st.sets(st.sampled_from(LOOPS), max_size=3)),
    st.tuples(st.just("undeliverable"), st.sampled_from(LOOPS)),
)


@settings(max_examples=300, deadline=None)
@given(limit=st.integers(1, 4), messages=st.lists(ops, max_size=60))
def test_invariants_hold_for_any_message_sequence(
    limit: int, messages: list[tuple[Any, ...]]
) -> None:
    state = SlotsState(limit=limit)
    # Holders beyond the limit only exist when the limit was lowered under them.
    allowed = limit
    for step, message in enumerate(messages):
        now = T0 + timedelta(seconds=step)
        kind = message[0]
        waiting_before = list(state.waiting)
        ids_before = set(holders(state) + waiting(state))
        if kind == "request":
            _, loop, priority, at = message
            granted = slot_rules.request_slot(state, req(loop, priority, at), now)
        elif kind == "release":
            granted = slot_rules.release_slot(state, message[1], now)
        elif kind == "limit":
            granted = slot_rules.set_limit(state, message[1], now)
        elif kind == "reclaim":
            granted = slot_rules.reclaim(state, dict.fromkeys(message[1], "terminated"), now)
        else:
            granted = slot_rules.grant_undeliverable(state, message[1], now, "gone")
        allowed = max(state.limit, min(allowed, len(state.holders)))

        ids = holders(state) + waiting(state)
        assert len(ids) == len(set(ids)), "a loop is held or queued at most once"
        assert len(state.holders) <= allowed
        assert not (state.waiting and len(state.holders) < state.limit), "a free slot idles"
        keys = [slot_rules.grant_key(w) for w in state.waiting]
        assert keys == sorted(keys), "the queue is in grant order"
        assert set(state.unnotified) <= set(holders(state))
        # Whoever was granted was the best of those waiting, the newcomer included.
        removed = {message[1]} if kind in ("release", "undeliverable") else set()
        if kind == "reclaim":
            removed = set(message[1])
        candidates = [w for w in waiting_before if w.loop_id not in removed]
        if kind == "request" and message[1] not in ids_before:
            candidates.append(req(message[1], message[2], message[3]))
        best = [c.loop_id for c in sorted(candidates, key=slot_rules.grant_key)]
        assert granted == best[: len(granted)]
        assert all(slot_rules.holds(state, loop) for loop in granted)
