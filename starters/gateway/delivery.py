"""Delivering stored events to the coordinators, in batched `trigger_batch` signals.

The `Deliverer` takes the oldest pending events (woken by each intake commit, and every
`poll` seconds for what a previous run left), groups them per model and sends each group in
signals of at most `per_signal` events (signal-with-start: a model's first event starts its
coordinator). A delivered signal's events are deleted. A send that fails is retried
`attempts` times with exponential backoff; then it and the group's unsent rest go to the
dead-letter store with the reason. An event that no longer validates goes there at once.
Coordinators deduplicate by event id, so a signal sent twice (a retry after a lost answer, a
restart between sending and deleting, a replay) changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import ValidationError
from temporalio.service import RPCError, RPCStatusCode
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from starters.gateway import pending
from starters.gateway.database import DatabaseThread, now_text, transaction
from starters.gateway.metrics import GatewayMetrics, Outcome
from starters.gateway.temporal import TemporalLink, TemporalUnavailable
from workflows.common.models import describe_validation_error
from workflows.common.names import validate_model_name
from workflows.coordinator.triggers import MAX_EVENTS_PER_BATCH, TriggerEvent

logger = logging.getLogger(__name__)
K = TypeVar("K")

# Errors of a server that is there but cannot serve now: worth another attempt.
_TRANSIENT = frozenset(
    {
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.RESOURCE_EXHAUSTED,
        RPCStatusCode.ABORTED,
        RPCStatusCode.CANCELLED,
        RPCStatusCode.UNKNOWN,
        RPCStatusCode.INTERNAL,
    }
)


@dataclass(frozen=True)
class DeliveryPolicy:
    per_signal: int = 200
    # Pending events read per round (every model's groups are sent concurrently).
    round_size: int = 2000
    attempts: int = 3
    backoff_seconds: float = 0.5  # before the second attempt; doubling up to max_backoff
    max_backoff_seconds: float = 5.0
    # After a wake-up, wait this long for the rest of a burst to be committed.
    linger_seconds: float = 0.05
    poll_seconds: float = 5.0

    def __post_init__(self) -> None:
        if not 1 <= self.per_signal <= MAX_EVENTS_PER_BATCH:
            raise ValueError(f"per_signal must be 1..{MAX_EVENTS_PER_BATCH}")
        if self.round_size < 1 or self.attempts < 1:
            raise ValueError("round_size and attempts must be at least 1")
        if min(self.backoff_seconds, self.max_backoff_seconds, self.linger_seconds) < 0:
            raise ValueError("backoff and linger must not be negative")
        if self.poll_seconds <= 0:
            raise ValueError("poll_seconds must be positive")


class DeliveryFailed(Exception):
    def __init__(self, reason: str, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


def classify(err: BaseException) -> DeliveryFailed:
    """The dead-letter reason for a failed send, and whether another attempt may succeed."""
    if isinstance(err, DeliveryFailed):
        return err
    if isinstance(err, TemporalUnavailable):
        return DeliveryFailed(f"Temporal unreachable: {err}", retryable=True)
    if isinstance(err, RPCError):
        if err.status is RPCStatusCode.UNAVAILABLE:
            return DeliveryFailed(f"Temporal unreachable: {err.message}", retryable=True)
        if err.status in _TRANSIENT:
            return DeliveryFailed(f"Temporal error ({err.status.name}): {err.message}", True)
        return DeliveryFailed(
            f"Temporal refused the signal ({err.status.name}): {err.message}", retryable=False
        )
    if isinstance(err, ValidationError):
        return DeliveryFailed(describe_validation_error(err), retryable=False)
    if isinstance(err, ValueError):
        return DeliveryFailed(f"invalid: {err}", retryable=False)
    return DeliveryFailed(f"{type(err).__name__}: {err}", retryable=True)


@dataclass(frozen=True)
class Failure(Generic[K]):
    keys: list[K]
    reason: str
    attempts: int


async def send_once(link: TemporalLink, model: str, events: Sequence[TriggerEvent]) -> None:
    try:
        coordinators = await link.coordinators()
        await coordinators.send_triggers(model, events, per_signal=len(events))
    except Exception as err:
        failed = classify(err)
        if not isinstance(err, TemporalUnavailable | RPCError):
            logger.warning("sending to %s failed: %s", model, failed.reason, exc_info=err)
        raise failed from err


async def send_with_retries(
    link: TemporalLink, model: str, events: Sequence[TriggerEvent], policy: DeliveryPolicy
) -> None:
    """One signal, retried with backoff while the failure is transient; raises DeliveryFailed."""
    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.attempts),
        wait=wait_exponential(multiplier=policy.backoff_seconds, max=policy.max_backoff_seconds),
        retry=retry_if_exception(lambda e: isinstance(e, DeliveryFailed) and e.retryable),
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            await send_once(link, model, events)


async def send_grouped(
    link: TemporalLink,
    model: str,
    events: Sequence[tuple[K, TriggerEvent]],
    policy: DeliveryPolicy,
    on_sent: Callable[[list[K]], Awaitable[None]],
) -> list[Failure[K]]:
    """Send one model's events in signals of `per_signal`, calling `on_sent` after each.
    A transient failure that outlasts the retries fails the rest too (Temporal is away: no
    point waiting once per signal); a refused signal fails only its own events."""
    failures: list[Failure[K]] = []
    chunks = [events[i : i + policy.per_signal] for i in range(0, len(events), policy.per_signal)]
    for index, chunk in enumerate(chunks):
        keys = [key for key, _ in chunk]
        try:
            await send_with_retries(link, model, [event for _, event in chunk], policy)
        except DeliveryFailed as failed:
            attempts = policy.attempts if failed.retryable else 1
            failures.append(Failure(keys, failed.reason, attempts))
            if failed.retryable:
                rest = [key for later in chunks[index + 1 :] for key, _ in later]
                if rest:
                    failures.append(Failure(rest, failed.reason, 0))
                break
            continue
        await on_sent(keys)
    return failures


def parse_events(
    rows: Sequence[tuple[K, str]],
) -> tuple[list[tuple[K, TriggerEvent]], list[Failure[K]]]:
    """Stored event JSON back to TriggerEvents; those that no longer validate fail at once."""
    valid: list[tuple[K, TriggerEvent]] = []
    invalid: list[Failure[K]] = []
    for key, text in rows:
        try:
            valid.append((key, TriggerEvent.model_validate_json(text)))
        except ValidationError as err:
            invalid.append(Failure([key], describe_validation_error(err), 0))
    return valid, invalid


class Deliverer:
    def __init__(
        self,
        db: DatabaseThread,
        link: TemporalLink,
        policy: DeliveryPolicy,
        metrics: GatewayMetrics,
    ) -> None:
        self.db = db
        self.link = link
        self.policy = policy
        self.metrics = metrics
        self._wake = asyncio.Event()
        self._wake.set()  # start with a round: a previous run may have left events pending

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation
            # that arrives as the event is set, and the gateway's shutdown then waits forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.policy.poll_seconds):
                    await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self.policy.linger_seconds)
            try:
                while await self.deliver_round():
                    pass
            except Exception:
                # The database failed (disk full, locked too long): the events stay pending
                # and the next round tries again.
                logger.exception("delivery round failed; retrying in %ss", self.policy.poll_seconds)

    async def deliver_round(self) -> bool:
        """Deliver up to `round_size` pending events; True when more may be waiting."""
        size = self.policy.round_size
        rows = await self.db.run(lambda conn: pending.take(conn, size))
        groups: dict[str, list[pending.PendingEvent]] = defaultdict(list)
        for row in rows:
            groups[row.model].append(row)
        await asyncio.gather(*(self._deliver(model, group) for model, group in groups.items()))
        return len(rows) == size

    async def _deliver(self, model: str, rows: list[pending.PendingEvent]) -> None:
        by_id = {row.id: row for row in rows}
        try:
            validate_model_name(model)
        except ValueError as err:
            await self._bury([Failure(list(by_id), str(err), 0)], by_id)
            return
        valid, invalid = parse_events([(row.id, row.event) for row in rows])

        async def sent(ids: list[int]) -> None:
            await self.db.run(lambda conn: _delete(conn, ids))
            for row in (by_id[i] for i in ids):
                self.metrics.events(row.source, Outcome.DELIVERED)

        failures = await send_grouped(self.link, model, valid, self.policy, sent)
        await self._bury(invalid + failures, by_id)

    async def _bury(
        self, failures: list[Failure[int]], by_id: dict[int, pending.PendingEvent]
    ) -> None:
        if not failures:
            return
        now = now_text()

        def write(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                for failure in failures:
                    rows = [by_id[i] for i in failure.keys]
                    pending.bury(conn, rows, failure.reason, failure.attempts, now)

        await self.db.run(write)
        for failure in failures:
            logger.warning("%d event(s) dead-lettered: %s", len(failure.keys), failure.reason)
            for key in failure.keys:
                self.metrics.events(by_id[key].source, Outcome.DEAD_LETTERED)


def _delete(conn: sqlite3.Connection, ids: list[int]) -> None:
    with transaction(conn):
        pending.delete(conn, ids)
