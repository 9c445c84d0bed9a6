"""The side effects of a `ScheduledTrigger` run: deliver its trigger, ask the Schedule what it
skipped or missed, and find the model's newest labelled data partition.

Freshness reads the listing only (local `date=YYYY-MM-DD/` directories, or the object store's
keys for `s3://` / `gs://` data), never the files: it is cheap enough for every scheduled run.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from pathlib import Path, PurePosixPath

from temporalio import activity
from temporalio.client import (
    Client,
    ScheduleActionExecutionStartWorkflow,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.loop.data_window import partition_day, resolve_uri
from activities.mirror import StoreFor, is_remote, split_uri
from activities.ports import ObjectStore
from activities.specs import SpecError, SpecStore
from starters.api.coordinators import Coordinators
from starters.api.schedules import overlap_policy
from workflows.common.errors import ErrorType
from workflows.common.names import ActivityName
from workflows.coordinator.models import Decision
from workflows.schedule.models import (
    DeliveryRequest,
    Freshness,
    FreshnessRequest,
    HealthRequest,
    ScheduledRunReport,
    ScheduleHealth,
)


def newest_partition(relative_paths: Iterable[str]) -> date | None:
    """The newest day among `date=YYYY-MM-DD/<file>.parquet` paths, skipping hidden and marker
    files (atomic writers' temp files, `_SUCCESS`) as the data window does."""
    newest: date | None = None
    for relative in relative_paths:
        path = PurePosixPath(relative)
        if len(path.parts) != 2 or path.suffix != ".parquet" or path.name.startswith((".", "_")):
            continue
        day = partition_day(Path(path))
        if day is not None and (newest is None or day > newest):
            newest = day
    return newest


def local_partitions(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []
    return [f"{f.parent.name}/{f.name}" for f in directory.glob("date=*/*.parquet")]


def remote_partitions(store: ObjectStore, prefix_uri: str) -> list[str]:
    prefix_uri = prefix_uri.rstrip("/") + "/"
    prefix_key = split_uri(prefix_uri)[2]
    return [split_uri(obj.uri)[2][len(prefix_key) :] for obj in store.list(prefix_uri)]


class ScheduleCheckActivities:
    def __init__(self, client: Client, home: Path, specs: SpecStore, store_for: StoreFor) -> None:
        self.client = client
        self.home = home
        self.specs = specs
        self.store_for = store_for

    @activity.defn(name=ActivityName.DELIVER_SCHEDULED_TRIGGER)
    async def deliver(self, request: DeliveryRequest) -> Decision:
        """Update-with-start `submit_trigger`: starts the coordinator if needed, returns its
        decision. The event id makes a retry after a lost answer a recorded duplicate."""
        try:
            return await Coordinators(self.client, request.task_queue, models=None).trigger(
                request.model, request.event
            )
        except WorkflowUpdateFailedError as error:
            cause = getattr(error.cause, "message", error.cause)
            raise ApplicationError(
                f"the coordinator refused the trigger: {cause}",
                type=ErrorType.TRIGGER_REJECTED,
                non_retryable=True,
            ) from None

    @activity.defn(name=ActivityName.CHECK_SCHEDULE_HEALTH)
    async def health(self, request: HealthRequest) -> ScheduleHealth:
        try:
            description = await self.client.get_schedule_handle(request.schedule_id).describe()
        except RPCError as error:
            if error.status is RPCStatusCode.NOT_FOUND:
                return ScheduleHealth(schedule_id=request.schedule_id, exists=False)
            raise
        info = description.info
        policy = description.schedule.policy
        reports = []
        for action in info.recent_actions:
            run = action.action
            if not isinstance(run, ScheduleActionExecutionStartWorkflow):
                continue
            if run.first_execution_run_id == request.run_id:
                continue
            report = await self._report(run)
            if report is not None and report.missed_total is not None:
                reports.append(report)
        missed = [r.missed_total for r in reports if r.missed_total is not None]
        skipped = [r.skipped_total for r in reports if r.skipped_total is not None]
        return ScheduleHealth(
            schedule_id=request.schedule_id,
            exists=True,
            paused=description.schedule.state.paused,
            overlap=overlap_policy(policy.overlap),
            catchup_window=policy.catchup_window,
            missed_total=info.num_actions_missed_catchup_window,
            skipped_total=info.num_actions_skipped_overlap,
            runs_compared=len(reports),
            seen_missed=max(missed, default=None),
            seen_skipped=max(skipped, default=None),
            previous=max(reports, key=lambda r: r.scheduled_at, default=None),
        )

    async def _report(self, run: ScheduleActionExecutionStartWorkflow) -> ScheduledRunReport | None:
        """A completed run's report; None for runs still going, failed, or gone."""
        handle = self.client.get_workflow_handle(
            run.workflow_id, run_id=run.first_execution_run_id, result_type=ScheduledRunReport
        )
        try:
            if (await handle.describe()).status is not WorkflowExecutionStatus.COMPLETED:
                return None
            report: ScheduledRunReport = await handle.result(follow_runs=False)
            return report
        except RPCError as error:
            if error.status is RPCStatusCode.NOT_FOUND:  # past retention
                return None
            raise
        except (WorkflowFailureError, ValueError) as error:
            # A result this version cannot read is no baseline; the others still are.
            activity.logger.warning("ignoring the result of %s: %s", run.workflow_id, error)
            return None

    @activity.defn(name=ActivityName.CHECK_DATA_FRESHNESS)
    def freshness(self, request: FreshnessRequest) -> Freshness:
        try:
            spec = self.specs.get(request.model)
        except SpecError as error:
            raise ApplicationError(
                str(error), type=ErrorType.INVALID_MODEL_SPEC, non_retryable=True
            ) from None
        if spec is None:
            return Freshness(
                model=request.model,
                known=False,
                note="no registered spec (retrain models register): freshness unknown",
            )
        labelled = spec.data.labelled
        if is_remote(labelled):
            store = self.store_for(spec)
            if store is None:
                return Freshness(
                    model=request.model,
                    known=False,
                    location=labelled,
                    note=f"the {spec.backend} backend has no object store to list {labelled}",
                )
            paths = remote_partitions(store, labelled)
        else:
            paths = local_partitions(resolve_uri(self.home, labelled))
        newest = newest_partition(paths)
        return Freshness(
            model=request.model,
            known=True,
            newest_partition=newest,
            location=labelled,
            note=f"newest partition date={newest.isoformat()}"
            if newest
            else "no labelled partitions",
        )
