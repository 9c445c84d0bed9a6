"""Our metrics come out of the worker's Prometheus endpoint (the SDK runtime's), next to the SDK's
own: a coordinator's triggers, decisions and finished loops; a real loop's training, approval
gate and data freshness; the fleet's waiting approvals; the champion's age."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import Runtime
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.local.registry import MlflowRegistry
from activities.loop.registry import RegistryActivities
from starters.api.coordinators import Coordinators
from tests.support.aws_harness import free_port
from tests.support.helpers import eventually
from tests.support.loop_doubles import InstantLoop
from tests.support.loop_harness import awaiting_approval, register, start_loop, write_dataset
from workers.fleet_metrics import ApprovalGauges
from workers.telemetry import metrics_runtime
from workers.worker import build_worker
from workflows.coordinator.triggers import TriggerEvent, TriggerKind
from workflows.coordinator.workflow import ModelCoordinator
from workflows.loop.models import LoopStatus, ReviewDecision
from workflows.loop.workflow import RetrainingLoop

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Scrape:
    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"

    def samples(self) -> Samples:
        text = httpx.get(self.url, timeout=5).text
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def value(self, name: str, **labels: str) -> float | None:
        """The sample whose labels include `labels` (the SDK adds its own, e.g. service_name)."""
        wanted = set(labels.items())
        found = [v for (n, ls), v in self.samples().items() if n == name and wanted <= ls]
        assert len(found) <= 1, f"{name}{labels} matches {len(found)} samples"
        return found[0] if found else None


@pytest.fixture(scope="module")
def runtime_and_scrape() -> Iterator[tuple[Runtime, Scrape]]:
    port = free_port()
    yield metrics_runtime(f"127.0.0.1:{port}"), Scrape(port)


async def metered_client(env: WorkflowEnvironment, runtime: Runtime) -> Client:
    return await Client.connect(
        env.client.service_client.config.target_host,
        namespace=env.client.namespace,
        runtime=runtime,
        data_converter=pydantic_data_converter,
    )


@pytest.mark.time_skipping_only
async def test_coordinator_counts_triggers_decisions_and_finished_loops(
    env: WorkflowEnvironment,
    runtime_and_scrape: tuple[Runtime, Scrape],
    home: Path,
    model: str,
    task_queue: str,
) -> None:
    runtime, scrape = runtime_and_scrape
    client = await metered_client(env, runtime)
    worker = build_worker(
        client, home=home, task_queue=task_queue, workflows=[ModelCoordinator, InstantLoop]
    )
    coordinators = Coordinators(client, task_queue, models=None)
    async with worker:
        manual = TriggerEvent(kind=TriggerKind.MANUAL, event_id="m-1")
        await coordinators.send_triggers(model, [manual, manual])

        async def loop_closed() -> bool:
            return (await coordinators.status(model)).last_outcome is not None

        await eventually(loop_closed, what="the loop to close")

    assert scrape.value("retrain_trigger_events_total", model=model, kind="manual") == 2
    start = scrape.value("retrain_decisions_total", model=model, action="start", reason="eligible")
    duplicate = scrape.value(
        "retrain_decisions_total", model=model, action="ignore", reason="duplicate_event"
    )
    assert (start, duplicate) == (1, 1)
    assert scrape.value("retrain_loops_finished_total", model=model, status="promoted") == 1
    # The SDK's own metrics share the endpoint.
    assert any(name.startswith("temporal_") for name, _ in scrape.samples())


@pytest.mark.dev_server_only
async def test_a_loop_reports_training_approvals_freshness_and_champion_age(
    env: WorkflowEnvironment,
    runtime_and_scrape: tuple[Runtime, Scrape],
    home: Path,
    model: str,
    task_queue: str,
) -> None:
    runtime, scrape = runtime_and_scrape
    client = await metered_client(env, runtime)
    today = datetime.now(UTC).date()
    register(home, write_dataset(home, model, today))
    gauges = ApprovalGauges(client, runtime.metric_meter)
    async with build_worker(client, home=home, task_queue=task_queue):
        handle = await start_loop(client, task_queue, model)
        await eventually(lambda: awaiting_approval(handle), timeout=120, what="approval gate")

        async def listed_as_waiting() -> bool:  # visibility is eventually consistent
            return model in await gauges.refresh()

        await eventually(listed_as_waiting, timeout=30, what="the loop in visibility")
        assert scrape.value("retrain_approvals_waiting", model=model) == 1
        assert scrape.value("retrain_approvals_requested_total", model=model) == 1
        await handle.execute_update(RetrainingLoop.approve, ReviewDecision(reviewer="ana"))
        result = await handle.result()

        async def no_longer_waiting() -> bool:
            return model not in await gauges.refresh()

        await eventually(no_longer_waiting, timeout=30, what="the loop to leave visibility")

    assert result.status is LoopStatus.PROMOTED, result.summary
    assert scrape.value("retrain_approvals_waiting", model=model) == 0
    assert scrape.value("retrain_approval_wait_seconds", model=model) == 0
    assert scrape.value("retrain_approvals_resolved_total", model=model, outcome="approved") == 1
    assert scrape.value("retrain_training_duration_seconds_count", model=model) == 1
    newest = scrape.value("retrain_data_newest_timestamp_seconds", model=model)
    # The window's newest partition is today's: its data reaches the end of today.
    end_of_today = datetime.combine(date.fromordinal(today.toordinal() + 1), datetime.min.time())
    assert newest == end_of_today.replace(tzinfo=UTC).timestamp()

    activity_env = ActivityEnvironment()
    activity_env.metric_meter = runtime.metric_meter
    champion = activity_env.run(RegistryActivities(MlflowRegistry(home)).champion_version, model)
    assert champion is not None and champion.registered_at is not None
    trained = scrape.value("retrain_champion_trained_timestamp_seconds", model=model)
    assert trained == champion.registered_at.timestamp()
    assert 0 <= datetime.now(UTC).timestamp() - trained < 3600
