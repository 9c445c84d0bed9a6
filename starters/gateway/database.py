"""The gateway's SQLite database (`<RETRAIN_HOME>/gateway/gateway.db`): schema and connection.

Two tables: `pending` (accepted, not yet delivered to a coordinator, with its attempts and
when the next one is due) and `dead_letters` (could not be delivered, with the reason). An
event is in exactly one of them until it is delivered, when it is deleted. WAL with
synchronous=FULL: a commit that returned survives a crash or a power cut, and readers
(`retrain dlq list`) never block the gateway's writer. Several processes may open it (the
gateway and `retrain dlq`); each waits up to `BUSY_TIMEOUT_MS` for the other's write to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

SCHEMA_VERSION = 2
BUSY_TIMEOUT_MS = 10_000
_SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    model TEXT NOT NULL,
    event_id TEXT,
    event TEXT NOT NULL,
    route TEXT NOT NULL,
    received_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT,
    last_error TEXT
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    model TEXT,
    event_id TEXT,
    event TEXT NOT NULL,
    route TEXT NOT NULL,
    reason TEXT NOT NULL,
    received_at TEXT NOT NULL,
    first_failed_at TEXT NOT NULL,
    last_failed_at TEXT NOT NULL,
    attempts INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_model ON dead_letters (model);
CREATE INDEX IF NOT EXISTS pending_due ON pending (next_attempt_at);
"""
# Version 1 -> 2: the pending table learns its retries (schema 1 dead-lettered after 3 tries).
_MIGRATIONS = {
    1: (
        "ALTER TABLE pending ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE pending ADD COLUMN next_attempt_at TEXT",
        "ALTER TABLE pending ADD COLUMN last_error TEXT",
    )
}


class DatabaseError(RuntimeError):
    """The database cannot be opened or is of a newer schema."""


def database_path(home: Path) -> Path:
    return home / "gateway" / "gateway.db"


def now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def open_database(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) the database; the connection is used by one thread at a time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: transactions are explicit (`transaction`), never implicit.
        conn = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
        )
    except (OSError, sqlite3.Error) as err:
        raise DatabaseError(f"cannot open the gateway database {path}: {err}") from None
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise DatabaseError(
                f"{path} has schema version {version}; this gateway knows {SCHEMA_VERSION}: "
                "upgrade adaptive-retraining"
            )
        with transaction(conn):
            for step in range(version, SCHEMA_VERSION) if version else ():
                for statement in _MIGRATIONS[step]:
                    conn.execute(statement)
            # Statement by statement: executescript would commit the open transaction first.
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    except sqlite3.Error as err:
        conn.close()
        raise DatabaseError(f"cannot use the gateway database {path}: {err}") from None
    except DatabaseError:
        conn.close()
        raise
    return conn


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): the write lock is taken up front, so two
    writers queue on the busy timeout instead of failing to upgrade a read lock."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def check_writable(conn: sqlite3.Connection) -> None:
    """Raise sqlite3.Error unless a write transaction can be taken now."""
    with transaction(conn):
        pass


class DatabaseThread:
    """Runs every call on the connection in one thread, off the event loop: sqlite3 blocks,
    and one thread serialises the gateway's own use of the connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gateway-db")

    async def run(self, call: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, call, self.conn)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.conn.close()
