"""The `dead_letters` table: events that could not be delivered, each with its reason, the
first and last failure time and the number of delivery attempts (sync functions on a
connection; writers hold the transaction). `retrain dlq list|replay|drop` manage it."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

_MAX_REASON = 2000
_COLUMNS = (
    "id, source, model, event_id, event, route, reason, received_at, first_failed_at, "
    "last_failed_at, attempts"
)


@dataclass(frozen=True)
class Failed:
    """An event about to become a dead letter."""

    source: str
    model: str | None
    event_id: str | None
    event: str
    route: str
    received_at: str


@dataclass(frozen=True)
class DeadLetter:
    id: int
    source: str
    model: str | None
    event_id: str | None
    event: str  # TriggerEvent JSON
    route: str  # RouteKeys JSON
    reason: str
    received_at: str
    first_failed_at: str
    last_failed_at: str
    attempts: int

    @property
    def kind(self) -> str:
        try:
            found = json.loads(self.event).get("kind")
        except (ValueError, AttributeError):
            return "?"
        return str(found)

    def as_json(self) -> dict[str, Any]:
        """The row with its event and route as JSON objects (for `retrain dlq list --json`)."""
        row: dict[str, Any] = asdict(self)
        for key in ("event", "route"):
            with contextlib.suppress(ValueError):  # else shown as stored
                row[key] = json.loads(row[key])
        return row


def add(conn: sqlite3.Connection, failed: Failed, reason: str, attempts: int, now: str) -> None:
    conn.execute(
        "INSERT INTO dead_letters (source, model, event_id, event, route, reason, received_at, "
        "first_failed_at, last_failed_at, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            failed.source,
            failed.model,
            failed.event_id,
            failed.event,
            failed.route,
            reason[:_MAX_REASON],
            failed.received_at,
            now,
            now,
            attempts,
        ),
    )


def select(
    conn: sqlite3.Connection,
    ids: Sequence[int] | None = None,
    source: str | None = None,
    model: str | None = None,
) -> list[DeadLetter]:
    """Dead letters, oldest first, filtered by id, source and model (each optional)."""
    clauses: list[str] = []
    params: list[Any] = []
    if ids is not None:
        if not ids:
            return []
        clauses.append(f"id IN ({', '.join('?' * len(ids))})")
        params.extend(ids)
    if source is not None:
        clauses.append("source = ?")
        params.append(source)
    if model is not None:
        clauses.append("model = ?")
        params.append(model)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM dead_letters{where} ORDER BY id", params
    ).fetchall()
    return [DeadLetter(*row) for row in rows]


def remove(conn: sqlite3.Connection, ids: Sequence[int]) -> int:
    """Delete dead letters; returns how many existed."""
    before = conn.total_changes
    conn.executemany("DELETE FROM dead_letters WHERE id = ?", [(i,) for i in ids])
    return conn.total_changes - before


def failed_again(
    conn: sqlite3.Connection,
    ids: Sequence[int],
    reason: str,
    attempts: int,
    now: str,
    model: str | None = None,
) -> None:
    """A replay failed: keep the entries with the new reason, time and attempt count (and the
    model, when the replay could route them)."""
    conn.executemany(
        "UPDATE dead_letters SET reason = ?, last_failed_at = ?, attempts = attempts + ?, "
        "model = coalesce(?, model) WHERE id = ?",
        [(reason[:_MAX_REASON], now, attempts, model, i) for i in ids],
    )


def count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0])
