"""The DriftMonitor workflow (`drift-<model>`) with the real worker and files: on-demand checks,
what the coordinator hears, scheduled checks on durable timers, continue-as-new, bad input."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]
import pytest
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.local.capture import request_schema
from activities.local.registry import MlflowRegistry
from activities.loop.data_window import resolve_uri
from activities.specs import SpecStore
from starters.api.coordinators import Coordinators
from tests.support.drift_harness import production_rows, shifted, write_capture
from tests.support.endpoint_harness import train_versions
from tests.support.loop_harness import with_changes
from tests.support.performance_capture import capture_stream, champion_home, stream_rows
from workflows.common import names
from workflows.coordinator.models import Action, Reason
from workflows.coordinator.policy import TriggerPolicy
from workflows.coordinator.triggers import TriggerKind
from workflows.drift.models import (
    CheckRequest,
    Delivery,
    DriftMonitorInput,
    DriftReport,
    MonitorStatus,
    PerformanceCheck,
    ReportStatus,
)
from workflows.drift.performance_models import PerformanceStatus, VolumeDecision
from workflows.drift.workflow import DriftMonitor
from workflows.spec.models import ModelSpec


def trained(home: Path, model: str, **drift: object) -> ModelSpec:
    spec, _ = train_versions(home, model, count=1, baseline_rows=4000)
    if drift:
        spec = with_changes(spec, {"drift": drift})
        SpecStore(home).register(spec)
    return spec


async def start_monitor(
    client: Client, model: str, task_queue: str, checks_per_run: int = 100
) -> WorkflowHandle[DriftMonitor, None]:
    return await client.start_workflow(
        DriftMonitor.run,
        DriftMonitorInput(model=model, checks_per_run=checks_per_run),
        id=names.drift_monitor_id(model),
        task_queue=task_queue,
    )


async def capture_now(
    home: Path,
    spec: ModelSpec,
    rows: pa.Table,
    env: WorkflowEnvironment,
    schema: pa.Schema | None = None,
) -> None:
    """Traffic captured half an hour ago by the server's clock (a check's window ends at the
    workflow's now, which a time-skipping server may have moved ahead of ours)."""
    registry = MlflowRegistry(home)
    champion = registry.champion(spec.name)
    assert champion is not None
    at = await env.get_current_time() - timedelta(minutes=30)
    write_capture(home, spec, rows, at=at, estimator=registry.load(champion), schema=schema)


async def test_a_drifted_window_reaches_the_coordinator(
    env: WorkflowEnvironment,
    new_worker: Callable[..., Worker],
    home: Path,
    model: str,
    task_queue: str,
) -> None:
    spec = trained(home, model)
    rows = shifted(production_rows(2000, seed=1), "age", lambda v: v + 15)
    await capture_now(home, spec, rows, env)
    async with new_worker():
        await Coordinators(env.client, task_queue, models=None).start(
            model, TriggerPolicy(auto_retrain=False)
        )
        handle = await start_monitor(env.client, model, task_queue)
        report = await handle.execute_update(
            "check", CheckRequest(reason="test"), result_type=DriftReport
        )
        assert report.status is ReportStatus.DRIFT and "age" in report.drifted
        status: MonitorStatus = await handle.query(DriftMonitor.status)
        decisions = await Coordinators(env.client, task_queue, models=None).decisions(model)
    assert status.checks == 1 and status.last_report == report
    record = status.history[0]
    assert record.delivery is Delivery.SENT and record.trigger == "drift"
    assert record.reason == "test"
    drift = [d for d in decisions if report.check_id in d.event_ids]
    assert len(drift) == 1
    assert Path(report.html_uri or "").exists()


async def test_broken_data_is_a_data_quality_alarm_and_never_a_loop(
    env: WorkflowEnvironment,
    new_worker: Callable[..., Worker],
    home: Path,
    model: str,
    task_queue: str,
) -> None:
    spec = trained(home, model)
    baseline = pq.read_schema(resolve_uri(home, spec.data.baseline_holdout))
    schema = request_schema(spec, baseline)
    schema = schema.remove(schema.get_field_index("loan"))
    await capture_now(home, spec, production_rows(1000, seed=2), env, schema=schema)
    async with new_worker():
        await Coordinators(env.client, task_queue, models=None).start(model)
        handle = await start_monitor(env.client, model, task_queue)
        report = await handle.execute_update("check", CheckRequest(), result_type=DriftReport)
        # The same problems an hour later: the reviewers were told already.
        await handle.execute_update("check", CheckRequest(), result_type=DriftReport)
        status = await handle.query(DriftMonitor.status)
        coordinator = await Coordinators(env.client, task_queue, models=None).status(model)
        decisions = await Coordinators(env.client, task_queue, models=None).decisions(model)
    assert report.status is ReportStatus.DATA_QUALITY
    assert any("loan" in problem for problem in report.data_quality)
    quality = [d for d in decisions if d.reason is Reason.DATA_QUALITY]
    assert len(quality) == 1 and quality[0].action is Action.IGNORE
    assert coordinator.active_loop is None
    latest, first = status.history
    assert (first.trigger, first.delivery) == ("alarm", Delivery.SENT)
    assert (latest.trigger, latest.delivery) == (None, Delivery.NOT_SENT)
    assert "same data-quality problems" in latest.delivery_note


async def test_without_a_coordinator_the_report_still_stands(
    env: WorkflowEnvironment,
    new_worker: Callable[..., Worker],
    home: Path,
    model: str,
    task_queue: str,
) -> None:
    spec = trained(home, model)
    rows = shifted(production_rows(1000, seed=3), "age", lambda v: v + 20)
    await capture_now(home, spec, rows, env)
    async with new_worker():
        handle = await start_monitor(env.client, model, task_queue)
        report = await handle.execute_update("check", CheckRequest(), result_type=DriftReport)
        status = await handle.query(DriftMonitor.status)
    assert report.status is ReportStatus.DRIFT
    assert status.history[0].delivery is Delivery.FAILED
    assert "coordinator unreachable" in status.history[0].delivery_note


async def test_bad_requests_are_refused_and_change_nothing(
    env: WorkflowEnvironment,
    new_worker: Callable[..., Worker],
    home: Path,
    model: str,
    task_queue: str,
) -> None:
    trained(home, model)
    async with new_worker():
        handle = await start_monitor(env.client, model, task_queue)
        for bad in ({"reason": "x" * 500}, {"unknown": 1}, "not an object"):
            with pytest.raises(WorkflowUpdateFailedError):
                await handle.execute_update("check", bad)
        status = await handle.query(DriftMonitor.status)
        # An unknown model's check fails the update with the reason; the monitor lives on.
        unknown = await start_monitor(env.client, "no-such-model-xyz", task_queue)
        with pytest.raises(WorkflowUpdateFailedError) as failure:
            await unknown.execute_update("check", CheckRequest(), result_type=DriftReport)
        unknown_status = await unknown.query(DriftMonitor.status)
        await unknown.terminate("test over")
    assert status.checks == 0 and status.history == []
    assert "no registered model" in str(failure.value.cause)
    failed = unknown_status.history[0]
    assert failed.status is ReportStatus.FAILED
    assert failed.error and "no registered model" in failed.error
    # The last error is the check's or the spec read's, whichever ran last.
    assert unknown_status.last_error


@pytest.mark.time_skipping_only
@pytest.mark.own_server
async def test_scheduled_checks_run_on_durable_timers_and_continue_as_new(
    env: WorkflowEnvironment,
    new_worker: Callable[..., Worker],
    home: Path,
    model: str,
    task_queue: str,
) -> None:
    spec = trained(home, model, interval="1h", window="6h", min_rows=100)
    async with new_worker():
        handle = await start_monitor(env.client, model, task_queue, checks_per_run=2)
        first_run = (await handle.describe()).run_id
        await env.sleep(timedelta(minutes=40))
        rows = shifted(production_rows(1000, seed=4), "salary", lambda v: v * 2)
        await capture_now(home, spec, rows, env)
        await env.sleep(timedelta(hours=3))
        status = await handle.query(DriftMonitor.status)
        last_run = (await handle.describe()).run_id
        await handle.terminate("test over")
    assert status.checks == 3
    assert [r.reason for r in status.history] == ["scheduled"] * 3
    assert all(r.status is ReportStatus.DRIFT for r in status.history)
    # Two checks per run: the third ran in a new run that carried the history.
    assert last_run != first_run
    assert status.next_check_at is not None


async def test_a_performance_degradation_reaches_the_coordinator_once(
    env: WorkflowEnvironment,
    new_worker: Callable[..., Worker],
    home: Path,
    model: str,
    task_queue: str,
) -> None:
    """The champion's accuracy collapses on labelled live traffic (a concept change): the
    monitor's performance check sends one `performance` trigger with its numbers, the
    coordinator routes it by severity (critical here: human review), and a second check that
    finds the same change does not send it again."""
    spec = champion_home(home, model, metrics=["accuracy"])
    now = await env.get_current_time()
    rows = stream_rows([0] * 600 + [2] * 600, seed=11)
    capture_stream(home, spec, rows, start=now - timedelta(seconds=1300))
    async with new_worker():
        coordinators = Coordinators(env.client, task_queue, models=None)
        await coordinators.start(model, TriggerPolicy())
        handle = await start_monitor(env.client, model, task_queue)
        first = await handle.execute_update(
            "check_performance", CheckRequest(reason="test"), result_type=PerformanceCheck
        )
        second = await handle.execute_update(
            "check_performance", CheckRequest(reason="again"), result_type=PerformanceCheck
        )
        status: MonitorStatus = await handle.query(DriftMonitor.status)
        decisions = await coordinators.decisions(model)
    assert first.verdict.status is PerformanceStatus.DEGRADED
    assert first.delivery is Delivery.SENT and first.event_id is not None
    assert "-change-" in first.event_id
    assert second.delivery is Delivery.NOT_SENT and second.event_id is None
    assert [d for d in decisions if first.event_id in d.event_ids] == [
        d for d in decisions if d.kinds == [TriggerKind.PERFORMANCE]
    ]
    decision = next(d for d in decisions if first.event_id in d.event_ids)
    assert decision.action is Action.ESCALATE and decision.reason is Reason.PERFORMANCE_CRITICAL
    assert decision.numbers["metric"] == "accuracy" and decision.numbers["reference"] == 0.95
    current = decision.numbers["current"]
    assert isinstance(current, float) and current < 0.7
    assert decision.numbers["change_at"] is not None
    assert [r.reason for r in status.performance_history] == ["again", "test"]
    assert status.last_performance == second
    # The second window has no labels yet: it keeps gathering from where the first ended.
    assert second.volume is VolumeDecision.WAIT
    assert status.performance_window_start == first.checked_at
