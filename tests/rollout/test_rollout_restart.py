"""A staged rollout survives its worker being killed and its endpoint being restarted.

Real parts throughout: the dev server, `retrain worker` processes killed with SIGKILL and
started again, the real local endpoint (uvicorn in a thread) under steady live traffic, short
real bakes. While the worker is dead the rollout waits (a lost activity is retried once its
timeout passes: 30 s start-to-close for a shift, 30 s heartbeat for an analysis); afterwards
it must go on where it was. Throughout, a watcher polls the endpoint's weights: every report
must be one of the rollout's splits, and no generation may go back or change its split.

- One rollout loses its worker three times: during the 5% bake (the durable timer pending),
  during the 25% shift (the endpoint applied the change, the worker never heard back) and
  during the 50% analysis (the capture flush answered, the worker never heard back). Each stage
  is still applied exactly once (one change id, one generation each) and none is skipped.
- Another rollout sees its endpoint stopped during the 25% bake and started again on the same
  home and port: the weights, generation and change id survive, and the rollout is promoted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.local.capture import capture_dir
from activities.local.registry import MlflowRegistry
from serving.config import EndpointConfig
from serving.routing import INITIAL_CHANGE, PersistedState, read_state
from starters.demo.traffic import TrafficGenerator
from tests.support.endpoint_harness import ADMIN_HEADERS, register_estimator, train_versions
from tests.support.restart_harness import (
    RolloutHandle,
    RolloutHistory,
    ServedEndpoint,
    WeightsWatch,
    WorkerPool,
    query_status,
    read_weights,
    wait_until,
)
from workflows.common import names
from workflows.loop.models import ModelVersion
from workflows.rollout.models import (
    CanaryPolicy,
    CanaryRequest,
    DeploymentPolicy,
    EndpointState,
    Outcome,
    RolloutInput,
    RolloutResult,
    RolloutStatus,
    RolloutStep,
    RolloutView,
    StagePlan,
    TrafficChange,
    variant_name,
)
from workflows.rollout.workflow import StagedRollout
from workflows.spec.models import ModelSpec

pytestmark = [
    pytest.mark.slow,
    pytest.mark.dev_server_only,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow.*"),
]

WEIGHTS = (5, 25, 50, 100)
LABELS = [*(f"{w}%" for w in WEIGHTS), "watch"]
BAKE = timedelta(seconds=2)
# The stage the test acts in bakes longer, so that the test sees the bake before it ends.
LONG_BAKE = timedelta(seconds=8)
MIN_REQUESTS = 5
ROLLOUT_NUMBER = 2
# Waiting for one step of the rollout; a lost activity alone takes its 30 s timeout to retry.
STEP_TIMEOUT = 180.0
FINISH_TIMEOUT = 300.0


@dataclass
class Release:
    home: Path
    model: str
    spec: ModelSpec
    champion: ModelVersion
    candidate: ModelVersion

    @property
    def rollout_id(self) -> str:
        return names.rollout_id(self.model, ROLLOUT_NUMBER)

    def split(self, weight: int) -> dict[str, int]:
        """The live weights of a stage (variants at 0% are not part of the split)."""
        champion = variant_name(self.champion.version)
        candidate = variant_name(self.candidate.version)
        if weight == 0:
            return {champion: 100}
        return {champion: 100 - weight, candidate: weight} if weight < 100 else {candidate: 100}

    def stage_splits(self) -> list[dict[str, int]]:
        return [*(self.split(w) for w in WEIGHTS), self.split(100)]

    def change_ids(self) -> list[str]:
        return [f"{self.rollout_id}/{n}-{label}" for n, label in enumerate(LABELS, 1)]

    def policy(self, url: str, long_bake_at: str) -> DeploymentPolicy:
        """Short real bakes, tiny sample minimums, extensions instead of holds: a slow machine
        only makes a stage bake again. The canary only fails on overwhelming evidence (the
        candidate is the champion's model; canary sensitivity is tested elsewhere)."""
        return DeploymentPolicy(
            mode="staged",
            endpoint_url=url,
            shadow=None,
            stages=[
                StagePlan(
                    weight=w,
                    bake=LONG_BAKE if f"{w}%" == long_bake_at else BAKE,
                    min_requests=MIN_REQUESTS,
                )
                for w in WEIGHTS
            ],
            watch=BAKE,
            watch_min_requests=MIN_REQUESTS,
            max_extensions=50,
            canary=CanaryPolicy(alpha=1e-6, max_latency_ratio=20.0, min_labelled=100_000),
        )

    async def start(
        self, client: Client, task_queue: str, policy: DeploymentPolicy
    ) -> RolloutHandle:
        return await client.start_workflow(
            StagedRollout.run,
            RolloutInput(
                model=self.model,
                loop_id=names.retraining_loop_id(self.model, ROLLOUT_NUMBER),
                rollout_number=ROLLOUT_NUMBER,
                candidate_version=self.candidate.version,
                champion_version=self.champion.version,
                policy=policy,
                capture_dir=str(capture_dir(self.home, self.spec)),
            ),
            id=self.rollout_id,
            task_queue=task_queue,
        )

    def persisted(self) -> PersistedState:
        state = read_state(EndpointConfig(home=self.home, model=self.model).state_file, self.model)
        assert state is not None, "the endpoint has no persisted state"
        return state


@pytest.fixture
def release(home: Path, model: str) -> Release:
    spec, (champion,) = train_versions(home, model, 1)
    # The candidate: the champion's own model registered again, so that every canary passes.
    inner = MlflowRegistry(home).load(champion)
    candidate = register_estimator(home, model, inner, names.retraining_loop_id(model, 2))
    return Release(home, model, spec, champion, candidate)


@contextlib.asynccontextmanager
async def live(url: str) -> AsyncIterator[TrafficGenerator]:
    """Steady traffic (40 requests/s, a quarter labelled) for the whole test."""
    async with TrafficGenerator(
        url, rate=40, concurrency=8, label_share=0.25, label_delay=1.0, timeout=10.0
    ) as traffic:
        yield traffic


async def finish(handle: RolloutHandle, workers: WorkerPool) -> RolloutResult:
    try:
        return await asyncio.wait_for(handle.result(), FINISH_TIMEOUT)
    except TimeoutError:
        raise AssertionError(
            f"the rollout did not finish within {FINISH_TIMEOUT:.0f}s; "
            f"{describe(await query_status(handle))}\n{workers.report()}"
        ) from None


def describe(view: RolloutView | None) -> str:
    """A short account of where a rollout is, for failure messages."""
    if view is None:
        return "no worker answers the status query"
    stages = "; ".join(
        f"{stage.label} (generation {stage.generation}, {stage.bakes} bakes"
        + (f", last: {stage.verdicts[-1].summary.splitlines()[0]}" if stage.verdicts else "")
        + ")"
        for stage in view.stages
    )
    return f"step {view.step.value}, weights {view.weights}, stages: {stages or 'none'}"


async def stop_rollout(handle: RolloutHandle | None) -> None:
    """A failed test leaves no rollout running on the session's dev server."""
    if handle is not None:
        with contextlib.suppress(RPCError):
            await handle.terminate("test over")


async def put_weights(url: str, weights: dict[str, int], change_id: str | None) -> EndpointState:
    """What `shift_traffic` sends: PUT /admin/weights with a change id."""
    body = {"weights": weights, "shadow": None, "change_id": change_id}
    async with httpx.AsyncClient(timeout=30, headers=ADMIN_HEADERS) as http:
        response = await http.put(f"{url}/admin/weights", json=body)
        response.raise_for_status()
        return EndpointState.model_validate_json(response.content)


def change_labelled(label: str) -> Callable[[bytes], bool]:
    def matches(body: bytes) -> bool:
        return str(json.loads(body).get("change_id", "")).endswith(f"-{label}")

    return matches


def assert_applied_once(release: Release, result: RolloutResult, first_generation: int) -> None:
    """Every stage once, in order, at its split, one generation and one change id each."""
    assert result.status is RolloutStatus.PROMOTED, result.summary
    assert [stage.label for stage in result.stages] == LABELS, "a stage skipped or repeated"
    assert [stage.weights for stage in result.stages] == release.stage_splits()
    generations = [stage.generation for stage in result.stages]
    expected = list(range(first_generation + 1, first_generation + 1 + len(LABELS)))
    assert generations == expected, "each stage must open exactly one new generation"
    for stage in result.stages:
        assert stage.verdicts and stage.verdicts[-1].outcome is Outcome.PASS, stage
    state = release.persisted()
    # The endpoint's own record: each change applied once, none lost, none twice.
    assert state.applied_change_ids == [INITIAL_CHANGE, *release.change_ids()]
    assert state.generation == expected[-1]
    assert state.weights == release.split(100) and state.shadow is None
    champion = MlflowRegistry(release.home).champion(release.model)
    assert champion is not None and champion.version == release.candidate.version


def assert_weights_always_valid(release: Release, watch: WeightsWatch, generations: int) -> None:
    allowed = [release.split(0), *release.stage_splits()]
    assert watch.problems(allowed) == []
    seen = {report.generation for report in watch.reports}
    # The watcher ran throughout: it saw the starting split and the final one (and, unless the
    # machine stalled it for a whole bake, every stage's in between).
    assert {1, generations} <= seen <= set(range(1, generations + 1)), sorted(seen)


async def test_worker_killed_in_a_bake_a_shift_and_an_analysis_resumes_each_stage_once(
    env: WorkflowEnvironment, release: Release, task_queue: str, tmp_path: Path
) -> None:
    client = env.client
    workers = WorkerPool(
        client.service_client.config.target_host, task_queue, release.home, tmp_path
    )
    endpoint = ServedEndpoint(EndpointConfig(home=release.home, model=release.model, seed=7))
    handle: RolloutHandle | None = None
    try:
        async with endpoint, WeightsWatch(endpoint.url) as watch, live(endpoint.url):
            initial = await read_weights(endpoint.url)
            assert initial.weights == release.split(0) and initial.generation == 1
            workers.start()
            handle = await release.start(
                client, task_queue, release.policy(endpoint.url, long_bake_at="5%")
            )
            history = RolloutHistory(client, handle)

            # (a) A bake: the 5% stage is live and its timer pending, no verdict yet.
            async def baking_at_5() -> bool:
                workers.check_alive()
                view = await query_status(handle)
                if view is None or view.step is not RolloutStep.CANARY or not view.stages:
                    return False
                stage = view.stages[-1]
                return stage.label == "5%" and not stage.verdicts and await history.timer_pending()

            await wait_until(baking_at_5, timeout=STEP_TIMEOUT, what="the 5% bake")
            shift_hold = endpoint.arm("PUT", "/admin/weights", when=change_labelled("25%"))
            workers.kill_current()
            after_bake = workers.start()

            # (b) A shift: the endpoint applied the 25% change; its answer is held back.
            await shift_hold.wait_held(
                STEP_TIMEOUT, "the 25% shift to reach the endpoint", workers.check_alive
            )
            applied = await read_weights(endpoint.url)
            assert applied.weights == release.split(25), applied
            assert applied.change_id == release.change_ids()[1] and applied.generation == 3
            # The analysis of the 50% stage: its flush is the first while 50% is persisted.
            flush_hold = endpoint.arm(
                "POST",
                "/admin/flush",
                when=lambda _: release.persisted().weights == release.split(50),
            )
            workers.kill_current()
            after_shift = workers.start()
            shift_hold.release()

            # (c) An analysis: the endpoint flushed the capture; its answer is held back.
            await flush_hold.wait_held(
                STEP_TIMEOUT, "the 50% analysis to flush the capture", workers.check_alive
            )
            workers.kill_current()
            after_analysis = workers.start()
            flush_hold.release()

            result = await finish(handle, workers)
            final = await read_weights(endpoint.url)
        shifts = await history.activities("shift_traffic", TrafficChange)
        analyses = await history.activities("analyse_canary", CanaryRequest)
        resumed_after_bake = await history.first_task_completed_after_timer(0)
    finally:
        workers.kill_all()
        await stop_rollout(handle)

    assert_applied_once(release, result, first_generation=1)
    assert final.weights == release.split(100) and final.shadow is None
    assert_weights_always_valid(release, watch, generations=1 + len(LABELS))

    # The kills hit where they were meant to, and the restarted workers took over there.
    assert resumed_after_bake.startswith(after_bake.identity_prefix), resumed_after_bake
    assert [run.input.change_id for run in shifts] == release.change_ids(), "a shift repeated"
    [shift] = [run for run in shifts if run.input.change_id == release.change_ids()[1]]
    assert shift.attempt is not None and shift.attempt >= 2, shift
    assert (shift.completed_by or "").startswith(after_shift.identity_prefix), shift
    generation_50 = result.stages[LABELS.index("50%")].generation
    analysis = next(run for run in analyses if run.input.challenger.generation == generation_50)
    assert analysis.attempt is not None and analysis.attempt >= 2, analysis
    assert (analysis.completed_by or "").startswith(after_analysis.identity_prefix), analysis


async def test_endpoint_restarted_mid_rollout_keeps_its_weights_and_the_rollout_promotes(
    env: WorkflowEnvironment, release: Release, task_queue: str, tmp_path: Path
) -> None:
    client = env.client
    workers = WorkerPool(
        client.service_client.config.target_host, task_queue, release.home, tmp_path
    )
    endpoint = ServedEndpoint(EndpointConfig(home=release.home, model=release.model, seed=7))
    handle: RolloutHandle | None = None
    try:
        async with endpoint, WeightsWatch(endpoint.url) as watch, live(endpoint.url) as traffic:
            url = endpoint.url
            workers.start()
            handle = await release.start(
                client, task_queue, release.policy(url, long_bake_at="25%")
            )
            history = RolloutHistory(client, handle)

            async def baking_at_25() -> bool:
                workers.check_alive()
                view = await query_status(handle)
                if view is None or view.step is not RolloutStep.CANARY or not view.stages:
                    return False
                stage = view.stages[-1]
                return stage.label == "25%" and not stage.verdicts and await history.timer_pending()

            await wait_until(baking_at_25, timeout=STEP_TIMEOUT, what="the 25% bake")
            before = await read_weights(url)
            await endpoint.astop()
            with pytest.raises(httpx.ConnectError):
                await read_weights(url)
            await endpoint.astart()
            assert endpoint.url == url and endpoint.starts == 2
            after = await read_weights(url)
            assert before.weights == release.split(25), before
            assert before.change_id == release.change_ids()[1], before
            # Everything the endpoint reports survived the restart, its generation's clock too.
            assert after == before
            # A shift retried now (its worker lost the answer) is still known: nothing changes.
            assert await put_weights(url, before.weights, before.change_id) == before
            answered = traffic.stats.ok

            async def serving_again() -> bool:
                return traffic.stats.ok > answered

            await wait_until(serving_again, timeout=STEP_TIMEOUT, what="traffic to be answered")
            result = await finish(handle, workers)
    finally:
        workers.kill_all()
        await stop_rollout(handle)

    assert_applied_once(release, result, first_generation=1)
    assert result.stages[LABELS.index("25%")].generation == before.generation
    assert_weights_always_valid(release, watch, generations=1 + len(LABELS))
