"""TrainingSlots: the global limit of K concurrent trainings across every model (`training-slots`).

A semaphore as an entity workflow. Loops signal `request` before training and `release` after
(whatever the outcome); the limiter grants free slots in priority order and tells each loop
with the signal `training_slot_granted`. Signals, not updates: during an incident hundreds of
loops ask at once, far above the 10 updates a workflow takes in flight.

Handlers are synchronous, so each message applies atomically (`workflows/slots/rules.py`); the
main loop sends the grants, and, while loops wait, looks for holders and waiters whose
executions ended without releasing (terminated, timed out) and frees their places. The state is
one `SlotsState`, carried through continue-as-new when the server suggests it.

Opt-in: nothing limits trainings unless this workflow runs (`retrain worker
--max-concurrent-trainings K`, `retrain slots set-limit K`).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, FailureError

from workflows.common.names import ActivityName
from workflows.common.retries import LIVENESS
from workflows.slots.details import render_slots

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from workflows.common import metrics, names
    from workflows.common.errors import activity_failure
    from workflows.common.models import describe_validation_error
    from workflows.slots import rules as slot_rules
    from workflows.slots.models import (
        SLOT_GRANTED_SIGNAL,
        ClosedLoops,
        LoopsToCheck,
        PositionQuery,
        SetLimit,
        SlotGrant,
        SlotPosition,
        SlotRelease,
        SlotRequest,
        SlotsState,
        SlotsStatus,
        TrainingSlotsInput,
    )

RECLAIM_RETRY = RetryPolicy(maximum_attempts=3, maximum_interval=timedelta(seconds=30))
_Message = TypeVar("_Message", SlotRequest, SlotRelease, SetLimit)


@workflow.defn(name=names.TRAINING_SLOTS_WORKFLOW)
class TrainingSlots:
    @workflow.init
    def __init__(self, input: TrainingSlotsInput) -> None:
        self._state = input.state or SlotsState(limit=input.limit)
        self._armed_reclaim: datetime | None = None
        self._stale = True
        self._visible: asyncio.Task[None] | None = None

    @workflow.run
    async def run(self, input: TrainingSlotsInput) -> None:
        state = self._state
        self._visible = asyncio.create_task(self._keep_visible())
        while True:
            due = self._armed_reclaim = slot_rules.next_reclaim_at(state)
            timeout = None if due is None else due - workflow.now()
            if timeout is None or timeout > timedelta(0):  # due already: no zero-length timer
                with contextlib.suppress(asyncio.TimeoutError):
                    await workflow.wait_condition(self._needs_attention, timeout=timeout)
            await self._deliver_grants()
            due = slot_rules.next_reclaim_at(state)
            if due is not None and due <= workflow.now():
                await self._reclaim()
                await self._deliver_grants()
            if workflow.info().is_continue_as_new_suggested():
                # Handlers are synchronous: whatever they decided meanwhile (grants not yet
                # told) is in the state, and the next run tells them.
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(TrainingSlotsInput(limit=state.limit, state=state))

    # ------------------------------------------------------------------ messages

    # Signals are untyped so that a malformed payload is recorded, not dropped by the SDK.
    @workflow.signal(name="request")
    def request(self, *payload: Any) -> None:
        request = self._parse("request", SlotRequest, payload)
        if request is not None:
            slot_rules.request_slot(self._state, request, workflow.now())
            self._stale = True

    @workflow.signal(name="release")
    def release(self, *payload: Any) -> None:
        release = self._parse("release", SlotRelease, payload)
        if release is not None:
            slot_rules.release_slot(self._state, release.loop_id, workflow.now(), release.reason)
            self._stale = True

    @workflow.update(name="set_limit")
    def set_limit(self, change: Any) -> SlotsStatus:
        """Change K (1..1000); returns the status after the grants it allowed."""
        self._apply_limit(SetLimit.model_validate(change))
        return self.status()

    # The same as a signal: a worker starting up sets the limit with signal-with-start, which
    # needs no worker to answer (an update would wait for one, possibly itself).
    @workflow.signal(name="set_limit")
    def set_limit_signal(self, *payload: Any) -> None:
        change = self._parse("set_limit", SetLimit, payload)
        if change is not None:
            self._apply_limit(change)

    def _apply_limit(self, change: SetLimit) -> None:
        slot_rules.set_limit(self._state, change.limit, workflow.now(), change.by)
        workflow.logger.info(
            "training slot limit %s by %s: %s", change.limit, change.by, change.reason
        )
        self._stale = True

    @set_limit.validator
    def _validate_limit(self, change: Any) -> None:
        try:
            SetLimit.model_validate(change)
        except ValidationError as err:
            raise ValueError(describe_validation_error(err)) from None

    @workflow.query(name="status")
    def status(self) -> SlotsStatus:
        return slot_rules.status(self._state)

    @workflow.query(name="position")
    def position(self, query: PositionQuery) -> SlotPosition:
        return slot_rules.position(self._state, query.loop_id)

    def _parse(self, name: str, model: type[_Message], payload: tuple[Any, ...]) -> _Message | None:
        try:
            if len(payload) != 1:
                raise ValueError(f"expected one object, got {len(payload)} arguments")
            return model.model_validate(payload[0])
        except ValidationError as err:
            reason = describe_validation_error(err)
        except ValueError as err:
            reason = str(err)
        workflow.logger.warning("ignored %s signal: %s", name, reason)
        slot_rules.ignore(self._state, name, reason, workflow.now())
        self._stale = True
        return None

    # ------------------------------------------------------------------ effects

    def _needs_attention(self) -> bool:
        state = self._state
        if state.unnotified:
            return True
        # A reclaim that became due earlier (someone joined the queue) re-arms the timer.
        due = slot_rules.next_reclaim_at(state)
        if due is not None and (self._armed_reclaim is None or due < self._armed_reclaim):
            return True
        return workflow.info().is_continue_as_new_suggested()

    async def _deliver_grants(self) -> None:
        state = self._state
        while state.unnotified:
            await asyncio.gather(*(self._tell(loop_id) for loop_id in list(state.unnotified)))

    async def _tell(self, loop_id: str) -> None:
        state = self._state
        holder = next((h for h in state.holders if h.loop_id == loop_id), None)
        if holder is None:  # released or reclaimed since it was granted
            slot_rules.grant_delivered(state, loop_id)
            return
        grant = SlotGrant(loop_id=loop_id, granted_at=holder.granted_at, limit=state.limit)
        try:
            await workflow.get_external_workflow_handle(loop_id).signal(SLOT_GRANTED_SIGNAL, grant)
        except FailureError as err:
            # The loop ended meanwhile (not found or closed): the slot goes to the next one.
            workflow.logger.warning("could not tell %s of its slot: %s", loop_id, err)
            slot_rules.grant_undeliverable(state, loop_id, workflow.now(), str(err))
        else:
            slot_rules.grant_delivered(state, loop_id)
        self._stale = True

    async def _reclaim(self) -> None:
        state = self._state
        candidates = slot_rules.reclaim_candidates(state)
        try:
            found: ClosedLoops = await workflow.execute_activity(
                ActivityName.FIND_CLOSED_LOOPS,
                LoopsToCheck(loop_ids=candidates),
                result_type=ClosedLoops,
                start_to_close_timeout=timedelta(minutes=2),
                heartbeat_timeout=LIVENESS,
                retry_policy=RECLAIM_RETRY,
            )
        except ActivityError as err:
            # Try again at the next period; the queue goes on meanwhile.
            workflow.logger.error("reclaim check failed: %s", activity_failure(err))
            found = ClosedLoops()
        closed = {c.loop_id: c.status for c in found.closed}
        slot_rules.reclaim(state, closed, workflow.now())
        self._stale = True

    # ------------------------------------------------------------------ visibility

    async def _keep_visible(self) -> None:
        """Gauges and the Web UI's current details, once per workflow task rather than once
        per message (an incident delivers dozens of requests in one task)."""
        shown = ""
        while True:
            await workflow.wait_condition(lambda: self._stale)
            self._stale = False
            state = self._state
            meter = workflow.metric_meter()
            metrics.set_gauge(meter, metrics.TRAINING_SLOTS_LIMIT, {}, float(state.limit))
            metrics.set_gauge(meter, metrics.TRAINING_SLOTS_IN_USE, {}, float(len(state.holders)))
            metrics.set_gauge(meter, metrics.TRAINING_SLOTS_WAITING, {}, float(len(state.waiting)))
            updated = workflow.now().timestamp()
            metrics.set_gauge(meter, metrics.TRAINING_SLOTS_UPDATED, {}, updated)
            details = render_slots(self.status())
            if details != shown:
                shown = details
                workflow.set_current_details(details)
