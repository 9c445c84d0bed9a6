"""The Python client API for drift monitors (`drift-<model>`).

monitors = DriftMonitors(client)
report = await monitors.check("churn")          # starts the monitor if needed, checks now
check = await monitors.check_performance("churn")  # quality on labelled traffic, now
status = await monitors.status("churn")         # last report, recent checks, next check
"""

from __future__ import annotations

from typing import Any

from temporalio.client import Client, WithStartWorkflowOperation, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.service import RPCError

from starters.api.connection import workflow_missing
from workflows.common import names
from workflows.drift.models import (
    CheckRequest,
    DriftMonitorInput,
    DriftReport,
    MonitorStatus,
    PerformanceCheck,
)
from workflows.drift.workflow import DriftMonitor

MONITOR_HELP = (
    "Compares captured production traffic with the champion's reference profile every "
    "`drift.interval` of the model spec and reports drift to `coordinator-<model>`. "
    "Query `status` for the last report; update `check` runs a check now."
)


class MonitorNotFound(LookupError):
    """No drift monitor runs for the model."""


class DriftMonitors:
    def __init__(self, client: Client, task_queue: str = names.TASK_QUEUE) -> None:
        self.client = client
        self.task_queue = task_queue

    def handle(self, model: str) -> WorkflowHandle[DriftMonitor, None]:
        return self.client.get_workflow_handle_for(
            DriftMonitor.run, names.drift_monitor_id(names.validate_model_name(model))
        )

    def _start_options(self, model: str) -> dict[str, Any]:
        names.validate_model_name(model)
        return {
            "id": names.drift_monitor_id(model),
            "task_queue": self.task_queue,
            "id_conflict_policy": WorkflowIDConflictPolicy.USE_EXISTING,
            "search_attributes": TypedSearchAttributes(
                [SearchAttributePair(names.MODEL_NAME, model)]
            ),
            "static_summary": f"Drift monitor for model {model}",
            "static_details": MONITOR_HELP,
        }

    async def start(self, model: str) -> None:
        """Start the monitor if it is not running (idempotent)."""
        await self.client.start_workflow(
            DriftMonitor.run, DriftMonitorInput(model=model), **self._start_options(model)
        )

    async def check(self, model: str, request: CheckRequest | None = None) -> DriftReport:
        """Check now and wait for the report; starts the monitor if needed."""
        # By name: the SDK's typing of async update methods does not fit this call.
        report: DriftReport = await self.client.execute_update_with_start_workflow(
            "check",
            request or CheckRequest(),
            result_type=DriftReport,
            start_workflow_operation=WithStartWorkflowOperation(
                DriftMonitor.run, DriftMonitorInput(model=model), **self._start_options(model)
            ),
        )
        return report

    async def check_performance(
        self, model: str, request: CheckRequest | None = None
    ) -> PerformanceCheck:
        """Measure the champion's quality on its labelled traffic now; starts the monitor if
        needed. A degradation is sent to the coordinator unless `notify_coordinator` is off."""
        check: PerformanceCheck = await self.client.execute_update_with_start_workflow(
            "check_performance",
            request or CheckRequest(),
            result_type=PerformanceCheck,
            start_workflow_operation=WithStartWorkflowOperation(
                DriftMonitor.run, DriftMonitorInput(model=model), **self._start_options(model)
            ),
        )
        return check

    async def status(self, model: str) -> MonitorStatus:
        try:
            return await self.handle(model).query(DriftMonitor.status)
        except RPCError as err:
            if workflow_missing(err):
                raise MonitorNotFound(
                    f"no drift monitor for {model!r}: `retrain drift check {model}` starts one"
                ) from None
            raise
