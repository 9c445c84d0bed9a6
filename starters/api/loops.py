"""The Python client API for retraining loops: find them, approve or reject, read their audit.

loops = Loops(client, home)
await loops.approve("churn", ReviewDecision(reviewer="ana", comment="looks good"))
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError

from activities.loop.audit import AuditStore
from starters.api.connection import workflow_missing
from starters.api.coordinators import Coordinators
from workflows.common import names
from workflows.loop.audit import AuditRecord, LoopView, ReviewRecord
from workflows.loop.models import ReviewDecision
from workflows.loop.workflow import RetrainingLoop


class LoopNotFound(LookupError):
    """No such loop, or no loop in the state the command needs; the message says which."""


@dataclass(frozen=True)
class LoopSummary:
    """One row of `retrain loops MODEL`."""

    loop_id: str
    number: int
    execution: str
    stage: str | None
    outcome: str | None
    summary: str
    started: datetime | None
    closed: datetime | None


class Loops:
    def __init__(self, client: Client, home: Path) -> None:
        self.client = client
        self.audit = AuditStore(home)

    def handle(self, model: str, number: int) -> WorkflowHandle[RetrainingLoop, object]:
        loop_id = names.retraining_loop_id(names.validate_model_name(model), number)
        return self.client.get_workflow_handle_for(RetrainingLoop.run, loop_id)

    async def view(self, model: str, number: int) -> LoopView:
        try:
            return await self.handle(model, number).query(RetrainingLoop.status)
        except RPCError as err:
            if workflow_missing(err):
                raise LoopNotFound(f"no loop {names.retraining_loop_id(model, number)}") from None
            raise

    async def waiting_loop(self, model: str) -> int:
        """The number of the model's loop that is waiting for approval."""
        status = await Coordinators(self.client).status(model)
        active = status.active_loop
        if active is None:
            raise LoopNotFound(f"model {model!r} has no active loop, so none awaits approval")
        number = names.loop_number(active)
        view = await self.view(model, number)
        if not view.awaiting_approval:
            raise LoopNotFound(f"{active} is not awaiting approval (stage: {view.stage.value})")
        return number

    async def review(
        self,
        model: str,
        verb: Literal["approve", "reject"],
        decision: ReviewDecision,
        number: int | None = None,
    ) -> ReviewRecord:
        """Approve or reject through the update, so a refusal comes back as an error."""
        if number is None:
            number = await self.waiting_loop(model)
        update = RetrainingLoop.approve if verb == "approve" else RetrainingLoop.reject
        try:
            return await self.handle(model, number).execute_update(update, decision)
        except RPCError as err:
            if workflow_missing(err):
                loop_id = names.retraining_loop_id(model, number)
                raise LoopNotFound(f"no running loop {loop_id}") from None
            raise

    async def list(self, model: str, limit: int = 50) -> list[LoopSummary]:
        """The model's loops, newest first: visibility for the executions, audit for outcomes."""
        names.validate_model_name(model)
        query = (
            f"WorkflowType = '{names.RETRAINING_LOOP_WORKFLOW}' AND "
            f"{names.MODEL_NAME.name} = '{model}'"
        )
        rows: dict[str, LoopSummary] = {}
        async for execution in self.client.list_workflows(query, limit=limit):
            stage = execution.typed_search_attributes.get(names.LOOP_STAGE)
            rows[execution.id] = self._summary(
                model,
                execution.id,
                execution=_execution_name(execution.status),
                stage=stage,
                started=execution.start_time,
                closed=execution.close_time,
            )
        for loop_id in self.audit.loop_ids(model):
            if loop_id not in rows:
                rows[loop_id] = self._summary(model, loop_id, "unknown", None, None, None)
        return sorted(rows.values(), key=lambda row: row.number, reverse=True)[:limit]

    def _summary(
        self,
        model: str,
        loop_id: str,
        execution: str,
        stage: str | None,
        started: datetime | None,
        closed: datetime | None,
    ) -> LoopSummary:
        record = self.audit.read(model, loop_id)
        outcome = record.outcome if record else None
        return LoopSummary(
            loop_id=loop_id,
            number=names.loop_number(loop_id),
            execution=execution,
            stage=stage,
            outcome=outcome.status.value if outcome else None,
            summary=outcome.summary if outcome else "",
            started=started or (record.started_at if record else None),
            closed=closed or (outcome.finished_at if outcome else None),
        )


def read_audit(home: Path, model: str, number: int | None = None) -> AuditRecord:
    """A loop's audit record (default: the model's latest)."""
    store = AuditStore(home)
    loop_ids = store.loop_ids(model)
    if not loop_ids:
        raise LoopNotFound(f"no audit records for model {model!r} yet")
    loop_id = loop_ids[-1] if number is None else names.retraining_loop_id(model, number)
    record = store.read(model, loop_id)
    if record is None:
        raise LoopNotFound(f"no audit record for {loop_id} (it may still be running)")
    return record


def _execution_name(status: WorkflowExecutionStatus | None) -> str:
    return status.name.lower() if status else "unknown"
