"""Drive whole RetrainingLoops on a cloud backend, on the time-skipping server.

`run_two_loops` is the same story for every cloud: loop 1 is a first deployment (approved by a
reviewer, then 100% on the cloud endpoint); loop 2 is approved and rolled out 5 -> 25 -> 50 ->
100% with a canary analysis of the cloud's metrics after each bake, then promoted.
`drift_story` goes through the coordinator and the drift monitor: a first deployment, a
drift-triggered retraining promoted by its own canary, a bad candidate rolled back. A `Traffic`
thread plays the endpoint's callers (`Callers`: the platform routes, answers, captures and
publishes its metrics; ground truth arrives the platform's way): nothing joins feedback.

Time is moved by hand (`env.sleep`) with automatic skipping off: the bakes need skipped
minutes, and automatic skipping sometimes jumped the server 3,650 days while a result was
awaited (see tests/rollout/test_rollout_loop.py).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.specs import SpecStore
from starters.api.coordinators import Coordinators
from starters.api.drift import DriftMonitors
from starters.demo.synthetic import PRE_DRIFT_FUNCTION
from starters.demo.traffic import RowSource
from tests.support.cloud_traffic import Call, EndpointTraffic, calls_from
from tests.support.helpers import eventually
from tests.support.loop_harness import awaiting_approval, manual_trigger, start_loop, with_changes
from workflows.common import names
from workflows.coordinator.triggers import TriggerEvent, TriggerKind
from workflows.drift.models import CheckRequest, DriftReport
from workflows.loop.models import LoopResult, ReviewDecision
from workflows.loop.workflow import RetrainingLoop
from workflows.spec.models import ModelSpec

BAKE = timedelta(minutes=2)


def rollout_spec(spec: ModelSpec) -> ModelSpec:
    """Every candidate needs a reviewer; four short stages, no shadow and no watch."""
    return with_changes(
        spec,
        {
            "loop": {
                "approval": {"always": True},
                # Retrained on the same days, candidates differ from the champion by noise.
                "evaluation": {"min_improvement": -0.05},
                "guardrails": {"max_baseline_drift": 1.0, "max_prediction_kl": 50.0},
                "deployment": {
                    "mode": "staged",
                    "shadow": None,
                    "watch": None,
                    "max_extensions": 50,
                    "stages": [
                        {"weight": weight, "bake": "2m", "min_requests": 50}
                        for weight in (5, 25, 50, 100)
                    ],
                    "canary": {"min_labelled": 50},
                },
            }
        },
    )


class Traffic:
    """Calls `tick()` every `every` seconds on a thread until stopped."""

    def __init__(self, tick: Callable[[], None], every: float = 0.2) -> None:
        self._tick = tick
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.errors: list[BaseException] = []

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self._tick()
            except Exception as error:  # the cloud's own hiccups: retried at the next tick
                self.errors.append(error)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


async def in_retry_backoff(handle: WorkflowHandle[Any, Any]) -> bool:
    """An activity between a failed attempt and its next one (the time-skipping server reports
    such an activity as started, with its last attempt completed after it last started)."""
    described = await handle.describe()
    return any(
        activity.attempt > 1
        and activity.HasField("last_attempt_complete_time")
        and activity.last_attempt_complete_time.ToDatetime()
        >= activity.last_started_time.ToDatetime()
        for activity in described.raw_description.pending_activities
    )


async def approved_result(
    env: WorkflowEnvironment,
    handle: WorkflowHandle[RetrainingLoop, LoopResult],
    reviewer: str,
) -> LoopResult:
    """Approve the loop once it waits, then move time on until it ends."""

    async def waiting() -> object | None:
        # Time moves on only while an activity waits for its next attempt: skipping while one
        # runs would outpace its heartbeats, which the SDK sends (throttled) in real time.
        if await in_retry_backoff(handle):
            await env.sleep(timedelta(seconds=10))
        return await awaiting_approval(handle)

    await eventually(waiting, timeout=240, what="the approval gate")
    await handle.execute_update(RetrainingLoop.approve, ReviewDecision(reviewer=reviewer))
    for _ in range(600):
        described = await handle.describe()
        if described.status is not WorkflowExecutionStatus.RUNNING:
            return await handle.result()
        await env.sleep(BAKE / 4)
        await asyncio.sleep(0.2)
    raise AssertionError(f"{handle.id} did not end")


async def run_two_loops(
    env: WorkflowEnvironment, client: Client, task_queue: str, model: str
) -> tuple[LoopResult, LoopResult]:
    first = await start_loop(client, task_queue, model, 1)
    first_result = await approved_result(env, first, "ana")
    second = await start_loop(client, task_queue, model, 2, manual_trigger("again"))
    second_result = await approved_result(env, second, "bo")
    return first_result, second_result


class Callers:
    """A model's callers and labellers on a cloud endpoint, one batch per `tick()`: rows from the
    demo's stream, answered by whichever variant the platform routes them to, every answer
    labelled at once. `drifted` shifts `age` by 15 years (a feature drift the check must see)."""

    def __init__(self, traffic: EndpointTraffic, per_tick: int = 40, seed: int = 5) -> None:
        self.traffic = traffic
        self.per_tick = per_tick
        self.rows = RowSource(seed, PRE_DRIFT_FUNCTION, 1.0, f"caller-{seed}")
        self.drifted = False
        self.sent_drifted = 0

    def tick(self) -> None:
        calls, labels = calls_from(self.rows.next_row, self.per_tick)
        drifted = self.drifted
        if drifted:
            calls = [
                Call(c.request_id, {**c.features, "age": c.features["age"] + 15}) for c in calls
            ]
        answered = self.traffic.send(calls)
        self.traffic.label({rid: labels[rid] for rid in answered})
        if drifted:
            self.sent_drifted += len(answered)


def story_spec(spec: ModelSpec) -> ModelSpec:
    """`rollout_spec`, with drift checks small enough for a test's traffic and severity cut
    points that route a clear feature drift to a retraining (not to a human's review)."""
    return with_changes(
        rollout_spec(spec),
        {
            # A stage passes on labelled quality only: the captured answers and their ground
            # truth must be there (no feedback job stands in for them).
            "loop": {"deployment": {"canary": {"min_labelled": 50, "require_labels": True}}},
            # Checks on demand only: a scheduled one while time is skipped would queue a
            # follow-up retraining behind the drift's.
            "drift": {"min_rows": 200, "min_labels": 100, "interval": "3650d"},
            "trigger_policy": {"cooldown": "0s", "severity_cut_points": [0.05, 50.0, 100.0]},
        },
    )


async def loop_result(
    env: WorkflowEnvironment, client: Client, model: str, number: int, reviewer: str
) -> LoopResult:
    """Loop `number` (started by the coordinator), approved once it waits, to its end."""
    loop_id = names.retraining_loop_id(model, number)

    async def started() -> object | None:
        try:
            await client.get_workflow_handle(loop_id).describe()
        except RPCError:
            return None
        return True

    await eventually(started, timeout=120, what=f"{loop_id} to start")
    handle: WorkflowHandle[RetrainingLoop, LoopResult] = client.get_workflow_handle_for(
        RetrainingLoop.run, loop_id
    )
    return await approved_result(env, handle, reviewer)


async def drift_story(
    env: WorkflowEnvironment,
    client: Client,
    task_queue: str,
    home: Path,
    spec: ModelSpec,
    callers: Callers,
) -> tuple[LoopResult, LoopResult, LoopResult, DriftReport]:
    """A cloud model's life through its coordinator: a first deployment (manual trigger); a
    feature drift in the captured traffic, found by the drift monitor from the cloud's capture,
    retrains and the candidate is promoted by its own canary (captured quality and the cloud's
    metrics); then a bad candidate (the demo's broken entrypoint) is rolled back by it."""
    model = spec.name
    coordinators = Coordinators(client, task_queue, models=None)
    await coordinators.start(model, spec.trigger_policy)
    await coordinators.trigger(
        model, TriggerEvent(kind=TriggerKind.MANUAL, source="test", event_id="first")
    )
    first = await loop_result(env, client, model, 1, "ana")

    callers.drifted = True

    async def drifted_traffic() -> object | None:
        return callers.sent_drifted >= 600 or None

    await eventually(drifted_traffic, timeout=120, what="drifted traffic")
    report = await DriftMonitors(client, task_queue).check(model, CheckRequest(reason="test"))
    second = await loop_result(env, client, model, 2, "bo")

    SpecStore(home).register(
        with_changes(spec, {"training": {"entrypoint": "starters.demo.bad_candidate:train"}})
    )
    await coordinators.trigger(
        model, TriggerEvent(kind=TriggerKind.MANUAL, source="test", event_id="bad")
    )
    third = await loop_result(env, client, model, 3, "cy")
    return first, second, third, report
