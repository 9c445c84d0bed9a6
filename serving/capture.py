"""Batched data capture (activities/local/capture.py): answers and feedback to Parquet.

Rows accumulate in memory and are written as whole files (temporary name, then a rename) into
daily partitions by the endpoint's UTC clock, so readers never see a partial file. A write
that fails keeps its rows for the next flush, up to a bound past which the oldest are dropped
(and logged): capture must never take the endpoint down with it.

What the endpoint acknowledged is durable against the process dying: each row is appended to a
write-ahead log (`<capture>/.wal/<kind>-*.jsonl`, one line, handed to the OS before the answer
leaves) and the log segment is deleted only once its rows are in Parquet. A restarted endpoint
writes what a killed one left (`recover`), skipping requests already written (a kill between
the Parquet rename and the segment's deletion). The log is not fsynced per row: a power cut
can lose the last rows, a `kill -9` cannot.

`RequestIndex` answers "did this endpoint answer that request id?" for feedback: a bounded
in-memory index first, then the rows not yet written, then the capture files of recent days
(so labels still attach after a restart).
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import IO, Any

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
        self.wal_dir = root / ".wal"
        self._segment = 0
        self._wal: IO[str] | None = None

    def recover(self, written: Callable[[set[str]], set[str]] | None = None) -> int:
        """Buffer the rows a previous process logged but did not write (call before serving);
        `written(ids)` says which request ids are already in the capture files. The rows
        recovered."""
        self.wal_dir.mkdir(parents=True, exist_ok=True)
        segments = sorted(self.wal_dir.glob(f"{self.kind}-*.jsonl"), key=_segment_number)
        rows: list[dict[str, Any]] = []
        for segment in segments:
            for line in segment.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    row[self.time_column] = datetime.fromisoformat(row[self.time_column])
                except (ValueError, KeyError, TypeError):
                    continue  # a line the kill cut short: it was never acknowledged
                rows.append(row)
        if rows and written is not None and REQUEST_ID in rows[0]:
            done = written({row[REQUEST_ID] for row in rows})
            rows = [row for row in rows if row[REQUEST_ID] not in done]
        self._segment = max((_segment_number(p) for p in segments), default=-1) + 1
        with self._rows_lock:
            self._rows[:0] = rows
            # Rows recovered are in the old segments, which stay until a flush writes them.
            self._open_segment()
        if rows:
            logger.warning("capture of %s: recovered %d logged rows", self.kind, len(rows))
        return len(rows)

    def append(self, row: dict[str, Any]) -> bool:
        """Log and buffer a row; True when a batch is ready to be written."""
        line = json.dumps(row, default=_encode, separators=(",", ":")) + "\n"
        with self._rows_lock:
            if self._wal is not None:
                self._wal.write(line)
                self._wal.flush()  # in the OS's hands: survives the process
            self._rows.append(row)
            return len(self._rows) >= self.batch_rows

    def _open_segment(self) -> None:
        """Start a new log segment (caller holds the rows lock)."""
        if self._wal is not None:
            self._wal.close()
        path = self.wal_dir / f"{self.kind}-{self._segment:012d}.jsonl"
        self._segment += 1
        self._wal = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by the next call

    def close(self) -> None:
        with self._rows_lock:
            if self._wal is not None:
                self._wal.close()
                self._wal = None

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
                if rows and self._wal is not None:
                    # Every segment before the new one holds only rows being written now.
                    self._open_segment()
                    done_below = self._segment - 1
                else:
                    done_below = None
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
            if done_below is not None:
                for segment in self.wal_dir.glob(f"{self.kind}-*.jsonl"):
                    if _segment_number(segment) < done_below:
                        segment.unlink(missing_ok=True)
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


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot log {type(value).__name__}")


def _segment_number(path: Path) -> int:
    try:
        return int(path.stem.rsplit("-", 1)[-1])
    except ValueError:
        return -1


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
