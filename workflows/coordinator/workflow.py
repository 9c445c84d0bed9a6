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
from temporalio.common import RetryPolicy, SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ChildWorkflowError, WorkflowAlreadyStartedError

from workflows.common.names import ActivityName

with workflow.unsafe.imports_passed_through():
    from workflows.common import metrics, names
    from workflows.common.notify import Notification, notify
    from workflows.coordinator.details import render_details
    from workflows.coordinator.models import (
        CoordinatorInput,
        CoordinatorStatus,
        Decision,
        DecisionsQuery,
        LoopStart,
        PauseRequest,
    )
    from workflows.coordinator.rules import CoordinatorRules, Step, new_state
    from workflows.coordinator.triggers import (
        MAX_EVENTS_PER_BATCH,
        TriggerKind,
        parse_observation,
        parse_trigger,
    )
    from workflows.loop.models import LoopResult, RetrainingLoopInput, result_from_failure

LOOP_WATCH_RETRY = RetryPolicy(maximum_interval=timedelta(minutes=5))


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
            if state.unstarted_loop is not None:
                await self._start_loop(state.unstarted_loop)
            if workflow.info().is_continue_as_new_suggested():
                # Handlers are synchronous, so they are done at once; deliveries in flight are
                # awaited. Whatever is decided meanwhile (a loop to start, notifications) is
                # carried in the state: a storm of triggers never holds continue-as-new back.
                await workflow.wait_condition(workflow.all_handlers_finished)
                if self._deliveries:
                    await asyncio.gather(*self._deliveries.values())
                workflow.continue_as_new(CoordinatorInput(model=input.model, state=state))

    # ------------------------------------------------------------------ messages

    @workflow.signal(name="trigger")
    def trigger(self, *payload: Any) -> None:
        """Fire-and-forget trigger (Temporal UI, `temporal workflow signal`, gateways).

        Untyped on purpose: a malformed payload is recorded as an `ignore` decision with the
        validation error instead of being dropped by the SDK or failing the workflow task.
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
        decided (and, if malformed, recorded as ignored) on its own."""
        now = workflow.now()
        events = (
            payload[0].get("events") if len(payload) == 1 and isinstance(payload[0], dict) else None
        )
        if not isinstance(events, list) or not 1 <= len(events) <= MAX_EVENTS_PER_BATCH:
            error = (
                f'trigger_batch takes one object {{"events": [...]}} with 1 to '
                f"{MAX_EVENTS_PER_BATCH} triggers"
            )
            self._apply(self._rules.on_invalid_trigger(None, error, now))
            return
        for raw in events:
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
            observation = parse_observation(payload[0])
        except ValueError as err:
            raw = payload[0] if len(payload) == 1 else None
            self._apply(self._rules.on_invalid_trigger(raw, str(err), now))
            return
        if observation.event is not None:
            self._count_trigger(observation.event.kind)
        self._apply(self._rules.on_observation(observation, now))

    def _receive(self, raw: Any, now: datetime) -> None:
        try:
            event = parse_trigger(raw)
        except ValueError as err:
            self._apply(self._rules.on_invalid_trigger(raw, str(err), now))
            return
        self._count_trigger(event.kind)
        self._apply(self._rules.on_trigger(event, now))

    @workflow.update(name="submit_trigger")
    def submit_trigger(self, event: Any) -> Decision:
        """Validated trigger: returns the decision taken for it."""
        parsed = parse_trigger(event)
        self._count_trigger(parsed.kind)
        return self._apply(self._rules.on_trigger(parsed, workflow.now())).decision

    @submit_trigger.validator
    def _validate_trigger(self, event: Any) -> None:
        parse_trigger(event)

    @workflow.update(name="pause")
    def pause(self, request: PauseRequest) -> CoordinatorStatus:
        reason = f"{request.reason}; by {request.by}" if request.reason else f"by {request.by}"
        self._apply(self._rules.set_paused(True, reason, workflow.now()))
        return self.status()

    @workflow.update(name="resume")
    def resume(self, request: PauseRequest) -> CoordinatorStatus:
        workflow.logger.info("resumed by %s %s", request.by, request.reason)
        self._apply(self._rules.set_paused(False, "", workflow.now()))
        return self.status()

    @workflow.update(name="set_policy")
    def set_policy(self, changes: Any) -> CoordinatorStatus:
        """Change some policy fields (a JSON object of field: value); the rest stay as they are."""
        policy = self._rules.policy.with_changes(changes)
        self._apply(self._rules.set_policy(policy, workflow.now()))
        return self.status()

    @set_policy.validator
    def _validate_policy(self, changes: Any) -> None:
        self._rules.policy.with_changes(changes)

    @workflow.query(name="status")
    def status(self) -> CoordinatorStatus:
        return self._rules.status(workflow.now())

    @workflow.query(name="decisions")
    def decisions(self, query: DecisionsQuery | None = None) -> list[Decision]:
        limit = (query or DecisionsQuery()).limit
        return self._rules.state.decisions[-limit:]

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
        wakeup = self._rules.next_wakeup()
        # Re-arm only when due work moved earlier: a debounce that moves later keeps its timer,
        # which then fires, finds nothing due and sleeps again (no timer churn per event).
        if wakeup is not None and (self._armed_until is None or wakeup < self._armed_until):
            return True
        return workflow.info().is_continue_as_new_suggested()

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
            heartbeat_timeout=timedelta(minutes=1),
            retry_policy=LOOP_WATCH_RETRY,
        )
        self._loop_closed(result)

    def _loop_closed(self, result: LoopResult) -> None:
        state = self._rules.state
        if state.active_loop is not None and state.active_loop.loop_id == result.loop_id:
            labels = {"model": state.model, "status": result.status.value}
            metrics.count(workflow.metric_meter(), metrics.LOOPS_FINISHED, labels)
        self._apply(self._rules.on_loop_closed(result, workflow.now()))

    def _count_trigger(self, kind: TriggerKind) -> None:
        labels = {"model": self._rules.state.model, "kind": kind.value}
        metrics.count(workflow.metric_meter(), metrics.TRIGGER_EVENTS, labels)

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
