"""Durable intake: a request is answered only once its events are committed.

Requests hand their events to one writer task through a queue; the writer commits everything
that queued up meanwhile in a single transaction (one fsync for a whole burst instead of one
per request), then resolves each request's future. A failed commit fails every request of
that transaction (answered 503: the sender retries; nothing was acknowledged). With
`max_pending` events already waiting (Temporal away for long, a storm), further requests are
refused whole (`IntakeFull`, answered 503 with Retry-After) rather than filling the disk.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Sequence

from starters.gateway import pending
from starters.gateway.database import DatabaseThread, now_text, transaction

# The largest request body the gateway reads (413 beyond); `retrain gateway --max-body-bytes`.
DEFAULT_MAX_BODY_BYTES = 1024 * 1024

logger = logging.getLogger(__name__)

_Item = tuple[list[pending.NewEvent], "asyncio.Future[None]"]


class IntakeClosed(RuntimeError):
    """The gateway is shutting down and takes no more events."""


class IntakeFailed(RuntimeError):
    """The events could not be committed."""


class IntakeFull(RuntimeError):
    """The store holds `max_pending` undelivered events: nothing more until they drain."""


class Intake:
    def __init__(
        self,
        db: DatabaseThread,
        on_commit: Callable[[Sequence[pending.NewEvent]], None],
        max_requests_per_commit: int = 1000,
        max_pending: int = 200_000,
    ) -> None:
        self.db = db
        self.on_commit = on_commit
        self.max_requests_per_commit = max_requests_per_commit
        self.max_pending = max_pending
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue()
        self._closed = False

    async def submit(self, events: list[pending.NewEvent]) -> None:
        """Return once `events` are committed; raise IntakeFailed or IntakeClosed otherwise."""
        if self._closed:
            raise IntakeClosed("the gateway is shutting down")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((events, future))
        await future

    async def run(self) -> None:
        """The writer: until `close`, commit whatever has queued up, then answer it."""
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < self.max_requests_per_commit and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            await self._commit(batch)

    async def _commit(self, batch: list[_Item]) -> None:
        def write(conn: sqlite3.Connection) -> list[_Item]:
            """Commit the requests that fit under max_pending (in order); the ones that fit."""
            with transaction(conn):
                room = self.max_pending - pending.count(conn)
                taken: list[_Item] = []
                for item in batch:
                    if len(item[0]) > room:
                        break
                    room -= len(item[0])
                    taken.append(item)
                pending.add(conn, [event for request, _ in taken for event in request], now_text())
            return taken

        try:
            taken = await self.db.run(write)
        # Whatever failed, every waiting request must get its answer (503), never hang.
        except Exception as err:
            count = sum(len(request) for request, _ in batch)
            logger.error("could not store %d event(s): %s", count, err, exc_info=err)
            for _, future in batch:
                if not future.done():
                    future.set_exception(IntakeFailed(f"could not store the events: {err}"))
            return
        full = IntakeFull(
            f"the gateway holds {self.max_pending} undelivered events (is Temporal reachable?); "
            "nothing was stored: retry later"
        )
        for index, (_, future) in enumerate(batch):
            # A request whose client went away is committed all the same (at-least-once).
            if not future.done():
                if index < len(taken):
                    future.set_result(None)
                else:
                    future.set_exception(full)
        if len(taken) < len(batch):
            logger.warning("store full: refused %d request(s)", len(batch) - len(taken))
        self.on_commit([event for request, _ in taken for event in request])

    def close(self) -> None:
        """Refuse new events; the writer commits what is queued and then stops."""
        self._closed = True
        self._queue.put_nowait(None)
