"""StagedRollout on the time-skipping server against a real local endpoint.

Every path: all stages passed and promoted, a failure at each stage rolled back (read back from
the endpoint), inconclusive → extended → held for a human, pause/resume, abort, promote, the
post-promotion watch rolling the registry back, and operator commands refused when they make no
sense. The endpoint runs for real in the test process; the deployment and canary activities
drive it over HTTP exactly as in production.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from activities.local.capture import capture_dir
from activities.local.registry import MlflowRegistry
from activities.specs import SpecStore
from serving.config import EndpointConfig
from tests.support.endpoint_harness import register_estimator, running_endpoint, train_versions
from tests.support.rollout_harness import (
    RolloutDriver,
    SwitchableFault,
    Traffic,
    endpoint_state,
    requests_for,
    staged_policy,
)
from tests.support.webhook import WebhookReceiver, with_webhook
from workers.worker import build_worker
from workflows.common import names
from workflows.loop.models import ModelVersion
from workflows.rollout.models import (
    CheckName,
    DeploymentPolicy,
    Outcome,
    RolloutCommand,
    RolloutInput,
    RolloutResult,
    RolloutStatus,
    RolloutStep,
    RolloutView,
)
from workflows.rollout.workflow import StagedRollout
from workflows.spec.models import ModelSpec

pytestmark = [
    pytest.mark.time_skipping_only,
    # Skipping a bake must not wait on other tests' timers.
    pytest.mark.own_server,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow.*"),
]


@dataclass
class World:
    env: WorkflowEnvironment
    client: Client
    task_queue: str
    home: Path
    model: str
    spec: ModelSpec
    url: str
    champion: ModelVersion
    candidate: ModelVersion
    fault: Path

    async def start(self, policy: DeploymentPolicy | None = None) -> RolloutHandle:
        return await self.client.start_workflow(
            StagedRollout.run,
            RolloutInput(
                model=self.model,
                loop_id=names.retraining_loop_id(self.model, 2),
                rollout_number=2,
                candidate_version=self.candidate.version,
                champion_version=self.champion.version,
                policy=policy or staged_policy(self.url),
                capture_dir=str(capture_dir(self.home, self.spec)),
            ),
            id=names.rollout_id(self.model, 2),
            task_queue=self.task_queue,
        )

    def driver(self, handle: RolloutHandle, **options: Any) -> RolloutDriver:
        return RolloutDriver(self.env, handle, Traffic(self.url), **options)

    def break_candidate_at(self, label: str) -> Any:
        def switch(view: RolloutView) -> None:
            if view.stages[-1].label == label:
                self.fault.touch()

        return switch

    def champion_alias(self) -> str | None:
        champion = MlflowRegistry(self.home).champion(self.model)
        return champion.version if champion else None


RolloutHandle = WorkflowHandle[StagedRollout, RolloutResult]


@pytest.fixture
def trained(home: Path, model: str) -> Iterator[tuple[ModelSpec, ModelVersion, ModelVersion, Path]]:
    spec, (champion,) = train_versions(home, model, 1)
    # The candidate: the champion's model behind a switch the test flips at a chosen stage
    # (the same model, so latency and quality only differ when the fault is on).
    fault = home / f"fault-{uuid.uuid4().hex[:6]}"
    inner = MlflowRegistry(home).load(champion)
    candidate = register_estimator(
        home, model, SwitchableFault(inner, fault), f"retrain-{model}-2b"
    )
    yield spec, champion, candidate, fault


@pytest_asyncio.fixture
async def world(
    env: WorkflowEnvironment,
    client: Client,
    task_queue: str,
    home: Path,
    model: str,
    trained: tuple[ModelSpec, ModelVersion, ModelVersion, Path],
) -> AsyncIterator[World]:
    spec, champion, candidate, fault = trained
    with running_endpoint(EndpointConfig(home=home, model=model, seed=7)) as url:
        async with build_worker(client, home=home, task_queue=task_queue):
            yield World(env, client, task_queue, home, model, spec, url, champion, candidate, fault)


def variant(version: ModelVersion) -> str:
    return f"v{version.version}"


async def test_a_good_candidate_goes_through_every_stage_and_is_promoted(world: World) -> None:
    handle = await world.start()
    await world.driver(handle).run()
    result = await handle.result()

    assert result.status is RolloutStatus.PROMOTED, result.summary
    labels = [stage.label for stage in result.stages]
    assert labels == ["shadow", "5%", "25%", "50%", "100%", "watch"]
    assert [stage.weights for stage in result.stages[1:4]] == [
        {variant(world.champion): 100 - w, variant(world.candidate): w} for w in (5, 25, 50)
    ]
    generations = [stage.generation or 0 for stage in result.stages]
    assert generations == sorted(set(generations)), "each stage applied exactly once"
    for stage in result.stages:
        assert [v.outcome for v in stage.verdicts] == [Outcome.PASS], (stage.label, stage)
    shadow = result.stages[0]
    assert shadow.shadow == variant(world.candidate)
    assert shadow.verdicts[0].statistics.shadow
    state = await endpoint_state(world.url)
    assert state["weights"] == {variant(world.candidate): 100} and state["shadow"] is None
    assert world.champion_alias() == world.candidate.version
    assert result.champion_version == world.candidate.version


@pytest.mark.parametrize("stage", ["shadow", "5%", "25%", "50%", "100%"])
async def test_a_candidate_failing_at_a_stage_is_rolled_back_there(
    world: World, stage: str, webhook: WebhookReceiver
) -> None:
    SpecStore(world.home).register(with_webhook(world.spec))
    handle = await world.start()
    await world.driver(handle, before_traffic=world.break_candidate_at(stage)).run()
    result = await handle.result()

    assert result.status is RolloutStatus.ROLLED_BACK, result.summary
    assert result.stages[-1].label == stage
    assert result.verdict is not None and result.verdict.outcome is Outcome.FAIL
    failed = {c.name for c in result.verdict.checks if c.outcome is Outcome.FAIL}
    assert CheckName.ERROR_RATE in failed
    state = await endpoint_state(world.url)
    assert state["weights"] == {variant(world.champion): 100} and state["shadow"] is None
    assert world.champion_alias() == world.champion.version
    notes = outbox(world.home)
    assert any("rolled back" in note["subject"] for note in notes)
    # Every alert also reached the spec's webhook.
    assert sorted(webhook.subjects()) == sorted(note["subject"] for note in notes)


async def test_a_failure_in_the_watch_rolls_traffic_and_registry_back(world: World) -> None:
    handle = await world.start()
    await world.driver(handle, before_traffic=world.break_candidate_at("watch")).run()
    result = await handle.result()

    assert result.status is RolloutStatus.ROLLED_BACK, result.summary
    assert result.stages[-1].label == "watch"
    assert "champion again" in result.summary
    assert (await endpoint_state(world.url))["weights"] == {variant(world.champion): 100}
    assert world.champion_alias() == world.champion.version


async def test_inconclusive_extends_the_bake_then_holds_for_a_human_who_approves(
    world: World, webhook: WebhookReceiver
) -> None:
    SpecStore(world.home).register(with_webhook(world.spec))
    handle = await world.start(staged_policy(world.url, shadow=None, max_extensions=1))
    # No traffic at 5%: two bakes (one extension) stay inconclusive, then a human is asked.
    quiet = world.driver(
        handle, volume=lambda view: 0 if view.stages[-1].label == "5%" else requests_for(view)
    )
    held = await quiet.run()
    stage = held.stages[-1]
    assert held.step is RolloutStep.HELD and stage.label == "5%" and stage.bakes == 2
    assert all(v.outcome is Outcome.INCONCLUSIVE for v in stage.verdicts)
    # The workflow shows HELD, then notifies: the outbox and the webhook get it a moment later.
    subject = await webhook.wait_for_subject("held at 5%")
    assert subject in [note["subject"] for note in outbox(world.home)]

    await refused(handle, "resume", "not paused")
    record = await handle.execute_update(
        StagedRollout.approve, RolloutCommand(operator="ana", reason="traffic is low tonight")
    )
    assert record.operator == "ana"
    await world.driver(handle).run()
    result = await handle.result()
    assert result.status is RolloutStatus.PROMOTED, result.summary
    assert [c.verb for c in result.commands if c.refused is None] == ["approve"]


async def test_a_held_rollout_rolls_back_when_nobody_decides(world: World) -> None:
    policy = staged_policy(world.url, shadow=None, max_extensions=0)
    handle = await world.start(policy)
    driver = world.driver(handle, volume=lambda view: 0)
    assert (await driver.run()).held
    await world.env.sleep(policy.human_timeout)
    result = await handle.result()
    assert result.status is RolloutStatus.ROLLED_BACK
    assert "no decision within 24h" in result.summary
    assert (await endpoint_state(world.url))["weights"] == {variant(world.champion): 100}


async def test_pause_holds_the_weights_and_resume_moves_on(world: World) -> None:
    handle = await world.start(staged_policy(world.url, shadow=None))
    driver = world.driver(handle)
    await driver.run(stop=lambda view: view.stages[-1].label == "25%" if view.stages else False)
    await handle.execute_update(StagedRollout.pause, RolloutCommand(operator="ana"))
    # The 25% bake and its analysis still happen while paused; the next shift does not.
    paused = await driver.run(stop=lambda view: bool(view.stages[-1].verdicts))
    await world.env.sleep(driver.bake * 3)
    view = await handle.query(StagedRollout.status)
    assert view.paused and view.stages[-1].label == "25%" and paused.stages[-1].label == "25%"
    assert (await endpoint_state(world.url))["weights"][variant(world.candidate)] == 25

    await handle.execute_update(StagedRollout.resume, RolloutCommand(operator="ana"))
    await driver.run()
    result = await handle.result()
    assert result.status is RolloutStatus.PROMOTED
    assert [c.verb for c in result.commands] == ["pause", "resume"]


async def test_abort_rolls_back_now(world: World) -> None:
    handle = await world.start(staged_policy(world.url, shadow=None))
    driver = world.driver(handle)
    await driver.run(stop=lambda view: view.stages[-1].label == "25%" if view.stages else False)
    await handle.execute_update(
        StagedRollout.abort, RolloutCommand(operator="ana", reason="support tickets spiking")
    )
    result = await handle.result()
    assert result.status is RolloutStatus.ROLLED_BACK
    assert "aborted by ana: support tickets spiking" in result.summary
    assert (await endpoint_state(world.url))["weights"] == {variant(world.champion): 100}


async def test_promote_skips_to_full_traffic_then_watches(world: World) -> None:
    handle = await world.start(staged_policy(world.url, shadow=None))
    driver = world.driver(handle)
    await driver.run(stop=lambda view: bool(view.stages))
    # Paused, the 5% stage is analysed but does not move on; the promote decides instead.
    await handle.execute_update(StagedRollout.pause, RolloutCommand(operator="ana"))
    await driver.run(stop=lambda view: bool(view.stages[0].verdicts))
    await handle.execute_update(
        StagedRollout.promote, RolloutCommand(operator="ana", reason="hotfix, reviewed")
    )
    await driver.run()
    result = await handle.result()
    assert result.status is RolloutStatus.PROMOTED, result.summary
    assert [s.label for s in result.stages] == ["5%", "100%", "watch"]
    assert "promoted by ana" in result.summary
    assert world.champion_alias() == world.candidate.version
    assert [c.verb for c in result.commands] == ["pause", "promote"]


async def test_meaningless_or_malformed_commands_are_refused_and_recorded(world: World) -> None:
    handle = await world.start(staged_policy(world.url, shadow=None))
    driver = world.driver(handle)
    await driver.run(stop=lambda view: bool(view.stages))
    await refused(handle, "approve", "not held")
    await handle.signal("pause", {"reason": "no operator"})
    await handle.signal("abort", "not an object")
    view = await handle.query(StagedRollout.status)
    ignored = [c for c in view.commands if c.refused]
    assert [c.verb for c in ignored] == ["pause", "abort"]
    assert "operator" in (ignored[0].refused or "")
    assert not view.paused and view.result is None
    await driver.run()
    assert (await handle.result()).status is RolloutStatus.PROMOTED


async def test_a_first_deployment_serves_the_candidate_at_once(world: World) -> None:
    handle = await world.client.start_workflow(
        StagedRollout.run,
        RolloutInput(
            model=world.model,
            loop_id=names.retraining_loop_id(world.model, 1),
            rollout_number=1,
            candidate_version=world.candidate.version,
            champion_version=None,
            policy=staged_policy(world.url),
            capture_dir=str(capture_dir(world.home, world.spec)),
        ),
        id=names.rollout_id(world.model, 1),
        task_queue=world.task_queue,
    )
    result = await handle.result()
    assert result.status is RolloutStatus.PROMOTED
    assert "first deployment" in result.summary
    assert (await endpoint_state(world.url))["weights"] == {variant(world.candidate): 100}


async def refused(handle: RolloutHandle, verb: str, reason: str) -> None:
    with pytest.raises(WorkflowUpdateFailedError) as failure:
        await handle.execute_update(verb, RolloutCommand(operator="ana"))
    assert reason in str(failure.value.cause)


def outbox(home: Path) -> list[dict[str, Any]]:
    return [
        json.loads(path.read_text()) for path in sorted((home / "notifications").rglob("*.json"))
    ]
