"""Record StagedRollout histories (and a loop that deploys through one) for tests/test_replay.py.

Real activities against a real local endpoint on a time-skipping server: a rollout held on an
inconclusive canary, approved and promoted; one rolled back by a failure at 25%; a loop whose
staged rollout is aborted. `make histories` runs it.
"""

from __future__ import annotations

import asyncio
import sysconfig
import tempfile
import uuid
from pathlib import Path

from temporalio.client import WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.local.capture import capture_dir
from activities.local.registry import MlflowRegistry
from serving.config import EndpointConfig
from tests.support.endpoint_harness import register_estimator, running_endpoint, train_versions
from tests.support.helpers import eventually
from tests.support.loop_harness import (
    manual_trigger,
    register,
    start_loop,
    with_changes,
    write_dataset,
)
from tests.support.rollout_harness import RolloutDriver, SwitchableFault, Traffic, staged_policy
from workers.search_attributes import ensure_search_attributes
from workers.worker import build_worker
from workflows.common import names
from workflows.rollout.models import RolloutCommand, RolloutInput, RolloutStep
from workflows.rollout.workflow import StagedRollout

HERE = Path(__file__).parent


async def record() -> None:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(Path(sysconfig.get_path("scripts")) / "temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    try:
        await ensure_search_attributes(env.client)
        with tempfile.TemporaryDirectory() as tmp:
            handles = await _rollouts(env, Path(tmp))
            handles["retraining-loop-staged-aborted"] = await _loop(env, Path(tmp) / "loop")
        for name, handle in handles.items():
            history = await handle.fetch_history()
            (HERE / f"{name}.json").write_text(history.to_json())
            print(f"recorded {name}.json ({len(history.events)} events)")
    finally:
        await env.shutdown()


async def _rollouts(env: WorkflowEnvironment, home: Path) -> dict[str, WorkflowHandle]:  # type: ignore[type-arg]
    model, task_queue = "replay-rollout", f"record-{uuid.uuid4().hex[:8]}"
    spec, (champion,) = train_versions(home, model, 1)
    fault = home / "fault"
    inner = MlflowRegistry(home).load(champion)
    candidate = register_estimator(home, model, SwitchableFault(inner, fault), "replay-2")
    handles: dict[str, WorkflowHandle] = {}  # type: ignore[type-arg]
    with running_endpoint(EndpointConfig(home=home, model=model, seed=5)) as url:
        async with build_worker(env.client, home=home, task_queue=task_queue):
            for number, name in ((2, "rollout-held-approved"), (3, "rollout-rolled-back")):
                handle = await env.client.start_workflow(
                    StagedRollout.run,
                    RolloutInput(
                        model=model,
                        loop_id=names.retraining_loop_id(model, number),
                        rollout_number=number,
                        candidate_version=candidate.version,
                        champion_version=champion.version,
                        policy=staged_policy(url, shadow=None, max_extensions=0),
                        capture_dir=str(capture_dir(home, spec)),
                    ),
                    id=names.rollout_id(model, number),
                    task_queue=task_queue,
                )
                if number == 2:
                    # Quiet at 5%: held; an operator approves, then it goes on to promotion.
                    quiet = RolloutDriver(env, handle, Traffic(url), volume=lambda view: 0)
                    await quiet.run()
                    await handle.signal("approve", {"operator": "ana", "reason": "replay"})
                    await RolloutDriver(env, handle, Traffic(url)).run()
                else:
                    fault.touch()
                    await RolloutDriver(env, handle, Traffic(url)).run()
                await handle.result()
                fault.unlink(missing_ok=True)
                handles[name] = handle
    return handles


async def _loop(env: WorkflowEnvironment, home: Path) -> WorkflowHandle:  # type: ignore[type-arg]
    model, task_queue = "replay-staged", f"record-{uuid.uuid4().hex[:8]}"
    today = (await env.get_current_time()).date()
    spec = with_changes(
        write_dataset(home, model, today),
        {"loop": {"approval": {"first_deployment": False, "on_near_miss": False}}},
    )
    register(home, spec)
    with running_endpoint(EndpointConfig(home=home, model=model, seed=3)) as url:
        changes = {"loop": {"deployment": {"mode": "staged", "endpoint_url": url}}}
        register(home, with_changes(spec, changes))
        async with build_worker(env.client, home=home, task_queue=task_queue):
            await (await start_loop(env.client, task_queue, model, 1)).result()
            loop = await start_loop(env.client, task_queue, model, 2, manual_trigger("again"))
            rollout = env.client.get_workflow_handle_for(
                StagedRollout.run, names.rollout_id(model, 2)
            )

            async def baking() -> bool | None:
                try:
                    view = await rollout.query(StagedRollout.status)
                except Exception:
                    return None
                return True if view.step is RolloutStep.CANARY else None

            await eventually(baking, timeout=180, what="the rollout's first stage")
            await rollout.execute_update(
                StagedRollout.abort, RolloutCommand(operator="ana", reason="replay")
            )
            await loop.result()
    return loop


if __name__ == "__main__":
    asyncio.run(record())
