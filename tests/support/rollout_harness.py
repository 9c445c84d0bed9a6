"""Drive StagedRollouts against a real local endpoint in tests.

The time-skipping server only moves time when a test asks it to, so a test plays the world:
`RolloutDriver` waits until the rollout bakes a stage, sends that stage's live traffic (real
HTTP requests to the endpoint, then the ground-truth labels as feedback), and skips the bake.
A `SwitchableFault` version behaves like its inner model until its switch file exists, then
every prediction raises: a release that breaks at a chosen stage.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from starters.demo.synthetic import FEATURES, LABEL, generate_rows
from tests.support.endpoint_harness import ADMIN_HEADERS
from workflows.rollout.models import (
    DeploymentPolicy,
    RolloutResult,
    RolloutStep,
    RolloutView,
    StagePlan,
)
from workflows.rollout.workflow import StagedRollout

BAKE = timedelta(hours=1)
MIN_REQUESTS = 20


class SwitchableFault:
    """Delegates to `inner` until `switch` exists, then raises on every call (picklable)."""

    def __init__(self, inner: Any, switch: Path) -> None:
        self.inner = inner
        self.switch = switch
        self.classes_ = inner.classes_

    def _check(self) -> None:
        if self.switch.exists():
            raise RuntimeError("injected fault: the release's serving path is broken")

    def predict(self, frame: Any) -> Any:
        self._check()
        return self.inner.predict(frame)

    def predict_proba(self, frame: Any) -> Any:
        self._check()
        return self.inner.predict_proba(frame)


def staged_policy(endpoint_url: str, **changes: Any) -> DeploymentPolicy:
    """Hour-long bakes (skipped by the test), small sample minimums, every stage analysed."""
    fields: dict[str, Any] = {
        "mode": "staged",
        "endpoint_url": endpoint_url,
        "shadow": BAKE,
        "shadow_min_requests": MIN_REQUESTS,
        "stages": [
            StagePlan(weight=w, bake=BAKE, min_requests=MIN_REQUESTS) for w in (5, 25, 50, 100)
        ],
        "watch": BAKE,
        "watch_min_requests": MIN_REQUESTS,
        "max_extensions": 1,
        # The subject is the rollout's mechanics: latency only fails on a gross slowdown, not
        # on a loaded test machine's noise (tests/rollout/test_canary.py covers the statistics).
        "canary": {"min_labelled": MIN_REQUESTS, "max_latency_ratio": 4.0},
    }
    fields.update(changes)
    return DeploymentPolicy.model_validate(fields)


@dataclass
class Traffic:
    """Real requests with their true labels sent back as feedback."""

    url: str
    seed: int = 0
    sent: int = 0
    answered: dict[str, int] = field(default_factory=dict)

    async def send(self, n: int, *, label: bool = True) -> None:
        table = generate_rows(date(2026, 1, 1), n, function=0, seed=self.seed, part=self.sent)
        self.sent += n
        rows = table.select(list(FEATURES)).to_pylist()
        labels = table.column(LABEL).to_pylist()
        limits = httpx.Limits(max_connections=8)
        async with httpx.AsyncClient(timeout=30, limits=limits) as http:
            semaphore = asyncio.Semaphore(8)

            async def one(features: dict[str, Any]) -> httpx.Response:
                async with semaphore:
                    return await http.post(f"{self.url}/invocations", json={"features": features})

            responses = await asyncio.gather(*(one(row) for row in rows))
            feedback = []
            for response, truth in zip(responses, labels, strict=True):
                self.answered[str(response.status_code)] = (
                    self.answered.get(str(response.status_code), 0) + 1
                )
                request_id = response.headers.get("x-request-id")
                if label and request_id:
                    feedback.append({"request_id": request_id, "label": truth})
            if feedback:
                reply = await http.post(f"{self.url}/feedback", json={"labels": feedback})
                assert reply.status_code == 200, reply.text


def requests_for(view: RolloutView) -> int:
    """Enough requests for both variants of the current stage to reach the minimum."""
    stage = view.stages[-1]
    shares = [w / 100 for w in stage.weights.values() if 0 < w < 100] or [1.0]
    return math.ceil(MIN_REQUESTS * 1.6 / min(shares)) + 10


@dataclass
class RolloutDriver:
    env: WorkflowEnvironment
    handle: WorkflowHandle[StagedRollout, RolloutResult]
    traffic: Traffic
    bake: timedelta = BAKE
    # Called before a stage's traffic with the stage label; may switch faults or send commands.
    before_traffic: Callable[[RolloutView], Any] | None = None
    # How many requests to send for a view (default: enough for the stage's minimum).
    volume: Callable[[RolloutView], int] = requests_for
    baked: set[tuple[int, int]] = field(default_factory=set)

    async def run(self, stop: Callable[[RolloutView], bool] | None = None) -> RolloutView:
        """Play stages until the rollout ends, is held, or `stop` says so; returns the view."""
        while True:
            view = await self.handle.query(StagedRollout.status)
            # A held rollout waits for a human: the test decides what happens next.
            if view.result is not None or view.held or (stop is not None and stop(view)):
                return view
            baking = view.step in (RolloutStep.SHADOW, RolloutStep.CANARY, RolloutStep.WATCH)
            key = (len(view.stages), view.stages[-1].bakes) if view.stages else (0, 0)
            if not baking or key in self.baked:
                await asyncio.sleep(0.05)
                continue
            self.baked.add(key)
            if self.before_traffic is not None:
                outcome = self.before_traffic(view)
                if asyncio.iscoroutine(outcome):
                    await outcome
            await self.traffic.send(self.volume(view))
            await self.env.sleep(self.bake)


async def endpoint_state(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10, headers=ADMIN_HEADERS) as http:
        response = await http.get(f"{url}/admin/weights")
        response.raise_for_status()
        state: dict[str, Any] = response.json()
        return state
