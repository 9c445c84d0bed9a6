"""ScheduledTrigger: what a model's Temporal Schedule starts at each scheduled time.

A short workflow, `scheduled-<model>-<time>`: it sends the coordinator a `scheduled` trigger by
update-with-start, so its result records the coordinator's decision (the coordinator stays the
one place that decides), and meanwhile asks the Schedule what was skipped or missed since the
previous run and checks how fresh the model's labelled data are. Problems become notifications
(the `notify` activity) and metrics; the `ScheduledRunReport` says everything it found.

Its scheduled time and schedule come from the search attributes Temporal sets on scheduled
runs; a run started by hand uses its start time and the model's schedule id.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ActivityError

from workflows.common.errors import ErrorType
from workflows.common.retries import LIVENESS

with workflow.unsafe.imports_passed_through():
    from workflows.common import metrics, names
    from workflows.common.notify import notify
    from workflows.coordinator.models import Decision
    from workflows.schedule.models import (
        SCHEDULED_TRIGGER_WORKFLOW,
        DeliveryRequest,
        Freshness,
        FreshnessRequest,
        HealthRequest,
        ScheduledRunReport,
        ScheduledTriggerInput,
        ScheduleHealth,
    )
    from workflows.schedule.rules import assess_run, scheduled_event

T = TypeVar("T")

SCHEDULED_START_TIME = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")
SCHEDULED_BY_ID = SearchAttributeKey.for_keyword("TemporalScheduledById")

DELIVERY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=10,
    non_retryable_error_types=[ErrorType.TRIGGER_REJECTED],
)
CHECK_RETRY = RetryPolicy(
    maximum_attempts=3,
    maximum_interval=timedelta(seconds=10),
    non_retryable_error_types=[ErrorType.INVALID_MODEL_SPEC],
)
ACTIVITY_TIMEOUT = timedelta(minutes=2)


@workflow.defn(name=SCHEDULED_TRIGGER_WORKFLOW)
class ScheduledTrigger:
    @workflow.run
    async def run(self, input: ScheduledTriggerInput) -> ScheduledRunReport:
        info = workflow.info()
        attributes = info.typed_search_attributes
        scheduled_at = attributes.get(SCHEDULED_START_TIME) or info.start_time
        schedule_id = attributes.get(SCHEDULED_BY_ID) or names.schedule_id(input.model)
        event = scheduled_event(input, scheduled_at, schedule_id, info.workflow_id)
        (
            (decision, delivery_error),
            (health, health_error),
            (freshness, freshness_error),
        ) = await asyncio.gather(
            _attempt(
                "deliver_scheduled_trigger",
                DeliveryRequest(model=input.model, task_queue=info.task_queue, event=event),
                Decision,
                DELIVERY_RETRY,
            ),
            _attempt(
                "check_schedule_health",
                HealthRequest(
                    schedule_id=schedule_id, workflow_id=info.workflow_id, run_id=info.run_id
                ),
                ScheduleHealth,
                CHECK_RETRY,
            ),
            _attempt(
                "check_data_freshness",
                FreshnessRequest(model=input.model),
                Freshness,
                CHECK_RETRY,
            ),
        )
        report, alerts = assess_run(
            input,
            ScheduledRunReport(
                model=input.model,
                schedule_id=schedule_id,
                workflow_id=info.workflow_id,
                scheduled_at=scheduled_at,
                event_id=event.event_id or "",
                decision=decision,
                delivery_error=delivery_error,
                health_error=health_error,
            ),
            health,
            freshness,
            freshness_error,
            workflow.now(),
        )
        # A failed notification is logged; the report and the metrics still carry it.
        await asyncio.gather(*(notify(alert) for alert in alerts))
        _record_metrics(report)
        return report


async def _attempt(
    activity: str, request: object, result_type: type[T], retry: RetryPolicy
) -> tuple[T | None, str | None]:
    """The activity's result, or why it failed: one failed check must not cost the others."""
    try:
        result = await workflow.execute_activity(
            activity,
            request,
            result_type=result_type,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            heartbeat_timeout=LIVENESS,
            retry_policy=retry,
        )
    except ActivityError as error:
        cause = error.cause
        return None, str(getattr(cause, "message", None) or cause or error)
    return result, None


def _record_metrics(report: ScheduledRunReport) -> None:
    meter = workflow.metric_meter()
    model = {"model": report.model}
    outcome = "delivered" if report.decision is not None else "failed"
    metrics.count(meter, metrics.SCHEDULE_RUNS, {**model, "outcome": outcome})
    if report.missed_new:
        metrics.count(meter, metrics.SCHEDULE_MISSED, model, report.missed_new)
    if report.skipped_new:
        metrics.count(meter, metrics.SCHEDULE_SKIPPED, model, report.skipped_new)
    if report.stale is not None:
        metrics.set_gauge(meter, metrics.DATA_STALE, model, 1.0 if report.stale else 0.0)
        checked = workflow.now().timestamp()
        metrics.set_gauge(meter, metrics.DATA_CHECKED, model, checked)
    if report.newest_data_at is not None:
        metrics.set_gauge(meter, metrics.DATA_NEWEST, model, report.newest_data_at.timestamp())
