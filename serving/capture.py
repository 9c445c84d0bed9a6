"""Batched data capture (activities/local/capture.py): answers and feedback to Parquet.

Rows accumulate in memory and are written as whole files (temporary name, then a rename) into
daily partitions by the endpoint's UTC clock, so readers never see a partial file. A write
that fails keeps its rows for the next flush, up to a bound past which the oldest are dropped
(and logged): capture must never take the endpoint down with it.

`RequestIndex` answers "did this endpoint answer that request id?" for feedback: a bounded
in-memory index first, then the rows not yet written, then the capture files of recent days
(so labels still attach after a restart).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.compute as pc  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]

from activities.local.capture import REQUEST_ID, REQUESTS, partition, partitions_since
from activities.loop.data_window import write_parquet_atomic

logger = logging.getLogger(__name__)


class CaptureError(Exception):
    """A flush that could not write every row (they stay buffered)."""


class CaptureBuffer:
    """Rows of one kind (`requests` or `feedback`), written in batches (thread-safe)."""

    def __init__(
        self,
        root: Path,
        kind: str,
        schema: pa.Schema,
        time_column: str,
        batch_rows: int,
        max_rows: int,
    ) -> None:
        self.root = root
        self.kind = kind
        self.schema = schema
        self.time_column = time_column
        self.batch_rows = batch_rows
        self.max_rows = max(max_rows, batch_rows)
        self.dropped = 0
        self._rows: list[dict[str, Any]] = []
        self._rows_lock = threading.Lock()
        # One flush at a time: a flush returns only once everything buffered before it is
        # written, whoever started writing it.
        self._flush_lock = threading.Lock()
        self._sequence = itertools.count()

    def append(self, row: dict[str, Any]) -> bool:
        """Buffer a row; True when a batch is ready to be written."""
        with self._rows_lock:
            self._rows.append(row)
            return len(self._rows) >= self.batch_rows

    def pending(self) -> int:
        with self._rows_lock:
            return len(self._rows)

    def pending_values(self, column: str) -> set[Any]:
        with self._rows_lock:
            return {row[column] for row in self._rows}

    def flush(self) -> int:
        """Write every buffered row (blocking); the number written."""
        with self._flush_lock:
            with self._rows_lock:
                rows, self._rows = self._rows, []
            if not rows:
                return 0
            written = 0
            failures: list[str] = []
            for day, group in _by_day(rows, self.time_column).items():
                try:
                    self._write(day, group)
                except Exception as exc:  # disk full, permissions, bad row: keep the rows
                    self._keep(group)
                    failures.append(f"cannot write {len(group)} {self.kind} rows of {day}: {exc!r}")
                else:
                    written += len(group)
            if failures:
                raise CaptureError("; ".join(failures))
            return written

    def _write(self, day: date, rows: list[dict[str, Any]]) -> None:
        table = pa.Table.from_pylist(rows, schema=self.schema)
        directory = partition(self.root, self.kind, day)
        name = f"part-{time.time_ns() // 1000}-{next(self._sequence)}.parquet"
        write_parquet_atomic(table, directory / name)

    def _keep(self, rows: list[dict[str, Any]]) -> None:
        with self._rows_lock:
            self._rows[:0] = rows
            excess = len(self._rows) - self.max_rows
            if excess > 0:
                del self._rows[:excess]
                self.dropped += excess
                logger.error("capture of %s: dropped the %d oldest rows", self.kind, excess)


def _by_day(rows: list[dict[str, Any]], column: str) -> dict[date, list[dict[str, Any]]]:
    days: dict[date, list[dict[str, Any]]] = {}
    for row in rows:
        stamp: datetime = row[column]
        days.setdefault(stamp.date(), []).append(row)
    return days


class RequestIndex:
    """The request ids this endpoint answered, for feedback."""

    def __init__(
        self,
        capture_root: Path,
        capacity: int,
        lookback: timedelta,
        pending: Callable[[], set[Any]],
    ) -> None:
        self.capture_root = capture_root
        self.capacity = capacity
        self.lookback = lookback
        self._pending = pending
        # Used as an ordered set; only touched on the event loop.
        self._recent: OrderedDict[str, None] = OrderedDict()

    def add(self, request_ids: Iterable[str]) -> None:
        for request_id in request_ids:
            self._recent[request_id] = None
            self._recent.move_to_end(request_id)
        while len(self._recent) > self.capacity:
            self._recent.popitem(last=False)

    def not_recent(self, request_ids: Iterable[str]) -> set[str]:
        return {request_id for request_id in request_ids if request_id not in self._recent}

    def find(self, request_ids: set[str], now: datetime) -> set[str]:
        """Which of the ids were captured: unwritten rows, then recent files (blocking)."""
        found = request_ids & self._pending()
        wanted = request_ids - found
        if not wanted:
            return found
        files = partitions_since(self.capture_root, REQUESTS, now - self.lookback)
        value_set = pa.array(sorted(wanted), pa.string())
        # Newest first: feedback usually follows its request closely.
        for file in reversed(files):
            if file.name.startswith("."):
                continue  # a temporary file mid-rename
            try:
                ids = pq.read_table(file, columns=[REQUEST_ID])[REQUEST_ID]
            except (OSError, pa.ArrowException, KeyError) as exc:
                logger.warning("feedback: skipping unreadable capture file %s: %r", file, exc)
                continue
            hits = pc.filter(value_set, pc.is_in(value_set, value_set=ids)).to_pylist()
            if hits:
                found.update(hits)
                wanted.difference_update(hits)
                if not wanted:
                    break
                value_set = pa.array(sorted(wanted), pa.string())
        return found
