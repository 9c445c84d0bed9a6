"""The training-slot queue's rules, as plain functions over `SlotsState` (no Temporal).

Each function applies one message to the state in place and returns the loops it granted a
slot to (the workflow tells them). Invariants, property-tested in tests/slots/test_slot_rules.py:
a loop is a holder or a waiter, never both, and at most once; a slot is never left free while
someone waits; holders only exceed the limit after the limit was lowered (nobody is preempted);
waiters are granted in `grant_key` order.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from workflows.slots.models import (
    MAX_LIMIT,
    MAX_WAITING,
    RECENT_EVENTS,
    RECENT_IGNORED,
    IgnoredMessage,
    SlotEvent,
    SlotEventKind,
    SlotHolder,
    SlotPosition,
    SlotRequest,
    SlotsState,
    SlotsStatus,
)

# While loops wait, dead holders are looked for this often; sooner (but not more than once per
# RECLAIM_SOON) when a loop has just joined the queue.
RECLAIM_EVERY = timedelta(minutes=5)
RECLAIM_SOON = timedelta(seconds=30)


def grant_key(request: SlotRequest) -> tuple[int, datetime, str]:
    """Priority 1 first, then the earliest request, then the loop id (a total order)."""
    return (request.priority, request.requested_at, request.loop_id)


def holds(state: SlotsState, loop_id: str) -> bool:
    return any(h.loop_id == loop_id for h in state.holders)


def waits(state: SlotsState, loop_id: str) -> bool:
    return any(w.loop_id == loop_id for w in state.waiting)


def request_slot(state: SlotsState, request: SlotRequest, now: datetime) -> list[str]:
    """Queue the loop and grant what the limit allows. A holder or waiter asking again (a
    retried activity, a loop re-checking) changes nothing."""
    if holds(state, request.loop_id) or waits(state, request.loop_id):
        return []
    if len(state.waiting) >= MAX_WAITING:
        _event(state, now, "refused", request.loop_id, f"{MAX_WAITING} loops already wait")
        return []
    state.waiting.insert(bisect.bisect(state.waiting, grant_key(request), key=grant_key), request)
    granted = _fill(state, now)
    if waits(state, request.loop_id):
        state.reclaim_requested = True
    return granted


def release_slot(state: SlotsState, loop_id: str, now: datetime, reason: str = "") -> list[str]:
    """A holder gives its slot back, or a waiter leaves the queue; an unknown loop (released
    already, reclaimed, never seen) changes nothing."""
    if not _remove(state, loop_id):
        return []
    state.released_total += 1
    _event(state, now, "released", loop_id, reason)
    return _fill(state, now)


def set_limit(state: SlotsState, limit: int, now: datetime, by: str = "") -> list[str]:
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"the limit must be 1..{MAX_LIMIT}, got {limit}")
    if limit != state.limit:
        detail = f"{state.limit} -> {limit}" + (f" by {by}" if by else "")
        state.limit = limit
        _event(state, now, "limit", None, detail)
    return _fill(state, now)


def reclaim(state: SlotsState, closed: Mapping[str, str], now: datetime) -> list[str]:
    """Free the slots and places of loops that ended without releasing (terminated, timed
    out, gone): `closed` maps loop id -> its execution status."""
    state.last_reclaim_at = now
    state.reclaim_requested = False
    for loop_id, status in sorted(closed.items()):
        if _remove(state, loop_id):
            state.reclaimed_total += 1
            _event(state, now, "reclaimed", loop_id, f"the loop is {status}")
    return _fill(state, now)


def grant_delivered(state: SlotsState, loop_id: str) -> None:
    if loop_id in state.unnotified:
        state.unnotified.remove(loop_id)


def grant_undeliverable(state: SlotsState, loop_id: str, now: datetime, error: str) -> list[str]:
    """The loop could not be told (it ended meanwhile): its slot goes to the next one."""
    grant_delivered(state, loop_id)
    return reclaim_one(state, loop_id, now, f"not reachable: {error}")


def reclaim_one(state: SlotsState, loop_id: str, now: datetime, detail: str) -> list[str]:
    if not _remove(state, loop_id):
        return []
    state.reclaimed_total += 1
    _event(state, now, "reclaimed", loop_id, detail[:300])
    return _fill(state, now)


def ignore(state: SlotsState, name: str, reason: str, now: datetime) -> None:
    state.ignored.append(IgnoredMessage(at=now, name=name, reason=reason[:500]))
    del state.ignored[:-RECENT_IGNORED]


def next_reclaim_at(state: SlotsState) -> datetime | None:
    """When to look for dead holders and waiters: only while someone waits (a dead holder
    blocks nobody otherwise), at once the first time."""
    if not state.waiting:
        return None
    if state.last_reclaim_at is None:
        return datetime.min.replace(tzinfo=UTC)
    gap = RECLAIM_SOON if state.reclaim_requested else RECLAIM_EVERY
    return state.last_reclaim_at + gap


def reclaim_candidates(state: SlotsState) -> list[str]:
    return [h.loop_id for h in state.holders] + [w.loop_id for w in state.waiting]


def position(state: SlotsState, loop_id: str) -> SlotPosition:
    place = next((i for i, w in enumerate(state.waiting, 1) if w.loop_id == loop_id), None)
    return SlotPosition(
        loop_id=loop_id,
        holding=holds(state, loop_id),
        position=place,
        waiting=len(state.waiting),
        in_use=len(state.holders),
        limit=state.limit,
    )


def status(state: SlotsState) -> SlotsStatus:
    return SlotsStatus(
        limit=state.limit,
        in_use=len(state.holders),
        holders=list(state.holders),
        waiting=list(state.waiting),
        granted_total=state.granted_total,
        released_total=state.released_total,
        reclaimed_total=state.reclaimed_total,
        last_reclaim_at=state.last_reclaim_at,
        events=list(state.events),
        ignored=list(state.ignored),
    )


def _fill(state: SlotsState, now: datetime) -> list[str]:
    granted = []
    while state.waiting and len(state.holders) < state.limit:
        request = state.waiting.pop(0)
        state.holders.append(
            SlotHolder(
                loop_id=request.loop_id,
                model=request.model,
                priority=request.priority,
                requested_at=request.requested_at,
                granted_at=now,
            )
        )
        state.unnotified.append(request.loop_id)
        state.granted_total += 1
        _event(state, now, "granted", request.loop_id, f"priority {request.priority}")
        granted.append(request.loop_id)
    return granted


def _remove(state: SlotsState, loop_id: str) -> bool:
    before = len(state.holders) + len(state.waiting)
    state.holders = [h for h in state.holders if h.loop_id != loop_id]
    state.waiting = [w for w in state.waiting if w.loop_id != loop_id]
    grant_delivered(state, loop_id)
    return len(state.holders) + len(state.waiting) < before


def _event(
    state: SlotsState, now: datetime, kind: SlotEventKind, loop_id: str | None, detail: str
) -> None:
    state.events.append(SlotEvent(at=now, kind=kind, loop_id=loop_id, detail=detail))
    del state.events[:-RECENT_EVENTS]
