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
    # Delivery attempts that failed or were refused for now, when the next one is due (None:
    # at once) and why the last one did not deliver.
    attempts: int = 0
    next_attempt_at: str | None = None
    last_error: str | None = None


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


_COLUMNS = (
    "id, source, model, event_id, event, route, received_at, attempts, next_attempt_at, last_error"
)


def take(conn: sqlite3.Connection, limit: int, due_by: str | None = None) -> list[PendingEvent]:
    """The oldest `limit` pending events (due by `due_by` when given); they stay pending until
    deleted, postponed or buried."""
    if due_by is None:
        query = f"SELECT {_COLUMNS} FROM pending ORDER BY id LIMIT ?"
        rows = conn.execute(query, (limit,)).fetchall()
    else:
        query = (
            f"SELECT {_COLUMNS} FROM pending WHERE next_attempt_at IS NULL "
            "OR next_attempt_at <= ? ORDER BY id LIMIT ?"
        )
        rows = conn.execute(query, (due_by, limit)).fetchall()
    return [PendingEvent(*row) for row in rows]


def postpone(conn: sqlite3.Connection, retries: Sequence[tuple[int, str, str]]) -> None:
    """(id, why, next attempt at): one more attempt counted, the next one due then."""
    conn.executemany(
        "UPDATE pending SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? "
        "WHERE id = ?",
        [(reason[:2000], due, key) for key, reason, due in retries],
    )


def next_due(conn: sqlite3.Connection) -> str | None:
    """When the earliest postponed event is due (None: nothing is postponed)."""
    row = conn.execute("SELECT min(next_attempt_at) FROM pending").fetchone()
    return None if row is None else row[0]


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
