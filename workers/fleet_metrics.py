"""Gauges about the fleet rather than one execution: the loops waiting for a reviewer and how
long each has waited. A workflow cannot keep an age current (it would need a timer per second),
so the worker asks Temporal's visibility for the waiting loops every `interval` and their
`status` query for when they started to wait. Every worker replica reports the same numbers;
dashboards take `max by (model)`."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from temporalio.client import Client
from temporalio.common import MetricMeter
from temporalio.service import RPCError

from workflows.common import metrics, names
from workflows.loop.audit import LoopStage, LoopView

log = logging.getLogger(__name__)

WAITING_LOOPS_QUERY = (
    f'WorkflowType = "{names.RETRAINING_LOOP_WORKFLOW}" AND ExecutionStatus = "Running" '
    f'AND {names.LOOP_STAGE.name} = "{LoopStage.AWAITING_APPROVAL.value}"'
)


async def waiting_approvals(client: Client, now: datetime) -> dict[str, float]:
    """Model -> seconds its oldest waiting candidate has waited (0 when the loop's own record
    cannot be read: it still counts as waiting)."""
    waits: dict[str, float] = {}
    async for execution in client.list_workflows(WAITING_LOOPS_QUERY):
        model = execution.typed_search_attributes.get(names.MODEL_NAME)
        if model is None:
            continue
        waited = 0.0
        try:
            view = await client.get_workflow_handle(execution.id, run_id=execution.run_id).query(
                "status", result_type=LoopView
            )
            requested = view.record.approval.requested_at
            if requested is not None:
                waited = max(0.0, (now - requested).total_seconds())
        except RPCError as err:  # no worker answering queries right now: the count still holds
            log.debug("status of %s unavailable: %s", execution.id, err.message)
        waits[model] = max(waits.get(model, 0.0), waited)
    return waits


class ApprovalGauges:
    def __init__(
        self, client: Client, meter: MetricMeter, interval: timedelta = timedelta(seconds=30)
    ) -> None:
        self.client = client
        self.meter = meter
        self.interval = interval
        self._reported: set[str] = set()

    async def refresh(self) -> dict[str, float]:
        waits = await waiting_approvals(self.client, datetime.now(UTC))
        # Models reported before and waiting no more go back to zero rather than keep a
        # stale value.
        for model in self._reported | set(waits):
            labels = {"model": model}
            waited = waits.get(model)
            metrics.set_gauge(
                self.meter, metrics.APPROVALS_WAITING, labels, 0 if waited is None else 1
            )
            metrics.set_gauge(self.meter, metrics.APPROVAL_WAIT, labels, waited or 0.0)
        self._reported |= set(waits)
        return waits

    async def run(self) -> None:
        while True:
            try:
                await self.refresh()
            except RPCError as err:  # Temporal unreachable for a moment: try at the next tick
                log.warning("approval gauges not refreshed: %s", err.message)
            await asyncio.sleep(self.interval.total_seconds())
