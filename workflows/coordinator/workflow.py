"""ModelCoordinator: one long-lived entity workflow per model (`coordinator-<model>`).

It receives trigger events, asks the pure rules in `coordinator_rules` what to do, and carries
the effects out: start a `RetrainingLoop` child, send notifications, keep its visible state
(search attributes, current details, queries) in step. Message handlers are synchronous, so
each one applies atomically; the main loop runs timers and effects and continues-as-new when
the server suggests it, carrying the whole `CoordinatorState`.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy, SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ActivityError, ChildWorkflowError, WorkflowAlreadyStartedError

from workflows.common.names import ActivityName
from workflows.common.retries import LIVENESS

with workflow.unsafe.imports_passed_through():
    from workflows.common import metrics, names
    from workflows.common.messages import Unreadable, batch_items, decode_raw, one_message
    from workflows.common.notify import Notification, notify
    from workflows.coordinator.details import render_details
    from workflows.coordinator.models import (
        DECISIONS_PER_ARCHIVE,
        CoordinatorInput,
        CoordinatorStatus,
        Decision,
        DecisionArchive,
        DecisionsQuery,
        EventVerdict,
        LoopStart,
        PauseRequest,
        Reason,
        TriggerVerdicts,
    )
    from workflows.coordinator.rules import CoordinatorRules, Step, new_state
    from workflows.coordinator.triggers import (
        MAX_EVENTS_PER_BATCH,
        TriggerEvent,
        parse_observation,
        parse_trigger,
    )
    from workflows.loop.details import STATIC_DETAILS as LOOP_STATIC_DETAILS
    from workflows.loop.models import LoopResult, RetrainingLoopInput, result_from_failure

LOOP_WATCH_RETRY = RetryPolicy(maximum_interval=timedelta(minutes=5))
# Archiving decisions is bookkeeping: retried quickly, and what fails waits for the next try.
ARCHIVE_RETRY = RetryPolicy(maximum_attempts=3, maximum_interval=timedelta(seconds=30))
# Added with the decision archive: runs started before it do not archive.
DECISION_ARCHIVE_PATCH = "decision-archive"
# A run takes at most 2,000 updates: continue-as-new well before (a gateway delivering a storm
# sends one update per 200 events).
UPDATES_PER_RUN = 1000


@workflow.defn(name=names.COORDINATOR_WORKFLOW)
class ModelCoordinator:
    @workflow.init
    def __init__(self, input: CoordinatorInput) -> None:
        state = input.state or new_state(input.model, input.policy)
        self._rules = CoordinatorRules(state)
        self._armed_until: datetime | None = None
        self._deliveries: dict[str, asyncio.Task[None]] = {}
        # Waits on loop results end with the run; the next run watches the active loop again.
        self._loop_waits: set[asyncio.Task[None]] = set()
        self._published: tuple[bool, str] | None = None
        self._details = ""
        self._details_stale = True
        self._updates = 0
        self._archiving: asyncio.Task[None] | None = None

    @workflow.run
    async def run(self, input: CoordinatorInput) -> None:
        state = self._rules.state
        self._publish_model_name()
        self._keep(self._loop_waits, self._keep_details_fresh())
        if state.active_loop is not None and state.unstarted_loop is None:
            # Started by an earlier run, which held the child's handle: watch it anew.
            self._keep(self._loop_waits, self._watch_loop(state.active_loop.loop_id))
        while True:
            wakeup = self._rules.next_wakeup()
            self._armed_until = wakeup
            timeout = None if wakeup is None else wakeup - workflow.now()
            if timeout is None or timeout > timedelta(0):  # due already: no zero-length timer
                with contextlib.suppress(asyncio.TimeoutError):
                    await workflow.wait_condition(self._needs_attention, timeout=timeout)
            self._apply(self._rules.on_timer(workflow.now()))
            self._deliver_outbox()
            self._archive_decisions(DECISIONS_PER_ARCHIVE)
            if state.unstarted_loop is not None:
                await self._start_loop(state.unstarted_loop)
            if self._continue_as_new_due():
                # Handlers are synchronous, so they are done at once; deliveries in flight are
                # awaited. Whatever is decided meanwhile (a loop to start, notifications) is
                # carried in the state: a storm of triggers never holds continue-as-new back.
                await workflow.wait_condition(workflow.all_handlers_finished)
                if self._deliveries:
                    await asyncio.gather(*self._deliveries.values())
                if self._archiving is not None:
                    await self._archiving
                workflow.continue_as_new(CoordinatorInput(model=input.model, state=state))

    # ------------------------------------------------------------------ messages

    @workflow.signal(name="trigger")
    def trigger(self, *payload: Any) -> None:
        """Fire-and-forget trigger (Temporal UI, `temporal workflow signal`, gateways).

        Untyped on purpose: a malformed payload (even one the SDK cannot decode, which the
        worker's converter hands over raw) is recorded as an `ignore` decision with the
        validation error instead of being dropped or failing the workflow task.
        """
        now = workflow.now()
        if len(payload) != 1:
            error = f"expected one trigger object, got {len(payload)} arguments"
            self._apply(self._rules.on_invalid_trigger(None, error, now))
            return
        self._receive(payload[0], now)

    @workflow.signal(name="trigger_batch")
    def trigger_batch(self, *payload: Any) -> None:
        """`{"events": [trigger, ...]}`: up to MAX_EVENTS_PER_BATCH triggers in one signal, each
        decided (and, if malformed or undecodable, recorded as ignored) on its own."""
        now = workflow.now()
        try:
            items = batch_items(
                payload, "events", MAX_EVENTS_PER_BATCH, "trigger_batch", "triggers"
            )
        except ValueError as err:
            self._apply(self._rules.on_invalid_trigger(None, str(err), now))
            return
        for raw in items:
            self._receive(raw, now)

    @workflow.signal(name="performance_observed")
    def performance_observed(self, *payload: Any) -> None:
        """What the performance monitor measured on a window of labelled traffic (and its
        degradation trigger, if any): the adaptive policy's input. Untyped like `trigger`: a
        malformed payload is recorded as an ignored decision."""
        now = workflow.now()
        try:
            if len(payload) != 1:
                raise ValueError(f"expected one observation object, got {len(payload)} arguments")
            raw = payload[0]
            if isinstance(raw, Unreadable):
                raise ValueError(raw.error)
            if isinstance(raw, RawValue):
                raw = decode_raw(raw, "observation")
            observation = parse_observation(raw)
        except ValueError as err:
            raw = payload[0] if len(payload) == 1 else None
            self._apply(self._rules.on_invalid_trigger(raw, str(err), now))
            return
        if observation.event is not None:
            self._count_trigger(observation.event)
        self._apply(self._rules.on_observation(observation, now))

    @workflow.update(name="submit_triggers")
    def submit_triggers(self, *payload: Any) -> TriggerVerdicts:
        """`{"events": [...]}` like `trigger_batch`, answered with one verdict per event: a
        sender (the gateway) resends exactly the events refused for now (`retry`)."""
        self._updates += 1
        now = workflow.now()
        items = batch_items(payload, "events", MAX_EVENTS_PER_BATCH, "submit_triggers", "triggers")
        return TriggerVerdicts(verdicts=[self._receive(raw, now) for raw in items])

    @submit_triggers.validator
    def _validate_triggers(self, *payload: Any) -> None:
        batch_items(payload, "events", MAX_EVENTS_PER_BATCH, "submit_triggers", "triggers")

    def _receive(self, raw: Any, now: datetime) -> EventVerdict:
        try:
            if isinstance(raw, Unreadable):
                raise ValueError(raw.error)
            if isinstance(raw, RawValue):
                raw = decode_raw(raw, "trigger")
            event = parse_trigger(raw)
        except ValueError as err:
            step = self._apply(self._rules.on_invalid_trigger(raw, str(err), now))
            return _verdict(step.decision, None, str(err))
        self._count_trigger(event)
        step = self._apply(self._rules.on_trigger(event, now))
        return _verdict(step.decision, event.event_id, None)

    @workflow.update(name="submit_trigger")
    def submit_trigger(self, *payload: Any) -> Decision:
        """Validated trigger: returns the decision taken for it."""
        parsed = _one_trigger(payload)
        self._updates += 1
        self._count_trigger(parsed)
        return self._apply(self._rules.on_trigger(parsed, workflow.now())).decision

    @submit_trigger.validator
    def _validate_trigger(self, *payload: Any) -> None:
        _one_trigger(payload)

    @workflow.update(name="pause")
    def pause(self, *payload: Any) -> CoordinatorStatus:
        request = one_message(payload, PauseRequest, "pause")
        self._updates += 1
        reason = f"{request.reason}; by {request.by}" if request.reason else f"by {request.by}"
        self._apply(self._rules.set_paused(True, reason, workflow.now()))
        return self.status()

    @pause.validator
    def _validate_pause(self, *payload: Any) -> None:
        one_message(payload, PauseRequest, "pause")

    @workflow.update(name="resume")
    def resume(self, *payload: Any) -> CoordinatorStatus:
        request = one_message(payload, PauseRequest, "resume")
        self._updates += 1
        workflow.logger.info("resumed by %s %s", request.by, request.reason)
        self._apply(self._rules.set_paused(False, "", workflow.now()))
        return self.status()

    @resume.validator
    def _validate_resume(self, *payload: Any) -> None:
        one_message(payload, PauseRequest, "resume")

    @workflow.update(name="set_policy")
    def set_policy(self, *payload: Any) -> CoordinatorStatus:
        """Change some policy fields (a JSON object of field: value); the rest stay as they are."""
        policy = self._rules.policy.with_changes(_policy_changes(payload))
        self._updates += 1
        self._apply(self._rules.set_policy(policy, workflow.now()))
        return self.status()

    @set_policy.validator
    def _validate_policy(self, *payload: Any) -> None:
        self._rules.policy.with_changes(_policy_changes(payload))

    @workflow.query(name="status")
    def status(self) -> CoordinatorStatus:
        return self._rules.status(workflow.now())

    @workflow.query(name="decisions")
    def decisions(self, *payload: Any) -> list[Decision]:
        """The latest decisions (`{"limit": 20}`), or those before a sequence number
        (`{"before_seq": 1200}`); older than the state holds: `retrain decisions` reads the
        archive."""
        query = one_message(payload, DecisionsQuery, "decisions") if payload else DecisionsQuery()
        decisions = self._rules.state.decisions
        if query.before_seq is not None:
            decisions = [d for d in decisions if d.seq < query.before_seq]
        return decisions[-query.limit :]

    # ------------------------------------------------------------------ effects

    def _apply(self, step: Step) -> Step:
        state = self._rules.state
        for decision in step.decisions:
            metrics.count(
                workflow.metric_meter(),
                metrics.DECISIONS,
                {
                    "model": state.model,
                    "action": decision.action.value,
                    "reason": decision.reason.value,
                },
            )
            self._record_adaptive(decision)
        if step.start is not None:
            state.unstarted_loop = step.start
        state.outbox.extend(step.notifications)
        self._details_stale = True
        self._refresh_search_attributes()
        return step

    def _record_adaptive(self, decision: Decision) -> None:
        """The adaptive policy's numbers as metrics: what keeping the model is expected to cost
        beyond a fresh one, and what a retraining costs (the dashboard plots both)."""
        numbers = decision.numbers
        excess, cost = numbers.get("expected_excess_cost"), numbers.get("retraining_cost")
        if not isinstance(excess, float | int) or not isinstance(cost, float | int):
            return
        meter, model = workflow.metric_meter(), self._rules.state.model
        labels = {"model": model}
        metrics.set_gauge(meter, metrics.ADAPTIVE_EXCESS_COST, labels, float(excess))
        metrics.set_gauge(meter, metrics.ADAPTIVE_RETRAINING_COST, labels, float(cost))
        verdict = "retrain" if numbers.get("retrain") else "keep"
        metrics.count(meter, metrics.ADAPTIVE_DECISIONS, {"model": model, "decision": verdict})

    def _needs_attention(self) -> bool:
        state = self._rules.state
        if state.unstarted_loop is not None or len(state.outbox) > len(self._deliveries):
            return True
        if self._archiving is None and len(state.unarchived) >= DECISIONS_PER_ARCHIVE:
            return True
        wakeup = self._rules.next_wakeup()
        # Re-arm only when due work moved earlier: a debounce that moves later keeps its timer,
        # which then fires, finds nothing due and sleeps again (no timer churn per event).
        if wakeup is not None and (self._armed_until is None or wakeup < self._armed_until):
            return True
        return self._continue_as_new_due()

    def _deliver_outbox(self) -> None:
        for notification in self._rules.state.outbox:
            if notification.key not in self._deliveries:
                task = asyncio.create_task(self._notify(notification))
                self._deliveries[notification.key] = task

    async def _start_loop(self, start: LoopStart) -> None:
        state = self._rules.state
        try:
            handle = await workflow.start_child_workflow(
                names.RETRAINING_LOOP_WORKFLOW,
                RetrainingLoopInput(
                    model=state.model,
                    loop_number=start.number,
                    coordinator_id=workflow.info().workflow_id,
                    trigger=start.trigger,
                    estimated_cost=start.estimated_cost,
                    policy_version=state.policy_version,
                ),
                id=start.loop_id,
                result_type=LoopResult,
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(names.MODEL_NAME, state.model),
                        SearchAttributePair(
                            names.TRIGGER_KIND, [k.value for k in start.trigger.kinds]
                        ),
                        SearchAttributePair(names.LOOP_STAGE, "started"),
                    ]
                ),
                static_summary=f"{state.model}: retraining #{start.number} "
                f"({', '.join(k.value for k in start.trigger.kinds)}, "
                f"priority {start.trigger.priority})",
                static_details=LOOP_STATIC_DETAILS,
            )
        except WorkflowAlreadyStartedError:
            # An older execution holds the id (e.g. a coordinator recreated from scratch):
            # take the next number; the main loop tries again at once.
            workflow.logger.warning("loop id %s is taken; renumbering", start.loop_id)
            state.unstarted_loop = self._rules.on_loop_id_taken(start)
            self._refresh_search_attributes()
            return
        state.unstarted_loop = None
        self._keep(self._loop_waits, self._await_child(start.loop_id, handle))

    async def _await_child(
        self, loop_id: str, handle: workflow.ChildWorkflowHandle[Any, LoopResult]
    ) -> None:
        try:
            result = await handle
        except ChildWorkflowError as err:
            result = result_from_failure(loop_id, err)
        self._loop_closed(result)

    async def _watch_loop(self, loop_id: str) -> None:
        result = await workflow.execute_activity(
            ActivityName.AWAIT_LOOP_RESULT,
            loop_id,
            result_type=LoopResult,
            start_to_close_timeout=timedelta(days=365),
            heartbeat_timeout=LIVENESS,
            retry_policy=LOOP_WATCH_RETRY,
        )
        self._loop_closed(result)

    def _loop_closed(self, result: LoopResult) -> None:
        state = self._rules.state
        if state.active_loop is not None and state.active_loop.loop_id == result.loop_id:
            labels = {"model": state.model, "status": result.status.value}
            metrics.count(workflow.metric_meter(), metrics.LOOPS_FINISHED, labels)
        self._apply(self._rules.on_loop_closed(result, workflow.now()))

    def _count_trigger(self, event: TriggerEvent) -> None:
        labels = {"model": self._rules.state.model, "kind": event.kind.value}
        meter = workflow.metric_meter()
        metrics.count(meter, metrics.TRIGGER_EVENTS, labels)
        if event.occurred_at is not None:
            # Decided in this same task: occurred -> decided is occurred -> now.
            latency = max(0.0, (workflow.now() - event.occurred_at).total_seconds())
            metrics.observe(meter, metrics.EVENT_LATENCY, labels, latency)

    def _continue_as_new_due(self) -> bool:
        return workflow.info().is_continue_as_new_suggested() or self._updates >= UPDATES_PER_RUN

    def _archive_decisions(self, at_least: int) -> None:
        """Archive the unarchived decisions in the background once `at_least` wait."""
        state = self._rules.state
        if self._archiving is not None or len(state.unarchived) < max(1, at_least):
            return
        if not workflow.patched(DECISION_ARCHIVE_PATCH):
            state.unarchived.clear()
            return
        batch = list(state.unarchived)

        async def archive() -> None:
            try:
                await workflow.execute_activity(
                    ActivityName.ARCHIVE_DECISIONS,
                    DecisionArchive(model=state.model, decisions=batch),
                    start_to_close_timeout=timedelta(seconds=30),
                    heartbeat_timeout=LIVENESS,
                    retry_policy=ARCHIVE_RETRY,
                )
            except ActivityError as err:  # kept: the next batch tries again
                workflow.logger.warning("decisions not archived: %s", err.cause)
            else:
                last = batch[-1].seq
                state.unarchived[:] = [d for d in state.unarchived if d.seq > last]
            finally:
                self._archiving = None

        self._archiving = asyncio.create_task(archive())

    async def _notify(self, notification: Notification) -> None:
        # A lost notification must not stop the coordinator; the decision log has it.
        await notify(notification)
        outbox = self._rules.state.outbox
        outbox[:] = [n for n in outbox if n.key != notification.key]
        del self._deliveries[notification.key]

    @staticmethod
    def _keep(tasks: set[asyncio.Task[None]], coroutine: Any) -> None:
        """Run in the background, holding a reference until done."""
        task: asyncio.Task[None] = asyncio.create_task(coroutine)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    # ------------------------------------------------------------------ visibility

    def _publish_model_name(self) -> None:
        if workflow.info().typed_search_attributes.get(names.MODEL_NAME) is None:
            workflow.upsert_search_attributes([names.MODEL_NAME.value_set(self._rules.state.model)])

    def _refresh_search_attributes(self) -> None:
        """Upsert only on change: each upsert is a history event."""
        state = self._rules.state
        current = (state.paused, state.active_loop.loop_id if state.active_loop else "")
        if current != self._published:
            self._published = current
            workflow.upsert_search_attributes(
                [
                    names.RETRAIN_PAUSED.value_set(current[0]),
                    names.ACTIVE_LOOP.value_set(current[1])
                    if current[1]
                    else names.ACTIVE_LOOP.value_unset(),
                ]
            )

    async def _keep_details_fresh(self) -> None:
        """Re-render the UI's current details once per workflow task, not once per message
        (a storm delivers hundreds of signals in one task)."""
        while True:
            await workflow.wait_condition(lambda: self._details_stale)
            self._details_stale = False
            details = render_details(self._rules.status(workflow.now()))
            if details != self._details:
                self._details = details
                workflow.set_current_details(details)


def _one_trigger(payload: tuple[Any, ...]) -> TriggerEvent:
    if len(payload) != 1:
        raise ValueError(f"submit_trigger takes one trigger object, got {len(payload)} arguments")
    raw = payload[0]
    if isinstance(raw, RawValue):
        raw = decode_raw(raw, "submit_trigger")
    return parse_trigger(raw)


def _policy_changes(payload: tuple[Any, ...]) -> Any:
    if len(payload) != 1:
        raise ValueError(f"set_policy takes one object of changes, got {len(payload)} arguments")
    changes = payload[0]
    return decode_raw(changes, "set_policy") if isinstance(changes, RawValue) else changes


def _verdict(decision: Decision, event_id: str | None, error: str | None) -> EventVerdict:
    return EventVerdict(
        event_id=event_id,
        action=decision.action,
        reason=decision.reason,
        seq=decision.seq,
        retry=decision.reason is Reason.BACKLOG_FULL,
        error=error,
    )
