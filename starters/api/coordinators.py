"""The Python client API for coordinators; the `retrain` CLI is built on it.

client = await connect()
coordinators = Coordinators(client)
decision = await coordinators.trigger("churn", TriggerEvent(kind="manual", event_id="x"))
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowExecutionStatus,
    WorkflowHandle,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from activities.coordinator.decisions import DecisionStore
from starters.api.connection import workflow_missing
from starters.api.known_models import (
    KnownModels,
    RegisteredModels,
    UnknownModel,
    require_known,
)
from workflows.common import names
from workflows.coordinator.models import (
    DECISIONS_KEPT,
    CoordinatorInput,
    CoordinatorStatus,
    Decision,
    DecisionsQuery,
    EventVerdict,
    PauseRequest,
    TriggerVerdicts,
)
from workflows.coordinator.policy import TriggerPolicy
from workflows.coordinator.triggers import TriggerBatch, TriggerEvent
from workflows.coordinator.workflow import ModelCoordinator

# Update failures that a resend fixes: FAILED_PRECONDITION is the server's WorkflowNotReady (the
# workflow task that was to take the update failed or timed out), the others its load shedding.
TRANSIENT_UPDATE_ERRORS = frozenset(
    {
        RPCStatusCode.FAILED_PRECONDITION,
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.RESOURCE_EXHAUSTED,
        RPCStatusCode.DEADLINE_EXCEEDED,
    }
)


@dataclass(frozen=True)
class CoordinatorSummary:
    """One row of `retrain status`: what visibility knows without querying the workflow."""

    model: str
    workflow_id: str
    status: str
    paused: bool | None
    active_loop: str | None
    started: str


# Shown in the Web UI's "Details": how to talk to the coordinator from the UI itself.
COORDINATOR_HELP = """\
Send a trigger: **Signal** `trigger` with a JSON event, e.g.
`{"kind": "manual", "event_id": "ticket-42", "priority": 2}` or
`{"kind": "drift", "drift": {"score": 0.4, "features": ["age"]}}`.
Use **Update** `submit_trigger` with the same JSON to get the decision back.
Queries: `status`, `decisions`. Updates: `pause`, `resume` (`{"by": "you", "reason": "..."}`),
`set_policy` (fields to change, e.g. `{"cooldown": "2h"}`).
"""


def new_event_id() -> str:
    return uuid.uuid4().hex


class CoordinatorNotFound(LookupError):
    """A registered model whose coordinator has not been started yet."""


class Coordinators:
    """`models`: where registered models are listed. By default the specs under
    `$RETRAIN_HOME`: a name none of them carries is refused with `UnknownModel` (naming the
    closest registered one) before anything starts. `None` checks nothing: for tests,
    benchmarks and senders that routed the event to a registered model themselves."""

    def __init__(
        self,
        client: Client,
        task_queue: str = names.TASK_QUEUE,
        *,
        models: KnownModels | None = RegisteredModels(),  # noqa: B008 (stateless)
    ) -> None:
        self.client = client
        self.task_queue = task_queue
        self.models = models

    def handle(self, model: str) -> WorkflowHandle[ModelCoordinator, None]:
        return self.client.get_workflow_handle_for(
            ModelCoordinator.run, names.coordinator_id(names.validate_model_name(model))
        )

    def _start_options(self, model: str) -> dict[str, Any]:
        """Start options shared by every way in: an existing coordinator is used as it is.
        Every call that may start a coordinator passes here, so an unknown model is refused
        before anything reaches the server."""
        names.validate_model_name(model)
        require_known(self.models, model)
        return {
            "id": names.coordinator_id(model),
            "task_queue": self.task_queue,
            "id_conflict_policy": WorkflowIDConflictPolicy.USE_EXISTING,
            "search_attributes": TypedSearchAttributes(
                [SearchAttributePair(names.MODEL_NAME, model)]
            ),
            "static_summary": f"Retraining coordinator for model {model}",
            "static_details": COORDINATOR_HELP,
        }

    def _start_operation(
        self, model: str, policy: TriggerPolicy | None = None
    ) -> WithStartWorkflowOperation[ModelCoordinator, None]:
        return WithStartWorkflowOperation(
            ModelCoordinator.run,
            CoordinatorInput(model=model, policy=policy),
            **self._start_options(model),
        )

    async def start(self, model: str, policy: TriggerPolicy | None = None) -> None:
        """Start the coordinator if it is not running (idempotent)."""
        await self.client.start_workflow(
            ModelCoordinator.run,
            CoordinatorInput(model=model, policy=policy),
            **self._start_options(model),
        )

    async def trigger(self, model: str, event: TriggerEvent) -> Decision:
        """Submit a trigger and wait for its decision; starts the coordinator if needed."""
        return await self.client.execute_update_with_start_workflow(
            ModelCoordinator.submit_trigger,
            event,
            start_workflow_operation=self._start_operation(model),
        )

    async def send_trigger(self, model: str, event: TriggerEvent) -> None:
        """Fire-and-forget (signal-with-start): for high-volume senders that need no answer."""
        await self.client.start_workflow(
            ModelCoordinator.run,
            CoordinatorInput(model=model),
            start_signal="trigger",
            start_signal_args=[event],
            **self._start_options(model),
        )

    async def send_triggers(
        self, model: str, events: Sequence[TriggerEvent], per_signal: int = 200
    ) -> None:
        """Fire-and-forget many triggers, `per_signal` to a `trigger_batch` signal: for senders
        of hundreds of events a second (each signal is a history event; a run takes at most
        10,000 signals)."""
        for start in range(0, len(events), per_signal):
            batch = TriggerBatch(events=list(events[start : start + per_signal]))
            await self.client.start_workflow(
                ModelCoordinator.run,
                CoordinatorInput(model=model),
                start_signal="trigger_batch",
                start_signal_args=[batch],
                **self._start_options(model),
            )

    async def submit_triggers(
        self, model: str, events: Sequence[TriggerEvent], rpc_timeout: timedelta | None = None
    ) -> TriggerVerdicts:
        """Up to MAX_EVENTS_PER_BATCH triggers in one `submit_triggers` update, answered with a
        verdict per event (starts the coordinator if needed). Unlike `send_triggers`, the
        sender learns which events were refused for now (`verdicts.retry`: the backlog is
        full) and resends only those."""
        batch = TriggerBatch(events=list(events))
        handle = self.handle(model)
        try:
            return await handle.execute_update(
                ModelCoordinator.submit_triggers, batch, rpc_timeout=rpc_timeout
            )
        except RPCError as err:
            # No coordinator yet, or a closed one: start it, then ask again. (Update-with-start
            # would do it in one call, but the time-skipping test server lacks it.)
            if err.status is not RPCStatusCode.NOT_FOUND:
                raise
        await self.start(model)
        return await handle.execute_update(
            ModelCoordinator.submit_triggers, batch, rpc_timeout=rpc_timeout
        )

    async def deliver_triggers(
        self,
        model: str,
        events: Sequence[TriggerEvent],
        per_update: int = 200,
        backoff: timedelta = timedelta(milliseconds=200),
        max_backoff: timedelta = timedelta(seconds=5),
        patience: timedelta = timedelta(minutes=10),
    ) -> list[EventVerdict]:
        """Deliver every event, resending those refused for now until each has a final
        verdict (in the events' order). Waits `backoff` (doubling up to `max_backoff`) between
        rounds that still had refusals; gives up (TimeoutError) only after `patience` without
        a single event accepted, i.e. when the coordinator stopped draining its backlog."""
        final: list[EventVerdict | None] = [None] * len(events)
        waiting = list(range(len(events)))
        delay = backoff
        loop = asyncio.get_running_loop()
        progress_at = loop.time()
        while waiting:
            refused: list[int] = []
            for start in range(0, len(waiting), per_update):
                chunk = waiting[start : start + per_update]
                try:
                    answer = await self.submit_triggers(model, [events[i] for i in chunk])
                except RPCError as err:
                    # The task meant to take the update failed or timed out (a busy worker, a
                    # 1 MB state after continue-as-new): transient. Resending is safe, the
                    # dedup window answers `duplicate_event` for what was already accepted.
                    if err.status not in TRANSIENT_UPDATE_ERRORS:
                        raise
                    refused.extend(waiting[start:])
                    break
                for index, verdict in zip(chunk, answer.verdicts, strict=True):
                    if verdict.retry:
                        refused.append(index)
                    else:
                        final[index] = verdict
                if answer.retry:
                    # The backlog is full: the rest would be refused too. Wait, then resend.
                    refused.extend(waiting[start + per_update :])
                    break
            if len(refused) < len(waiting):
                progress_at, delay = loop.time(), backoff
            elif loop.time() - progress_at > patience.total_seconds():
                raise TimeoutError(
                    f"{len(refused)} events still refused after {patience} without progress"
                )
            waiting = sorted(refused)
            if waiting:
                await asyncio.sleep(delay.total_seconds())
                delay = min(delay * 2, max_backoff)
        return [verdict for verdict in final if verdict is not None]

    def _not_found(self, model: str) -> LookupError:
        """What a missing coordinator means, in words: an unknown model (with the closest
        registered name) or a registered one nothing has started yet."""
        if self.models is not None and model not in (known := self.models.names()):
            return UnknownModel(model, known, "and has no coordinator")
        return CoordinatorNotFound(
            f"model {model!r} has no running coordinator yet: `retrain trigger {model} "
            "--kind manual` or `retrain models register FILE` starts it"
        )

    async def status(self, model: str) -> CoordinatorStatus:
        try:
            return await self.handle(model).query(ModelCoordinator.status)
        except RPCError as err:
            if workflow_missing(err):
                raise self._not_found(model) from None
            raise

    async def decisions(
        self,
        model: str,
        limit: int = 20,
        before_seq: int | None = None,
        archive: DecisionStore | None = None,
    ) -> list[Decision]:
        """The `limit` latest decisions (before `before_seq`), oldest first. The coordinator holds
        the last DECISIONS_KEPT; with the `archive` (the workers' home), older ones come from
        there."""
        query = DecisionsQuery(limit=min(limit, DECISIONS_KEPT), before_seq=before_seq)
        try:
            found = await self.handle(model).query(ModelCoordinator.decisions, query)
        except RPCError as err:
            if workflow_missing(err):
                raise self._not_found(model) from None
            raise
        if archive is None or len(found) >= limit:
            return found[-limit:]
        oldest = found[0].seq if found else before_seq
        if oldest is not None and oldest <= 1:
            return found
        older = archive.read(model, before_seq=oldest, limit=limit - len(found))
        return [*older, *found]

    async def pause(self, model: str, reason: str = "", by: str = "unknown") -> CoordinatorStatus:
        return await self.client.execute_update_with_start_workflow(
            ModelCoordinator.pause,
            PauseRequest(reason=reason, by=by),
            start_workflow_operation=self._start_operation(model),
        )

    async def resume(self, model: str, by: str = "unknown") -> CoordinatorStatus:
        try:
            return await self.handle(model).execute_update(
                ModelCoordinator.resume, PauseRequest(by=by)
            )
        except RPCError as err:
            if workflow_missing(err):
                raise self._not_found(model) from None
            raise

    async def set_policy(self, model: str, changes: dict[str, Any]) -> CoordinatorStatus:
        """Change policy fields (a merge patch); validated here first so bad input never
        reaches the server. Raises ValueError listing every problem."""
        require_known(self.models, model)
        try:
            current = (await self.status(model)).policy
        except CoordinatorNotFound:
            current = TriggerPolicy()
        current.with_changes(changes)
        return await self.client.execute_update_with_start_workflow(
            ModelCoordinator.set_policy,
            changes,
            start_workflow_operation=self._start_operation(model),
        )

    async def list_coordinators(self) -> list[CoordinatorSummary]:
        """Every running coordinator, from visibility (search attributes, no queries)."""
        query = f"WorkflowType = '{names.COORDINATOR_WORKFLOW}' AND ExecutionStatus = 'Running'"
        rows = []
        async for execution in self.client.list_workflows(query):
            attrs = execution.typed_search_attributes
            rows.append(
                CoordinatorSummary(
                    model=attrs.get(names.MODEL_NAME) or execution.id.removeprefix("coordinator-"),
                    workflow_id=execution.id,
                    status=(execution.status or WorkflowExecutionStatus.RUNNING).name.lower(),
                    paused=attrs.get(names.RETRAIN_PAUSED),
                    active_loop=attrs.get(names.ACTIVE_LOOP),
                    started=execution.start_time.isoformat(timespec="seconds"),
                )
            )
        return sorted(rows, key=lambda r: r.model)
