"""The `pending` table: events accepted by the gateway and not yet delivered (sync functions
on a connection; callers hold the transaction)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from starters.gateway import dead_letters


@dataclass(frozen=True)
class NewEvent:
    """A mapped event on its way into the database."""

    source: str
    model: str | None
    event_id: str | None
    event: str  # TriggerEvent JSON
    route: str  # RouteKeys JSON, to route it again on replay
    # Why it cannot be delivered (no model matched): it is stored as a dead letter at once.
    reason: str | None = None


@dataclass(frozen=True)
class PendingEvent:
    id: int
    source: str
    model: str
    event_id: str | None
    event: str
    route: str
    received_at: str


def add(conn: sqlite3.Connection, events: Sequence[NewEvent], now: str) -> None:
    """Store new events: routed ones as pending, unroutable ones as dead letters."""
    conn.executemany(
        "INSERT INTO pending (source, model, event_id, event, route, received_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [
            (e.source, e.model, e.event_id, e.event, e.route, now)
            for e in events
            if e.reason is None and e.model is not None
        ],
    )
    for e in events:
        if e.reason is not None or e.model is None:
            dead_letters.add(
                conn,
                dead_letters.Failed(
                    source=e.source,
                    model=e.model,
                    event_id=e.event_id,
                    event=e.event,
                    route=e.route,
                    received_at=now,
                ),
                reason=e.reason or "no model",
                attempts=0,
                now=now,
            )


def take(conn: sqlite3.Connection, limit: int) -> list[PendingEvent]:
    """The oldest `limit` pending events (they stay pending until deleted or buried)."""
    rows = conn.execute(
        "SELECT id, source, model, event_id, event, route, received_at FROM pending "
        "ORDER BY id LIMIT ?",
        (limit,),
    ).fetchall()
    return [PendingEvent(*row) for row in rows]


def delete(conn: sqlite3.Connection, ids: Sequence[int]) -> None:
    conn.executemany("DELETE FROM pending WHERE id = ?", [(i,) for i in ids])


def bury(
    conn: sqlite3.Connection,
    events: Sequence[PendingEvent],
    reason: str,
    attempts: int,
    now: str,
) -> None:
    """Move pending events to the dead letters with the reason (caller's transaction)."""
    for event in events:
        failed = dead_letters.Failed(
            source=event.source,
            model=event.model,
            event_id=event.event_id,
            event=event.event,
            route=event.route,
            received_at=event.received_at,
        )
        dead_letters.add(conn, failed, reason=reason, attempts=attempts, now=now)
    delete(conn, [event.id for event in events])


def count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM pending").fetchone()[0])
