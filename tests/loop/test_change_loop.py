"""A RetrainingLoop answering degraded quality, end to end on the local backend (real data
files, real training, MLflow): without the change point its 30-day window is mostly the old
concept, the candidate does not improve the degraded accuracy and the gate rejects it; with the
change point the window starts there, the baseline is a floor, and the candidate is promoted."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.local.registry import MlflowRegistry
from activities.loop.audit import AuditStore
from tests.support.loop_harness import (
    manual_trigger,
    register,
    start_loop,
    with_changes,
    write_dataset,
)
from workers.worker import build_worker
from workflows.coordinator.triggers import PerformanceSignal, Severity, TriggerKind
from workflows.loop.models import LoopStatus, TriggerContext
from workflows.loop.rules import QUALITY_IMPROVEMENT

pytestmark = pytest.mark.time_skipping_only

NEW_REGIME_DAYS = 4
SETTINGS = {
    "loop": {
        "approval": {"first_deployment": False, "on_near_miss": False},
        # Labels arrive late: the last two days are half labelled, a large share of the days
        # since the change.
        "window": {"min_label_coverage": 0.7},
    },
}


@pytest_asyncio.fixture
async def today(env: WorkflowEnvironment) -> date:
    return (await env.get_current_time()).date()


@pytest_asyncio.fixture
async def worker(client: Client, task_queue: str, home: Path) -> Worker:
    return build_worker(client, home=home, task_queue=task_queue)


def degraded(number: int, regime_start: datetime | None) -> TriggerContext:
    signal = PerformanceSignal(
        severity=Severity.MEDIUM,
        metric="accuracy",
        reference=0.95,
        current=0.55,
        ci_low=0.5,
        ci_high=0.6,
        rows=800,
        change_at=regime_start,
    )
    return manual_trigger(
        f"perf-{number}",
        kinds=[TriggerKind.PERFORMANCE],
        performance=signal,
        regime_start=regime_start,
    )


async def test_a_degraded_quality_loop_must_improve_it_and_learns_the_new_regime(
    env: WorkflowEnvironment, worker: Worker, home: Path, model: str, task_queue: str, today: date
) -> None:
    spec = write_dataset(home, model, today, drift_days_ago=NEW_REGIME_DAYS - 1)
    register(home, with_changes(spec, SETTINGS))
    change = datetime(today.year, today.month, today.day, tzinfo=UTC) - timedelta(
        days=NEW_REGIME_DAYS - 1
    )
    with env.auto_time_skipping_disabled():
        async with worker:
            first = await (await start_loop(env.client, task_queue, model, 1)).result()
            blind_handle = await start_loop(env.client, task_queue, model, 2, degraded(2, None))
            blind = await blind_handle.result()
            aware_handle = await start_loop(env.client, task_queue, model, 3, degraded(3, change))
            aware = await aware_handle.result()
    assert first.status is LoopStatus.PROMOTED, first.summary

    # Without the change point: a 30-day window, mostly the old concept; "not worse" is not
    # enough for a loop answering degraded accuracy.
    assert blind.status is LoopStatus.REJECTED_BY_GATE, blind.summary
    record = AuditStore(home).read(model, blind_handle.id)
    assert record is not None and record.verdict is not None and record.data_window is not None
    assert record.data_window.regime_start is None
    improvement = next(c for c in record.verdict.checks if c.name == QUALITY_IMPROVEMENT)
    assert not improvement.passed and "not a significant improvement" in improvement.detail

    # With it: the window starts at the change, the baseline is a 10% floor, and the candidate
    # improves the degraded accuracy significantly.
    assert aware.status is LoopStatus.PROMOTED, aware.summary
    record = AuditStore(home).read(model, aware_handle.id)
    assert record is not None and record.data_window is not None and record.verdict is not None
    window = record.data_window
    assert window.regime_start == change and window.start == change.date()
    assert window.baseline_rows_in_training == round(window.production_rows_in_training * 0.1)
    assert window.recent_set is not None
    improvement = next(c for c in record.verdict.checks if c.name == QUALITY_IMPROVEMENT)
    assert improvement.passed, improvement.detail
    assert improvement.numbers["ci_low"] > 0.1
    assert record.evaluation is not None and "recent" in record.evaluation.candidate
    assert MlflowRegistry(home).champion(model).version == "3"  # type: ignore[union-attr]
