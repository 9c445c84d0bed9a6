"""Record DriftMonitor histories (and a loop that rebuilds the drift profile at promotion) for
tests/test_replay.py.

Real activities on a time-skipping server: a monitor that runs an on-demand check and scheduled
checks on drifted captured traffic, reporting to a coordinator, then continues-as-new (its
first run is recorded); a monitor whose performance checks find the champion's accuracy
collapsed on labelled traffic and send a `performance` trigger (the `performance-check`
patch); a loop promoted all at once, whose last step rebuilds the reference profile (the
`reference-profile-on-promotion` patch). `make histories` runs it; `python -m
tests.histories.record_drift NAME...` records only the histories named.
"""

from __future__ import annotations

import asyncio
import sys
import sysconfig
import tempfile
import uuid
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from temporalio.client import WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.local.registry import MlflowRegistry
from activities.specs import SpecStore
from starters.api.coordinators import Coordinators
from tests.support.drift_harness import production_rows, shifted, write_capture
from tests.support.endpoint_harness import train_versions
from tests.support.loop_harness import register, start_loop, with_changes, write_dataset
from tests.support.performance_capture import capture_stream, champion_home, stream_rows
from workers.search_attributes import ensure_search_attributes
from workers.worker import build_worker
from workflows.common import names
from workflows.coordinator.policy import TriggerPolicy
from workflows.drift.models import CheckRequest, DriftMonitorInput, DriftReport, PerformanceCheck
from workflows.drift.workflow import DriftMonitor

HERE = Path(__file__).parent


async def record(only: Sequence[str] = ()) -> None:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(Path(sysconfig.get_path("scripts")) / "temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    recorders = {
        "drift-monitor-run1": _monitor,
        "drift-monitor-performance": _performance_monitor,
        "retraining-loop-profile-rebuilt": _loop,
    }
    try:
        await ensure_search_attributes(env.client)
        with tempfile.TemporaryDirectory() as tmp:
            handles = {
                name: await recorder(env, Path(tmp) / name)
                for name, recorder in recorders.items()
                if not only or name in only
            }
        for name, handle in handles.items():
            history = await handle.fetch_history()
            (HERE / f"{name}.json").write_text(history.to_json())
            print(f"recorded {name}.json ({len(history.events)} events)")
    finally:
        await env.shutdown()


async def _monitor(env: WorkflowEnvironment, home: Path) -> WorkflowHandle:  # type: ignore[type-arg]
    model, task_queue = "replay-drift", f"record-{uuid.uuid4().hex[:8]}"
    spec, _ = train_versions(home, model, 1, baseline_rows=4000)
    spec = with_changes(spec, {"drift": {"interval": "1h", "window": "6h", "min_rows": 100}})
    SpecStore(home).register(spec)
    registry = MlflowRegistry(home)
    champion = registry.champion(model)
    assert champion is not None
    rows = shifted(production_rows(1000, seed=1), "age", lambda v: v + 15)
    at = await env.get_current_time() - timedelta(minutes=10)
    write_capture(home, spec, rows, at=at, estimator=registry.load(champion))
    async with build_worker(env.client, home=home, task_queue=task_queue):
        await Coordinators(env.client, task_queue, models=None).start(
            model, TriggerPolicy(auto_retrain=False)
        )
        handle = await env.client.start_workflow(
            DriftMonitor.run,
            DriftMonitorInput(model=model, checks_per_run=2),
            id=names.drift_monitor_id(model),
            task_queue=task_queue,
        )
        first_run = (await handle.describe()).run_id
        await handle.execute_update("check", CheckRequest(reason="replay"), result_type=DriftReport)
        await env.sleep(timedelta(hours=2, minutes=10))
        await handle.terminate("recorded")
    return env.client.get_workflow_handle(handle.id, run_id=first_run)


async def _performance_monitor(env: WorkflowEnvironment, home: Path) -> WorkflowHandle:  # type: ignore[type-arg]
    model, task_queue = "replay-performance", f"record-{uuid.uuid4().hex[:8]}"
    spec = champion_home(home, model, metrics=["accuracy"])
    SpecStore(home).register(with_changes(spec, {"drift": {"interval": "1h", "min_rows": 100}}))
    now = await env.get_current_time()
    capture_stream(
        home, spec, stream_rows([0] * 600 + [2] * 600, seed=1), start=now - timedelta(seconds=1300)
    )
    async with build_worker(env.client, home=home, task_queue=task_queue):
        await Coordinators(env.client, task_queue, models=None).start(
            model, TriggerPolicy(auto_retrain=False)
        )
        handle = await env.client.start_workflow(
            DriftMonitor.run,
            DriftMonitorInput(model=model),
            id=names.drift_monitor_id(model),
            task_queue=task_queue,
        )
        await handle.execute_update(
            "check_performance", CheckRequest(reason="replay"), result_type=PerformanceCheck
        )
        # A scheduled check: drift, then performance (the same change: not sent again).
        await env.sleep(timedelta(hours=1, minutes=5))
        await handle.terminate("recorded")
    return handle


async def _loop(env: WorkflowEnvironment, home: Path) -> WorkflowHandle:  # type: ignore[type-arg]
    model, task_queue = "replay-profile", f"record-{uuid.uuid4().hex[:8]}"
    today = (await env.get_current_time()).date()
    spec = with_changes(
        write_dataset(home, model, today), {"loop": {"approval": {"first_deployment": False}}}
    )
    register(home, spec)
    async with build_worker(env.client, home=home, task_queue=task_queue):
        loop = await start_loop(env.client, task_queue, model, 1)
        await loop.result()
    return loop


if __name__ == "__main__":
    asyncio.run(record(sys.argv[1:]))
