"""The Python client API for scheduled triggers; `retrain schedule ...` is built on it.

schedules = Schedules(await connect())
await schedules.set("churn", cron=["0 3 * * *"], tz="Europe/Paris", stale_after="2d")
await schedules.backfill("churn", start, end)

One Temporal Schedule per model (`schedule-<model>`); each action starts a `ScheduledTrigger`
run that delivers a `scheduled` trigger to the model's coordinator and checks the schedule's
health and the data's freshness (workflows/schedule/workflow.py).
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from pydantic import AwareDatetime, ValidationError
from temporalio.api.common.v1 import Payload
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleBackfill,
    ScheduleDescription,
    ScheduleHandle,
    ScheduleIntervalSpec,
    ScheduleListActionStartWorkflow,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
    WorkflowExecutionStatus,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from workflows.common import names
from workflows.common.models import StrictModel, describe_validation_error
from workflows.schedule.models import (
    SCHEDULED_TRIGGER_WORKFLOW,
    OverlapPolicy,
    ScheduledRunReport,
    ScheduledTriggerInput,
    ScheduleSettings,
    scheduled_run_prefix,
)
from workflows.schedule.workflow import ScheduledTrigger

# A run that cannot finish (no worker, an unreachable coordinator) must not hold a `skip`
# schedule forever: after this the next due run starts and reports the skipped ones.
RUN_TIMEOUT = timedelta(hours=1)
RUNS_SHOWN = 5


class ScheduledRun(StrictModel):
    """One of the schedule's recent runs, newest first."""

    scheduled_at: AwareDatetime
    started_at: AwareDatetime
    workflow_id: str
    status: str
    decision: str | None = None
    alerts: list[str] = []


class ScheduleView(StrictModel):
    """What `retrain schedule list|describe` show: the settings the runs get, and the schedule's
    live state from Temporal."""

    model: str
    schedule_id: str
    # None when the schedule's action is not one this version can read.
    settings: ScheduleSettings | None
    task_queue: str | None
    paused: bool
    note: str | None
    # Temporal's own policy values (what it applies now).
    overlap: OverlapPolicy | None
    catchup_window: timedelta | None
    next_runs: list[AwareDatetime]
    actions_taken: int
    missed_total: int
    skipped_total: int
    created_at: AwareDatetime
    updated_at: AwareDatetime | None
    recent_runs: list[ScheduledRun]
    last_report: ScheduledRunReport | None


class SetOutcome(StrictModel):
    created: bool
    schedule: ScheduleView


def overlap_policy(policy: ScheduleOverlapPolicy) -> OverlapPolicy | None:
    """Ours for Temporal's (the members share names); None for `UNSPECIFIED`."""
    return OverlapPolicy.__members__.get(policy.name)


def parse_settings(fields: dict[str, Any]) -> ScheduleSettings:
    """Validate settings from untrusted input; raises ValueError listing every problem."""
    try:
        return ScheduleSettings.model_validate(fields)
    except ValidationError as error:
        raise ValueError(describe_validation_error(error)) from None


def build_schedule(
    model: str, settings: ScheduleSettings, task_queue: str, state: ScheduleState
) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            ScheduledTrigger.run,
            ScheduledTriggerInput(model=model, settings=settings),
            id=scheduled_run_prefix(model),
            task_queue=task_queue,
            execution_timeout=RUN_TIMEOUT,
            typed_search_attributes=TypedSearchAttributes(
                [SearchAttributePair(names.MODEL_NAME, model)]
            ),
            static_summary=f"{model}: scheduled trigger ({settings.describe_when()})",
        ),
        spec=ScheduleSpec(
            cron_expressions=list(settings.cron),
            intervals=[ScheduleIntervalSpec(every=settings.every)] if settings.every else [],
            time_zone_name=settings.timezone,
            jitter=settings.jitter,
        ),
        policy=SchedulePolicy(
            overlap=ScheduleOverlapPolicy[settings.overlap.name],
            catchup_window=settings.catchup_window,
        ),
        state=state,
    )


def check_backfill_range(start: datetime, end: datetime) -> None:
    """Raises ValueError unless `start` < `end` <= now, both with a time zone."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("backfill start and end need a time zone")
    if start >= end:
        raise ValueError(f"backfill start {start.isoformat()} is not before end {end.isoformat()}")
    if end > datetime.now(UTC):
        raise ValueError(f"backfill end {end.isoformat()} is in the future")


@contextmanager
def _existing(model: str) -> Iterator[None]:
    """Temporal's NOT_FOUND as a LookupError that says what to do."""
    try:
        yield
    except RPCError as error:
        if error.status is RPCStatusCode.NOT_FOUND:
            raise LookupError(
                f"model {model!r} has no schedule ({names.schedule_id(model)}): "
                f"create it with `retrain schedule set {model} --cron ...` or `--every ...`"
            ) from None
        raise


class Schedules:
    def __init__(self, client: Client, task_queue: str = names.TASK_QUEUE) -> None:
        self.client = client
        # Where the runs go: a worker with the ScheduledTrigger workflow and the coordinator.
        self.task_queue = task_queue

    def handle(self, model: str) -> ScheduleHandle:
        return self.client.get_schedule_handle(names.schedule_id(names.validate_model_name(model)))

    async def set(
        self,
        model: str,
        *,
        cron: Sequence[str] = (),
        every: timedelta | str | None = None,
        tz: str = "UTC",
        overlap: OverlapPolicy | str = OverlapPolicy.SKIP,
        catchup_window: timedelta | str = timedelta(hours=1),
        jitter: timedelta | str | None = None,
        stale_after: timedelta | str | None = None,
        priority: int = 3,
        note: str | None = None,
    ) -> SetOutcome:
        """Create the model's schedule, or update it in place (pause state and note are kept
        unless a note is given). Raises ValueError listing every problem, before any call."""
        names.validate_model_name(model)
        settings = parse_settings(
            {
                "cron": list(cron),
                "every": every,
                "timezone": tz,
                "overlap": overlap,
                "catchup_window": catchup_window,
                "jitter": jitter,
                "stale_after": stale_after,
                "priority": priority,
            }
        )
        return await self.apply(model, settings, note)

    async def apply(
        self, model: str, settings: ScheduleSettings, note: str | None = None
    ) -> SetOutcome:
        handle = self.handle(model)
        try:
            await self.client.create_schedule(
                handle.id,
                build_schedule(
                    model, settings, self.task_queue, ScheduleState(note=note or "retrain schedule")
                ),
                search_attributes=TypedSearchAttributes(
                    [SearchAttributePair(names.MODEL_NAME, model)]
                ),
            )
            created = True
        except ScheduleAlreadyRunningError:

            def keep_state(current: ScheduleUpdateInput) -> ScheduleUpdate:
                state = current.description.schedule.state
                if note is not None:
                    state.note = note
                return ScheduleUpdate(
                    schedule=build_schedule(model, settings, self.task_queue, state)
                )

            await handle.update(keep_state)
            created = False
        return SetOutcome(created=created, schedule=await self.describe(model))

    async def describe(self, model: str, runs: int = RUNS_SHOWN) -> ScheduleView:
        with _existing(model):
            description = await self.handle(model).describe()
        return await self._view(description, runs)

    async def list(self) -> list[ScheduleView]:
        """Every model's schedule (visibility, so a schedule just set may take a moment)."""
        views = []
        async for entry in await self.client.list_schedules():
            action = entry.schedule.action if entry.schedule else None
            if not isinstance(action, ScheduleListActionStartWorkflow):
                continue
            if action.workflow != SCHEDULED_TRIGGER_WORKFLOW:
                continue
            try:
                description = await self.client.get_schedule_handle(entry.id).describe()
            except RPCError as error:
                if error.status is RPCStatusCode.NOT_FOUND:  # deleted since it was listed
                    continue
                raise
            views.append(await self._view(description, runs=1))
        return sorted(views, key=lambda view: view.model)

    async def pause(self, model: str, note: str = "") -> ScheduleView:
        with _existing(model):
            await self.handle(model).pause(note=note or "paused with retrain schedule pause")
        return await self.describe(model)

    async def unpause(self, model: str, note: str = "") -> ScheduleView:
        with _existing(model):
            await self.handle(model).unpause(note=note or "unpaused with retrain schedule unpause")
        return await self.describe(model)

    async def trigger(self, model: str, overlap: OverlapPolicy | None = None) -> None:
        """Run now (even when paused); `overlap` overrides the schedule's policy for this run."""
        with _existing(model):
            await self.handle(model).trigger(
                overlap=ScheduleOverlapPolicy[overlap.name] if overlap else None
            )

    async def backfill(
        self,
        model: str,
        start: datetime,
        end: datetime,
        overlap: OverlapPolicy = OverlapPolicy.ALLOW_ALL,
    ) -> None:
        """Take the actions the schedule would have taken after `start` up to `end`, now. Every
        time delivers (allow-all by default); the coordinator ignores times it already has."""
        names.validate_model_name(model)
        check_backfill_range(start, end)
        with _existing(model):
            await self.handle(model).backfill(
                ScheduleBackfill(
                    start_at=start, end_at=end, overlap=ScheduleOverlapPolicy[overlap.name]
                )
            )

    async def delete(self, model: str) -> None:
        """Delete the schedule; runs already started finish; the coordinator is untouched."""
        with _existing(model):
            await self.handle(model).delete()

    # ------------------------------------------------------------------ views

    async def _view(self, description: ScheduleDescription, runs: int) -> ScheduleView:
        schedule, info = description.schedule, description.info
        model = description.typed_search_attributes.get(names.MODEL_NAME) or (
            description.id.removeprefix("schedule-")
        )
        settings, task_queue = None, None
        action = schedule.action
        if isinstance(action, ScheduleActionStartWorkflow):
            task_queue = action.task_queue
            settings = await self._settings(cast(Sequence[Payload], action.args))
        recent, last_report = await self._recent(description, runs)
        return ScheduleView(
            model=model,
            schedule_id=description.id,
            settings=settings,
            task_queue=task_queue,
            paused=schedule.state.paused,
            note=schedule.state.note,
            overlap=overlap_policy(schedule.policy.overlap),
            catchup_window=schedule.policy.catchup_window,
            next_runs=list(info.next_action_times[:3]),
            actions_taken=info.num_actions,
            missed_total=info.num_actions_missed_catchup_window,
            skipped_total=info.num_actions_skipped_overlap,
            created_at=info.created_at,
            updated_at=info.last_updated_at,
            recent_runs=recent,
            last_report=last_report,
        )

    async def _settings(self, args: Sequence[Payload]) -> ScheduleSettings | None:
        if len(args) != 1:
            return None
        try:
            [decoded] = await self.client.data_converter.decode(list(args), [ScheduledTriggerInput])
        except (ValueError, TypeError):
            return None
        return decoded.settings if isinstance(decoded, ScheduledTriggerInput) else None

    async def _recent(
        self, description: ScheduleDescription, limit: int
    ) -> tuple[builtins.list[ScheduledRun], ScheduledRunReport | None]:
        runs: builtins.list[ScheduledRun] = []
        last_report: ScheduledRunReport | None = None
        for action in list(reversed(description.info.recent_actions))[:limit]:
            run = action.action
            if not isinstance(run, ScheduleActionExecutionStartWorkflow):
                continue
            handle = self.client.get_workflow_handle(
                run.workflow_id, run_id=run.first_execution_run_id, result_type=ScheduledRunReport
            )
            report: ScheduledRunReport | None = None
            try:
                status = (await handle.describe()).status
                if status is WorkflowExecutionStatus.COMPLETED:
                    report = await handle.result(follow_runs=False)
                state = status.name.lower() if status else "unknown"
            except RPCError as error:
                if error.status is not RPCStatusCode.NOT_FOUND:
                    raise
                state = "gone"
            decision = report.decision if report else None
            runs.append(
                ScheduledRun(
                    scheduled_at=action.scheduled_at,
                    started_at=action.started_at,
                    workflow_id=run.workflow_id,
                    status=state,
                    decision=f"{decision.action.value}: {decision.reason.value}"
                    if decision
                    else (report.delivery_error if report else None),
                    alerts=report.alerts if report else [],
                )
            )
            if last_report is None and report is not None:
                last_report = report
        return runs, last_report
