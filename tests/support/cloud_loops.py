"""Drive whole RetrainingLoops on a cloud backend, on the time-skipping server.

`run_two_loops` is the same story for every cloud: loop 1 is a first deployment (approved by a
reviewer, then 100% on the cloud endpoint); loop 2 is approved and rolled out 5 -> 25 -> 50 ->
100% with a canary analysis of the cloud's metrics after each bake, then promoted. A
`Traffic` thread plays the endpoint's callers: it reads the live split from the cloud and
publishes each live variant's metrics, as the cloud and a feedback joiner would.

Time is moved by hand (`env.sleep`) with automatic skipping off: the bakes need skipped
minutes, and automatic skipping sometimes jumped the server 3,650 days while a result was
awaited (see tests/rollout/test_rollout_loop.py).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from tests.support.helpers import eventually
from tests.support.loop_harness import awaiting_approval, manual_trigger, start_loop, with_changes
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
