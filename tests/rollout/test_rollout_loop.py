"""The RetrainingLoop deploys through a StagedRollout child by default (time-skipping server).

Loop 1 (first deployment) puts its version at 100% of the live endpoint; loop 2's rollout is
aborted by an operator mid-stage, so the loop ends `rolled_back`, the endpoint serves the
champion again and the audit record carries the rollout's story; loop 3 is cancelled mid-rollout
and its rollout puts the champion back before the loop ends `cancelled`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import CancelledError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.loop.audit import AuditStore
from serving.config import EndpointConfig
from tests.support.endpoint_harness import running_endpoint
from tests.support.helpers import eventually
from tests.support.loop_harness import (
    manual_trigger,
    register,
    start_loop,
    with_changes,
    write_dataset,
)
from tests.support.rollout_harness import endpoint_state
from workers.worker import build_worker
from workflows.common import names
from workflows.loop.audit import LoopStage
from workflows.loop.models import LoopStatus
from workflows.loop.workflow import RetrainingLoop
from workflows.rollout.models import RolloutCommand, RolloutStatus, RolloutStep, RolloutView
from workflows.rollout.workflow import StagedRollout

pytestmark = [
    pytest.mark.time_skipping_only,
    # Skipping a bake must not wait on other tests' timers.
    pytest.mark.own_server,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow.*"),
]


@pytest_asyncio.fixture
async def today(env: WorkflowEnvironment) -> date:
    return (await env.get_current_time()).date()


async def test_loops_deploy_through_staged_rollouts_and_an_abort_rolls_back(
    env: WorkflowEnvironment, client: Client, task_queue: str, home: Path, model: str, today: date
) -> None:
    spec = with_changes(
        write_dataset(home, model, today),
        {
            "loop": {
                "approval": {"first_deployment": False, "on_near_miss": False},
                # Retrained on the same days, candidates differ from the champion by noise.
                "evaluation": {"min_improvement": -0.05},
                # The offline gates are not this test's subject: noise must not end a loop.
                "guardrails": {"max_baseline_drift": 1.0, "max_prediction_kl": 50.0},
                "deployment": {"mode": "staged", "shadow": None},
            }
        },
    )
    register(home, spec)
    # No timer here needs skipping (no approval, no bake before the abort or the cancel).
    # Skipping while a result is awaited sometimes jumps the time-skipping server 3,650 days
    # ahead (a default 10-year run timeout), and every later loop finds no data in its window.
    with (
        env.auto_time_skipping_disabled(),
        running_endpoint(EndpointConfig(home=home, model=model, seed=3)) as url,
    ):
        register(home, with_changes(spec, {"loop": {"deployment": {"endpoint_url": url}}}))
        async with build_worker(client, home=home, task_queue=task_queue):
            first = await (await start_loop(client, task_queue, model, 1)).result()
            assert first.status is LoopStatus.PROMOTED, first.summary
            assert "first deployment" in first.summary
            assert (await endpoint_state(url))["weights"] == {"v1": 100}

            def baking(number: int) -> Callable[[], Awaitable[RolloutView | None]]:
                handle = client.get_workflow_handle_for(
                    StagedRollout.run, names.rollout_id(model, number)
                )

                async def probe() -> RolloutView | None:
                    try:
                        view = await handle.query(StagedRollout.status)
                    except RPCError:  # not started yet
                        return None
                    return view if view.step is RolloutStep.CANARY else None

                return probe

            loop = await start_loop(client, task_queue, model, 2, manual_trigger("again"))
            await eventually(baking(2), timeout=180, what="the rollout's first stage")
            loop_view = await loop.query(RetrainingLoop.status)
            assert loop_view.stage is LoopStage.DEPLOYING
            assert (await endpoint_state(url))["weights"] == {"v1": 95, "v2": 5}
            rollout = client.get_workflow_handle_for(StagedRollout.run, names.rollout_id(model, 2))
            await rollout.execute_update(
                StagedRollout.abort, RolloutCommand(operator="ana", reason="pager went off")
            )
            result = await loop.result()
            assert result.status is LoopStatus.ROLLED_BACK, result.summary
            assert "aborted by ana: pager went off" in result.summary
            assert (await endpoint_state(url))["weights"] == {"v1": 100}

            # Cancelling a loop mid-rollout cancels the rollout, which puts the champion back.
            third = await start_loop(client, task_queue, model, 3, manual_trigger("third"))
            await eventually(baking(3), timeout=180, what="the third rollout's first stage")
            assert (await endpoint_state(url))["weights"] == {"v1": 95, "v3": 5}
            await third.cancel()
            with pytest.raises(WorkflowFailureError) as failure:
                await third.result()
            assert isinstance(failure.value.cause, CancelledError)
            assert (await endpoint_state(url))["weights"] == {"v1": 100}

    cancelled = AuditStore(home).read(model, names.retraining_loop_id(model, 3))
    assert cancelled is not None and cancelled.outcome is not None
    assert cancelled.outcome.status is LoopStatus.CANCELLED
    record = AuditStore(home).read(model, names.retraining_loop_id(model, 2))
    assert record is not None and record.deployment is not None
    assert record.deployment.rollout_id == names.rollout_id(model, 2)
    assert record.deployment.rollout is not None
    assert record.deployment.rollout.status is RolloutStatus.ROLLED_BACK
    assert [stage.label for stage in record.deployment.rollout.stages] == ["5%"]
