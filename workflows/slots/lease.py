"""A loop's side of the global training limit: ask for a slot, wait for it, give it back.

Workflow code (deterministic); used by `RetrainingLoop` and by the test doubles alike, so the
tests exercise exactly this code. The workflow forwards its `training_slot_granted` signal to
`granted`, and trains inside `async with slot.held(on_change): ...`. The slot is released
whatever happens inside, cancellation included, and also when the loop stops waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import FailureError

from workflows.common.names import ActivityName
from workflows.common.retries import LIVENESS

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from workflows.common import metrics, names
    from workflows.slots.models import SlotGrant, SlotRelease, SlotRequest, SlotTicket, SlotWait

# Asking is quick; it only fails while Temporal itself is unreachable or the queue is full, and
# then trying again later is the loop's way of waiting.
REQUEST_RETRY = RetryPolicy(maximum_interval=timedelta(minutes=1))
REQUEST_TIMEOUT = timedelta(minutes=1)
# While waiting, ask again this often: it changes nothing on the limiter, but a limiter stopped
# (or replaced) meanwhile would otherwise leave the loop waiting forever.
RECHECK_EVERY = timedelta(minutes=10)


class TrainingSlot:
    def __init__(self, model: str, priority: int) -> None:
        self._loop_id = workflow.info().workflow_id
        self._model = model
        self._priority = priority
        self._grant: SlotGrant | None = None
        self.record: SlotWait | None = None

    def granted(self, payload: tuple[Any, ...]) -> None:
        """The `training_slot_granted` signal's handler body. Untyped: a malformed grant is
        logged and ignored, never fails the workflow task. The limiter sends a grant to the
        workflow id that asked, so the one that arrives is this loop's (not compared with the
        workflow id, which replays of recorded histories do not keep)."""
        try:
            if len(payload) != 1:
                raise ValueError(f"expected one object, got {len(payload)} arguments")
            grant = SlotGrant.model_validate(payload[0])
        except (ValidationError, ValueError) as err:
            workflow.logger.warning("ignored training_slot_granted: %s", err)
            return
        # A repeated grant (the limiter continued-as-new before it knew this one arrived)
        # keeps the first.
        if self._grant is None:
            self._grant = grant

    @asynccontextmanager
    async def held(self, on_change: Callable[[SlotWait], None]) -> AsyncIterator[SlotWait | None]:
        """Hold a slot for the block; yields None when no limiter runs (no limit at all).
        `on_change` sees the record when the loop starts waiting, is granted and releases."""
        requested_at = workflow.now()
        request = SlotRequest(
            loop_id=self._loop_id,
            model=self._model,
            priority=self._priority,
            requested_at=requested_at,
        )
        ticket = await self._ask(request)
        if not ticket.limiter_running:
            yield None
            return
        record = self.record = SlotWait(
            limiter_id=names.TRAINING_SLOTS_ID,
            requested_at=requested_at,
            position=ticket.position,
            limit=ticket.limit,
        )
        outcome = "trained"
        evicted = False
        try:
            if self._grant is None and not ticket.holding:
                on_change(record)
            while self._grant is None:
                try:
                    await workflow.wait_condition(
                        lambda: self._grant is not None, timeout=RECHECK_EVERY
                    )
                except TimeoutError:
                    ticket = await self._ask(request)
                    if not ticket.limiter_running:
                        record.note = "the limiter stopped while the loop waited: no limit"
                        break
                    record.position = ticket.position
            now = workflow.now()
            record.granted_at = self._grant.granted_at if self._grant else now
            record.waited_seconds = max(0.0, (now - requested_at).total_seconds())
            metrics.observe(
                workflow.metric_meter(),
                metrics.TRAINING_SLOT_WAIT,
                {"model": self._model},
                record.waited_seconds,
            )
            on_change(record)
            yield record
        except GeneratorExit:
            # The worker dropped this run from its cache (shutdown, eviction): not an ending;
            # the run carries on, replayed elsewhere, and must issue no command here.
            evicted = True
            raise
        except BaseException as err:  # cancellation included: the slot goes back either way
            outcome = (
                "cancelled"
                if isinstance(err, asyncio.CancelledError)
                else f"ended: {type(err).__name__}"
            )
            raise
        finally:
            if not evicted:
                await self._release(outcome if self._grant else f"stopped waiting ({outcome})")
                record.released_at = workflow.now()
                on_change(record)

    async def _ask(self, request: SlotRequest) -> SlotTicket:
        ticket: SlotTicket = await workflow.execute_activity(
            ActivityName.REQUEST_TRAINING_SLOT,
            request,
            result_type=SlotTicket,
            start_to_close_timeout=REQUEST_TIMEOUT,
            heartbeat_timeout=LIVENESS,
            retry_policy=REQUEST_RETRY,
        )
        return ticket

    async def _release(self, reason: str) -> None:
        handle = workflow.get_external_workflow_handle(names.TRAINING_SLOTS_ID)
        try:
            await handle.signal("release", SlotRelease(loop_id=self._loop_id, reason=reason))
        except FailureError as err:
            # The limiter is gone (stopped by an operator): there is nothing to give back.
            workflow.logger.warning("could not release the training slot: %s", err)
