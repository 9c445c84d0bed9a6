"""Delivering stored events to the coordinators, in batched `submit_triggers` updates.

The `Deliverer` takes the oldest pending events that are due (woken by each intake commit, by
the next retry coming due, and every `poll` seconds), groups them per model and sends each
group in updates of at most `per_batch` events and `max_batch_bytes` (a model's first events
start its coordinator). The update answers with a verdict per event:

- decided (started, buffered, deferred, a duplicate, ...): deleted from the store;
- refused for now (`retry`: the coordinator's backlog is full, in a storm): kept pending and
  sent again after a backoff, so nothing is lost for good and nothing needs a blind resend;
- invalid (the coordinator refused the event itself): dead-lettered with the reason.

While Temporal cannot be reached (down, restarting, no worker answering in `rpc_timeout`), the
events stay pending and are retried with exponential backoff (`backoff_seconds` doubling up to
`max_backoff_seconds`) for as long as it takes; only a refusal that another attempt cannot
change (a malformed request) dead-letters them. Coordinators deduplicate by event id, so an
update sent twice (a retry after a lost answer, a restart between sending and deleting)
changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

from google.protobuf.message import DecodeError
from pydantic import ValidationError
from temporalio.api.errordetails.v1 import WorkflowNotReadyFailure
from temporalio.client import WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError
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
from workflows.coordinator.models import EventVerdict
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
        # An update to a workflow that is just continuing-as-new, or gone between start and
        # update: asking again finds the new run.
        RPCStatusCode.NOT_FOUND,
    }
)


def _workflow_not_ready(err: RPCError) -> bool:
    """Temporal's WorkflowNotReady (FAILED_PRECONDITION): the coordinator's workflow task failed
    while the update waited, e.g. a worker's completion racing a server restart. The update was
    not applied and the task is retried, so the batch is sent again (the coordinator drops
    events it already has); a task that keeps failing keeps the events pending, not lost."""
    try:
        details = err.grpc_status.details
    except DecodeError:  # an unparsable status carries no details to go by
        return False
    return any(detail.Is(WorkflowNotReadyFailure.DESCRIPTOR) for detail in details)


@dataclass(frozen=True)
class DeliveryPolicy:
    per_batch: int = 200
    # An update's events, as JSON: far under Temporal's 2 MB payload limit.
    max_batch_bytes: int = 512 * 1024
    # Pending events read per round (every model's groups are sent concurrently).
    round_size: int = 2000
    # Immediate attempts per batch in `retrain dlq replay` (the deliverer retries for ever).
    attempts: int = 3
    # The deliverer's wait before an event's next attempt: doubling from this up to the max.
    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 60.0
    # How long an update may wait for a worker to answer before it counts as a failure.
    rpc_timeout_seconds: float = 30.0
    # After a wake-up, wait this long for the rest of a burst to be committed.
    linger_seconds: float = 0.05
    poll_seconds: float = 5.0

    def __post_init__(self) -> None:
        if not 1 <= self.per_batch <= MAX_EVENTS_PER_BATCH:
            raise ValueError(f"per_batch must be 1..{MAX_EVENTS_PER_BATCH}")
        if self.round_size < 1 or self.attempts < 1 or self.max_batch_bytes < 1024:
            raise ValueError("round_size and attempts must be at least 1, max_batch_bytes 1024")
        if min(self.backoff_seconds, self.max_backoff_seconds, self.linger_seconds) < 0:
            raise ValueError("backoff and linger must not be negative")
        if self.poll_seconds <= 0 or self.rpc_timeout_seconds <= 0:
            raise ValueError("poll_seconds and rpc_timeout_seconds must be positive")

    def backoff(self, attempts: int) -> timedelta:
        """The wait before the attempt after `attempts` failed ones."""
        seconds = self.backoff_seconds * 2 ** min(max(attempts - 1, 0), 30)
        return timedelta(seconds=min(seconds, self.max_backoff_seconds))


class DeliveryFailed(Exception):
    def __init__(self, reason: str, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


def classify(err: BaseException) -> DeliveryFailed:
    """The reason a send failed, and whether another attempt may succeed."""
    if isinstance(err, DeliveryFailed):
        return err
    if isinstance(err, TemporalUnavailable):
        return DeliveryFailed(f"Temporal unreachable: {err}", retryable=True)
    if isinstance(err, WorkflowUpdateRPCTimeoutOrCancelledError):
        return DeliveryFailed("no worker answered the update in time", retryable=True)
    if isinstance(err, WorkflowUpdateFailedError):
        cause = err.cause
        message = getattr(cause, "message", None) or str(cause)
        return DeliveryFailed(f"the coordinator refused the batch: {message}", retryable=False)
    if isinstance(err, RPCError):
        if err.status is RPCStatusCode.UNAVAILABLE:
            return DeliveryFailed(f"Temporal unreachable: {err.message}", retryable=True)
        if err.status in _TRANSIENT or _workflow_not_ready(err):
            return DeliveryFailed(f"Temporal error ({err.status.name}): {err.message}", True)
        return DeliveryFailed(
            f"Temporal refused the update ({err.status.name}): {err.message}", retryable=False
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


@dataclass(frozen=True)
class Outcomes(Generic[K]):
    """What became of one model's events in one pass."""

    delivered: list[K]
    # Refused for now by the coordinator, or not sent because Temporal is away: try later.
    later: list[tuple[K, str]]
    # Refused for good: dead letters.
    failed: list[Failure[K]]


async def send_once(
    link: TemporalLink, model: str, events: Sequence[TriggerEvent], policy: DeliveryPolicy
) -> list[EventVerdict]:
    try:
        coordinators = await link.coordinators()
        answer = await coordinators.submit_triggers(
            model, events, rpc_timeout=timedelta(seconds=policy.rpc_timeout_seconds)
        )
    except Exception as err:
        failed = classify(err)
        expected = (TemporalUnavailable, RPCError, WorkflowUpdateRPCTimeoutOrCancelledError)
        if not isinstance(err, expected):
            logger.warning("sending to %s failed: %s", model, failed.reason, exc_info=err)
        raise failed from err
    if len(answer.verdicts) != len(events):
        raise DeliveryFailed(f"{len(answer.verdicts)} verdicts for {len(events)} events", True)
    return answer.verdicts


async def send_with_retries(
    link: TemporalLink, model: str, events: Sequence[TriggerEvent], policy: DeliveryPolicy
) -> list[EventVerdict]:
    """One batch, retried `attempts` times while the failure is transient."""
    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.attempts),
        wait=wait_exponential(
            multiplier=policy.backoff_seconds, max=min(policy.max_backoff_seconds, 5.0)
        ),
        retry=retry_if_exception(lambda e: isinstance(e, DeliveryFailed) and e.retryable),
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await send_once(link, model, events, policy)
    raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover


def batches(
    events: Sequence[tuple[K, TriggerEvent, int]], policy: DeliveryPolicy
) -> list[list[tuple[K, TriggerEvent, int]]]:
    """Consecutive batches of at most `per_batch` events and `max_batch_bytes` (each event's
    JSON size is the third item); an event alone over the bytes still goes alone."""
    out: list[list[tuple[K, TriggerEvent, int]]] = []
    current: list[tuple[K, TriggerEvent, int]] = []
    size = 0
    for item in events:
        if current and (
            len(current) >= policy.per_batch or size + item[2] > policy.max_batch_bytes
        ):
            out.append(current)
            current, size = [], 0
        current.append(item)
        size += item[2]
    if current:
        out.append(current)
    return out


async def send_grouped(
    link: TemporalLink,
    model: str,
    events: Sequence[tuple[K, TriggerEvent, int]],
    policy: DeliveryPolicy,
    on_sent: Callable[[Outcomes[K]], Awaitable[None]],
    retries: bool = False,
) -> None:
    """Send one model's events in batches, calling `on_sent` with each batch's outcomes. A
    transient failure postpones this batch and the rest (Temporal is away: no point trying
    each batch); a refused batch fails only its own events. `retries`: try each batch
    `attempts` times first (the interactive `retrain dlq replay`)."""
    groups = batches(events, policy)
    for index, group in enumerate(groups):
        keys = [key for key, _, _ in group]
        try:
            send = send_with_retries if retries else send_once
            verdicts = await send(link, model, [event for _, event, _ in group], policy)
        except DeliveryFailed as failed:
            if failed.retryable:
                rest = [key for later in groups[index:] for key, _, _ in later]
                await on_sent(Outcomes([], [(key, failed.reason) for key in rest], []))
                return
            attempts = policy.attempts if retries else 1
            await on_sent(Outcomes([], [], [Failure(keys, failed.reason, attempts)]))
            continue
        delivered, later, failed_keys = [], [], []
        for key, verdict in zip(keys, verdicts, strict=True):
            if verdict.retry:
                later.append((key, f"refused for now: {verdict.reason.value}"))
            elif verdict.error is not None:
                failed_keys.append(
                    Failure([key], f"the coordinator refused it: {verdict.error}", 1)
                )
            else:
                delivered.append(key)
        if later:
            # The coordinator's backlog is full: the rest would be refused too; try later.
            rest = [key for after in groups[index + 1 :] for key, _, _ in after]
            later += [(key, "not sent: the coordinator's backlog is full") for key in rest]
            await on_sent(Outcomes(delivered, later, failed_keys))
            return
        await on_sent(Outcomes(delivered, later, failed_keys))


def parse_events(
    rows: Sequence[tuple[K, str]],
) -> tuple[list[tuple[K, TriggerEvent, int]], list[Failure[K]]]:
    """Stored event JSON back to TriggerEvents (with their size); those that no longer
    validate fail at once."""
    valid: list[tuple[K, TriggerEvent, int]] = []
    invalid: list[Failure[K]] = []
    for key, text in rows:
        try:
            valid.append((key, TriggerEvent.model_validate_json(text), len(text)))
        except ValidationError as err:
            invalid.append(Failure([key], describe_validation_error(err, TriggerEvent), 0))
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
            sleep = await self._sleep_seconds()
            if sleep > 0:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a
                # cancellation that arrives as the event is set, and the gateway's shutdown
                # then waits forever.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(sleep):
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

    async def _sleep_seconds(self) -> float:
        """Until the next postponed event is due, at most `poll_seconds`."""
        try:
            due = await self.db.run(pending.next_due)
        except sqlite3.Error:
            return self.policy.poll_seconds
        if due is None:
            return self.policy.poll_seconds
        wait = (datetime.fromisoformat(due) - datetime.now(UTC)).total_seconds()
        return min(max(wait, 0.0), self.policy.poll_seconds)

    async def deliver_round(self) -> bool:
        """Deliver up to `round_size` due events; True when more may be due now."""
        size = self.policy.round_size
        now = now_text()
        rows = await self.db.run(lambda conn: pending.take(conn, size, due_by=now))
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
            await self._record(Outcomes([], [], [Failure(list(by_id), str(err), 0)]), by_id)
            return
        valid, invalid = parse_events([(row.id, row.event) for row in rows])
        if invalid:
            await self._record(Outcomes([], [], invalid), by_id)

        async def sent(outcomes: Outcomes[int]) -> None:
            await self._record(outcomes, by_id)

        await send_grouped(self.link, model, valid, self.policy, sent)

    async def _record(
        self, outcomes: Outcomes[int], by_id: dict[int, pending.PendingEvent]
    ) -> None:
        now = datetime.now(UTC)
        postponed = [
            (key, reason, (now + self.policy.backoff(by_id[key].attempts + 1)).isoformat())
            for key, reason in outcomes.later
        ]

        def write(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                pending.delete(conn, outcomes.delivered)
                pending.postpone(conn, postponed)
                for failure in outcomes.failed:
                    rows = [by_id[i] for i in failure.keys]
                    pending.bury(conn, rows, failure.reason, failure.attempts, now.isoformat())

        await self.db.run(write)
        for key in outcomes.delivered:
            self.metrics.events(by_id[key].source, Outcome.DELIVERED)
        for key, _ in outcomes.later:
            self.metrics.events(by_id[key].source, Outcome.POSTPONED)
        if outcomes.later:
            logger.info(
                "%d event(s) postponed: %s", len(outcomes.later), outcomes.later[0][1][:300]
            )
        for failure in outcomes.failed:
            logger.warning("%d event(s) dead-lettered: %s", len(failure.keys), failure.reason)
            for key in failure.keys:
                self.metrics.events(by_id[key].source, Outcome.DEAD_LETTERED)
