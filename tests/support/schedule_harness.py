"""Helpers for the scheduled-trigger tests: a worker for the schedule's runs, the runs' reports,
the notification outbox, and the metrics the worker recorded."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from temporalio.client import (
    Client,
    ScheduleActionExecutionStartWorkflow,
    WorkflowExecutionStatus,
)
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import MetricBuffer, Runtime, TelemetryConfig
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

from starters.api.schedules import Schedules
from tests.support.loop_doubles import InstantLoop
from workers.worker import build_worker
from workflows.common import names
from workflows.coordinator.workflow import ModelCoordinator
from workflows.schedule.models import ScheduledRunReport
from workflows.schedule.workflow import ScheduledTrigger


class MetricLog:
    """Every metric update a worker recorded (the buffer drains on read, so keep them)."""

    _runtime: Runtime | None = None
    _buffer: MetricBuffer | None = None
    _seen: list[Any] = []

    @classmethod
    def runtime(cls) -> Runtime:
        # One runtime for the module: each one owns threads of its own.
        if cls._runtime is None:
            cls._buffer = MetricBuffer(100_000)
            cls._runtime = Runtime(telemetry=TelemetryConfig(metrics=cls._buffer))
        return cls._runtime

    @classmethod
    def updates(cls, name: str, model: str) -> list[Any]:
        assert cls._buffer is not None
        cls._seen.extend(cls._buffer.retrieve_updates())
        return [
            u for u in cls._seen if u.metric.name == name and u.attributes.get("model") == model
        ]

    @classmethod
    def total(cls, name: str, model: str) -> float:
        return float(sum(u.value for u in cls.updates(name, model)))

    @classmethod
    def last(cls, name: str, model: str) -> float | None:
        found = cls.updates(name, model)
        return found[-1].value if found else None


async def metered_client(client: Client) -> Client:
    """A client on the same server whose workers record metrics into `MetricLog`."""
    return await Client.connect(
        client.service_client.config.target_host,
        namespace=client.namespace,
        data_converter=pydantic_data_converter,
        runtime=MetricLog.runtime(),
    )


def schedule_worker(client: Client, home: Path, task_queue: str) -> Worker:
    """The coordinator, the scheduled runs and a loop double that ends at once."""
    return build_worker(
        client,
        home=home,
        task_queue=task_queue,
        workflows=[ModelCoordinator, ScheduledTrigger, InstantLoop],
    )


@asynccontextmanager
async def deleted_after(schedules: Schedules, model: str) -> AsyncIterator[Schedules]:
    """The session's server outlives the test: its schedule must not keep firing."""
    try:
        yield schedules
    finally:
        try:
            await schedules.handle(model).delete()
        except RPCError as error:
            if error.status is not RPCStatusCode.NOT_FOUND:
                raise


async def completed_reports(client: Client, model: str) -> list[ScheduledRunReport]:
    """The reports of the completed runs the schedule lists, oldest first."""
    description = await client.get_schedule_handle(names.schedule_id(model)).describe()
    reports = []
    for action in description.info.recent_actions:
        run = action.action
        assert isinstance(run, ScheduleActionExecutionStartWorkflow)
        handle = client.get_workflow_handle(
            run.workflow_id, run_id=run.first_execution_run_id, result_type=ScheduledRunReport
        )
        if (await handle.describe()).status is WorkflowExecutionStatus.COMPLETED:
            reports.append(await handle.result())
    return reports


def outbox(home: Path) -> dict[str, dict[str, Any]]:
    """The notifications written so far, by key."""
    directory = home / "notifications"
    if not directory.is_dir():
        return {}
    return {p.stem: json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))}
