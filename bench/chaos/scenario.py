"""The chaos run: full retraining loops on the local backend with live traffic and labels, the
worker killed (-9) at chosen points of each loop, the dev server and the endpoint killed too,
then a trigger storm with kills, then a Temporal outage behind the gateway; every invariant
checked at the end (`checks.py`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client
from temporalio.service import RPCError

from activities.local.endpoint import admin_token
from activities.specs import SpecStore
from bench.chaos.observe import AdminProxy, WeightsPoller, progress_after, wall
from bench.chaos.processes import Endpoint, Server, Worker
from starters.api.connection import connect
from starters.api.coordinators import Coordinators
from starters.api.loops import Loops
from starters.api.rollouts import Rollouts
from starters.demo.endpoint_process import free_port
from starters.demo.scenario import demo_spec
from starters.demo.synthetic import PRE_DRIFT_FUNCTION, write_demo_dataset
from starters.demo.traffic import TrafficGenerator
from starters.gateway import dead_letters, pending
from starters.gateway.app import GatewayConfig, create_app
from starters.gateway.auth import SourceSecrets
from starters.gateway.database import database_path, open_database
from workflows.common.names import retraining_loop_id, rollout_id
from workflows.coordinator.policy import TriggerPolicy
from workflows.coordinator.triggers import TriggerEvent, TriggerKind
from workflows.loop.audit import LoopStage
from workflows.rollout.models import CanaryPolicy, DeploymentPolicy, RolloutStep, StagePlan
from workflows.spec.models import ApprovalPolicy, ModelSpec

log = logging.getLogger("chaos")

MODEL = "chaos-credit"
STORM_MODELS = ("chaos-storm-a", "chaos-storm-b")
OUTAGE_MODEL = "chaos-outage"
BAKE = timedelta(seconds=6)
MIN_REQUESTS = 20
RATE = 50.0
# The worker's kill points along a loop's timeline.
LOOP_POINTS = ("training", "registration", "evaluation")
ROLLOUT_POINTS = ("shift", "bake", "analysis", "watch")
TOKEN = "chaos-gateway-token"
POLL = 0.05


@dataclass
class Kill:
    point: str
    target: str  # worker, server, endpoint
    loop: int
    workflow_id: str
    activity: str | None = None
    killed_at: float = 0.0
    back_at: float = 0.0
    recovered_at: float | None = None
    worker_start: tuple[float, float] | None = None

    @property
    def recovery(self) -> float | None:
        """Seconds from the part back (a worker polling, the server answering) to progress."""
        if self.recovered_at is None:
            return None
        return max(0.0, self.recovered_at - self.back_at)

    @property
    def kill_to_progress(self) -> float | None:
        return None if self.recovered_at is None else self.recovered_at - self.killed_at

    def as_json(self) -> dict[str, Any]:
        return {
            "point": self.point,
            "target": self.target,
            "loop": self.loop,
            "workflow_id": self.workflow_id,
            "activity": self.activity,
            "recovery_s": self.recovery,
            "kill_to_progress_s": self.kill_to_progress,
            "worker_start_s": self.worker_start,
        }


@dataclass
class Run:
    home: Path
    loops: int
    seed: int
    outage_seconds: float
    storm_events: int
    kills: list[Kill] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    storm: dict[str, Any] = field(default_factory=dict)
    outage: dict[str, Any] = field(default_factory=dict)
    poller: WeightsPoller | None = None
    traffic: dict[str, Any] = field(default_factory=dict)
    worker_starts: list[tuple[float, float]] = field(default_factory=list)


def chaos_spec(spec: ModelSpec, endpoint_url: str) -> ModelSpec:
    """The demo's spec with chaos timings: three short stages and a watch, no approvals."""
    spec = demo_spec(spec, endpoint_url)
    deployment = DeploymentPolicy(
        endpoint_url=endpoint_url,
        stages=[StagePlan(weight=w, bake=BAKE, min_requests=MIN_REQUESTS) for w in (10, 50, 100)],
        canary=CanaryPolicy(min_labelled=MIN_REQUESTS),
        max_extensions=8,
        watch=BAKE,
        watch_min_requests=MIN_REQUESTS,
    )
    approval = ApprovalPolicy(first_deployment=False, on_high_drift=False, on_near_miss=False)
    loop = spec.loop.model_copy(update={"deployment": deployment, "approval": approval})
    policy = TriggerPolicy(cooldown=timedelta(0), max_daily_trainings=1000, daily_budget=1_000_000)
    return spec.model_copy(update={"loop": loop, "trigger_policy": policy})


class Chaos:
    def __init__(self, run: Run, log_dir: Path) -> None:
        self.run = run
        self.home = run.home
        self.log_dir = log_dir
        self.rng = random.Random(run.seed)
        self.server = Server(self.home, free_port(), free_port(), log_dir / "server.log")
        self.worker = Worker(self.home, self.server.address, log_dir)
        self.endpoint = Endpoint(self.home, MODEL, free_port(), log_dir / "endpoint.log")
        self.proxy = AdminProxy(self.endpoint.url)
        self.client: Client | None = None
        self._measuring: set[asyncio.Task[None]] = set()
        # Between two storm requests (50 events each): the storm lasts about two minutes.
        self.post_pause = 120 / max(1, run.storm_events / 50)

    def _keep(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._measuring.add(task)
        task.add_done_callback(self._measuring.discard)

    async def settle(self, timeout: float) -> None:
        """Wait for the measurements still running (each ends once it saw progress)."""
        if self._measuring:
            await asyncio.wait(set(self._measuring), timeout=timeout)

    # ---------------------------------------------------------------- set-up

    async def setup(self) -> ModelSpec:
        self.run.timings["server_start_s"] = await self.server.start()
        self.client = await connect(self.server.address)
        today = datetime.now(UTC).date()
        spec = await asyncio.to_thread(
            write_demo_dataset, self.home, MODEL, today - timedelta(days=30), 30, None
        )
        self.proxy.start()
        spec = chaos_spec(spec, self.proxy.url)
        SpecStore(self.home).register(spec)
        await self.start_worker()
        self.run.timings["endpoint_start_s"] = await self.endpoint.start()
        await Coordinators(self.client, models=SpecStore(self.home)).start(
            MODEL, spec.trigger_policy
        )
        return spec

    async def start_worker(self) -> tuple[float, float]:
        self.worker.start()
        ready = await self.worker.wait_ready()
        self.run.worker_starts.append(ready)
        return ready

    @property
    def admin_headers(self) -> dict[str, str]:
        token = admin_token(self.home, MODEL)
        return {"Authorization": f"Bearer {token}"} if token else {}

    # ---------------------------------------------------------------- loops

    async def loops_phase(self, spec: ModelSpec) -> None:
        assert self.client is not None
        poller = self.run.poller = WeightsPoller(self.endpoint.url, self.admin_headers, POLL)
        poller.start()
        coordinators = Coordinators(self.client, models=SpecStore(self.home))
        points = [*LOOP_POINTS, *ROLLOUT_POINTS]
        index = 0
        async with TrafficGenerator(
            self.endpoint.url,
            rate=RATE,
            label_share=0.8,
            label_delay=0.5,
            function=PRE_DRIFT_FUNCTION,
            id_prefix="chaos",
        ) as traffic:
            for number in range(1, self.run.loops + 1):
                wanted = list(LOOP_POINTS) if number == 1 else []
                if number > 1:
                    # Each later loop: one point of the loop, two of its rollout, in turn.
                    wanted = [points[index % 3], ROLLOUT_POINTS[index % 4]]
                    wanted.append(ROLLOUT_POINTS[(index + 2) % 4])
                    index += 1
                extra = []
                if number % 3 == 0:
                    extra.append("server")
                if number % 2 == 0:
                    extra.append("endpoint")
                await coordinators.trigger(
                    MODEL,
                    TriggerEvent(
                        kind=TriggerKind.MANUAL, source="chaos", event_id=f"loop-{number}"
                    ),
                )
                await self.follow(number, wanted, extra)
            stats = traffic.stats
        await poller.stop()
        self.run.traffic = {
            "sent": stats.sent,
            "ok": stats.ok,
            "errors": dict(stats.errors),
            "labelled": stats.labelled,
            "labels_dropped": stats.labels_dropped,
        }

    async def follow(self, number: int, worker_points: list[str], extra: list[str]) -> None:
        """Drive loop `number` to its end, killing at each point when it comes."""
        assert self.client is not None
        order = [*LOOP_POINTS, *ROLLOUT_POINTS]
        todo = sorted(set(worker_points), key=order.index)
        loop_id = retraining_loop_id(MODEL, number)
        # The server and the endpoint: killed during a bake of this loop's rollout (or its
        # training when it has no rollout stage to bake: the first deployment).
        others = list(extra)
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            view = await self._loop_view(number)
            outcome = view.record.outcome if view is not None else None
            if view is not None and view.stage is LoopStage.DONE and outcome and outcome.audit_uri:
                return
            for point in list(todo):
                if await self._try_kill(point, number, view):
                    todo.remove(point)
                break
            for target in list(others):
                if await self._try_other(target, number, view):
                    others.remove(target)
            await asyncio.sleep(POLL)
        raise TimeoutError(f"{loop_id} did not end in 30 minutes")

    async def _loop_view(self, number: int) -> Any:
        assert self.client is not None
        try:
            return await Loops(self.client, self.home).view(MODEL, number)
        except (LookupError, RPCError):
            return None

    async def _rollout_view(self, number: int) -> Any:
        assert self.client is not None
        try:
            return await Rollouts(self.client).view(MODEL, number)
        except (LookupError, RPCError):
            return None

    async def _pending(self, workflow_id: str) -> list[Any]:
        assert self.client is not None
        try:
            description = await self.client.get_workflow_handle(workflow_id).describe()
        except RPCError:
            return []
        return list(description.raw_description.pending_activities)

    async def _try_kill(self, point: str, number: int, view: Any) -> bool:
        """Kill the worker at `point` if the loop is there now; True once done."""
        if view is None:
            return False
        loop_id = retraining_loop_id(MODEL, number)
        stage = view.stage
        if point in LOOP_POINTS:
            stage_of = {
                "training": LoopStage.TRAINING,
                "registration": LoopStage.REGISTERING,
                "evaluation": LoopStage.EVALUATING,
            }[point]
            if stage is not stage_of:
                # Past it already (a fast step): the point is skipped for this loop.
                return _past(stage, stage_of)
            activity = await self._running_activity(loop_id)
            if point == "training" and activity is None:
                return False
            if point == "training":
                await asyncio.sleep(self.rng.uniform(0, 4))
            await self.kill_worker(point, number, loop_id, activity)
            return True
        if stage is not LoopStage.DEPLOYING:
            return _past(stage, LoopStage.DEPLOYING)
        rollout = await self._rollout_view(number)
        rid = rollout_id(MODEL, number)
        if rollout is None or rollout.result is not None:
            return rollout is not None
        if point in ("shift", "analysis"):
            method, path = (
                ("PUT", "/admin/weights") if point == "shift" else ("POST", "/admin/flush")
            )
            hold = self.proxy.arm(method, path)
            try:
                await asyncio.wait_for(hold.reached.wait(), timeout=300)
            except TimeoutError:
                self.run.notes.append(f"loop {number}: no {point} call to hold")
                self.proxy.hold = None
                return True
            activity = await self._running_activity(rid)
            await self.kill_worker(point, number, rid, activity, release=hold.release.set)
            return True
        step = RolloutStep.WATCH if point == "watch" else RolloutStep.CANARY
        if rollout.step is not step or await self._pending(rid):
            return rollout.step in (RolloutStep.PROMOTING, RolloutStep.DONE) and point == "bake"
        await asyncio.sleep(self.rng.uniform(0, BAKE.total_seconds() / 2))
        await self.kill_worker(point, number, rid, None)
        return True

    async def _running_activity(self, workflow_id: str) -> str | None:
        for activity in await self._pending(workflow_id):
            if activity.last_worker_identity.startswith(self.worker.identity()):
                return str(activity.activity_id)
        return None

    async def kill_worker(
        self,
        point: str,
        number: int,
        workflow_id: str,
        activity: str | None,
        release: Callable[[], None] | None = None,
    ) -> None:
        identity_before = self.worker.identity()
        kill = Kill(point, "worker", number, workflow_id, activity)
        kill.killed_at = time.time()
        self.worker.kill()
        if release is not None:
            release()
        log.info("killed the worker at %s of loop %d (%s)", point, number, activity)
        kill.worker_start = await self.start_worker()
        kill.back_at = time.time()
        assert identity_before != self.worker.identity()
        self.run.kills.append(kill)
        self._keep(self._measure(kill, self.worker.identity()))

    async def _try_other(self, target: str, number: int, view: Any) -> bool:
        """Kill the server or the endpoint during a bake of this loop (loop 1: training)."""
        if view is None:
            return False
        if number == 1 or view.stage is not LoopStage.DEPLOYING:
            if view.stage is not LoopStage.TRAINING or number != 1:
                return view.stage is LoopStage.DONE
        else:
            rollout = await self._rollout_view(number)
            rid = rollout_id(MODEL, number)
            if (
                rollout is None
                or rollout.step is not RolloutStep.CANARY
                or await self._pending(rid)
            ):
                return False
        workflow_id = (
            rollout_id(MODEL, number) if view.stage is LoopStage.DEPLOYING
            else retraining_loop_id(MODEL, number)
        )  # fmt: skip
        kill = Kill(f"{target} kill", target, number, workflow_id)
        kill.killed_at = time.time()
        if target == "server":
            self.server.kill()
            log.info("killed the Temporal server during loop %d", number)
            await asyncio.sleep(self.rng.uniform(1, 5))
            await self.server.start()
        else:
            self.endpoint.kill()
            log.info("killed the endpoint during loop %d", number)
            await asyncio.sleep(self.rng.uniform(0.5, 3))
            await self.endpoint.start()
        kill.back_at = time.time()
        self.run.kills.append(kill)
        if target == "server":
            self._keep(self._measure(kill, self.worker.identity()))
        else:
            kill.recovered_at = kill.back_at  # serving again: nothing to resume
        return True

    async def _measure(self, kill: Kill, identity: str) -> None:
        """Poll until the interrupted execution made progress on the worker now running."""
        assert self.client is not None
        since = datetime.fromtimestamp(kill.killed_at).astimezone()
        deadline = time.time() + 900
        while time.time() < deadline:
            with contextlib.suppress(RPCError):
                found = await progress_after(
                    self.client, kill.workflow_id, since, identity, kill.activity
                )
                if found is not None:
                    kill.recovered_at = found.timestamp()
                    return
                if kill.activity is not None:
                    # The activity may have finished between two polls: any progress will do.
                    done = await progress_after(
                        self.client, kill.workflow_id, since, identity, None
                    )
                    if done is not None:
                        kill.recovered_at = done.timestamp()
                        return
            await asyncio.sleep(0.25)

    # ---------------------------------------------------------------- storm and outage

    async def storm_phase(self) -> None:
        """`storm_events` data events per storm model through the gateway while the worker and
        the server are killed: each must be accepted exactly once."""
        assert self.client is not None
        coordinators = Coordinators(self.client, models=SpecStore(self.home))
        policy = TriggerPolicy(
            batch_size=10_000, batch_window=timedelta(hours=6), max_wait=timedelta(hours=12)
        )
        for name in (*STORM_MODELS, OUTAGE_MODEL):
            spec = chaos_spec(await asyncio.to_thread(self._copy_spec, name), self.proxy.url)
            SpecStore(self.home).register(spec)
            await coordinators.start(name, policy)
        events = self.run.storm_events
        started = time.monotonic()
        async with self._gateway() as (http, _gateway):
            senders = [self._post_events(http, name, events) for name in STORM_MODELS]
            chaos = self._storm_kills()
            await asyncio.gather(*senders, chaos)
            await self._wait_drained(600)
        statuses = {name: await coordinators.status(name) for name in STORM_MODELS}
        self.run.storm = {
            "events_per_model": events,
            "seconds": round(time.monotonic() - started, 1),
            "models": {
                name: {
                    "received": status.events_received,
                    "accepted": status.events_accepted,
                    "in_batch": status.batch.events if status.batch else 0,
                }
                for name, status in statuses.items()
            },
        }

    def _copy_spec(self, name: str) -> ModelSpec:
        base = SpecStore(self.home).get(MODEL)
        assert base is not None
        return base.model_copy(update={"name": name})

    async def _storm_kills(self) -> None:
        """Worker and server kills while the storm is being delivered. Progress after each: the
        gateway's store shrinking (deliveries need a worker to answer)."""
        for target in ("worker", "server", "worker", "server", "worker"):
            await asyncio.sleep(self.rng.uniform(2, 6))
            kill = Kill(f"storm {target} kill", target, 0, "coordinator-" + STORM_MODELS[0])
            kill.killed_at = time.time()
            if target == "worker":
                self.worker.kill()
                kill.worker_start = await self.start_worker()
            else:
                self.server.kill()
                await asyncio.sleep(self.rng.uniform(1, 4))
                await self.server.start()
            kill.back_at = time.time()
            self.run.kills.append(kill)
            self._keep(self._delivered_again(kill, self._pending_events()))

    def _pending_events(self) -> int:
        with contextlib.closing(open_database(database_path(self.home))) as conn:
            return pending.count(conn)

    async def _delivered_again(self, kill: Kill, before: int) -> None:
        """Progress after a storm kill: fewer events waiting than when the part was back (or
        none left)."""
        deadline = time.time() + 900
        while time.time() < deadline:
            waiting = await asyncio.to_thread(self._pending_events)
            if waiting == 0 or waiting < before:
                kill.recovered_at = time.time()
                return
            await asyncio.sleep(0.25)

    @contextlib.asynccontextmanager
    async def _gateway(self) -> Any:
        address = self.server.address
        config = GatewayConfig(
            home=self.home,
            secrets={"s3": SourceSecrets(token=TOKEN.encode())},
        )
        app = create_app(config, lambda: connect(address))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
                yield http, app

    async def _post_events(self, http: httpx.AsyncClient, model: str, count: int) -> None:
        per_request = 50
        for first in range(0, count, per_request):
            records = [
                {
                    "eventName": "ObjectCreated:Put",
                    "eventTime": "2026-11-12T00:00:00.000Z",
                    "s3": {
                        "bucket": {"name": "chaos-lake"},
                        "object": {"key": f"{model}/part-{i:05d}.parquet", "size": 10},
                    },
                }
                for i in range(first, min(count, first + per_request))
            ]
            await asyncio.sleep(self.post_pause)  # a storm long enough to be killed in
            while True:
                answer = await http.post(
                    "/v1/events/s3",
                    params={"model": model},
                    headers={"Authorization": f"Bearer {TOKEN}"},
                    content=json.dumps({"Records": records}),
                )
                if answer.status_code == 202:
                    break
                # 503: the store is full or the gateway busy; a sender retries.
                await asyncio.sleep(1)

    async def _wait_drained(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        path = database_path(self.home)
        while time.monotonic() < deadline:
            with contextlib.closing(open_database(path)) as conn:
                waiting, dead = pending.count(conn), dead_letters.count(conn)
            if waiting == 0:
                if dead:
                    self.run.notes.append(f"{dead} dead letters after the storm")
                return
            await asyncio.sleep(1)
        self.run.notes.append("the gateway's store did not drain in time")

    async def outage_phase(self) -> None:
        """The server stopped for `outage_seconds` while events keep coming to the gateway."""
        assert self.client is not None
        events = 300
        async with self._gateway() as (http, app):
            self.post_pause = 0.2
            self.server.stop()
            stopped = time.monotonic()
            await self._post_events(http, OUTAGE_MODEL, events)
            gateway = app.state.gateway
            path = database_path(self.home)
            with contextlib.closing(open_database(path)) as conn:
                waiting = pending.count(conn)
            remaining = self.run.outage_seconds - (time.monotonic() - stopped)
            await asyncio.sleep(max(0.0, remaining))
            with contextlib.closing(open_database(path)) as conn:
                attempts = conn.execute("SELECT max(attempts) FROM pending").fetchone()[0]
            await self.server.start()
            back = time.monotonic()
            await self._wait_drained(600)
            drained = time.monotonic() - back
            del gateway
        status = await Coordinators(self.client, models=SpecStore(self.home)).status(OUTAGE_MODEL)
        self.run.outage = {
            "seconds_down": round(back - stopped, 1),
            "events": events,
            "pending_during_outage": waiting,
            "max_attempts_while_down": attempts,
            "drained_after_s": round(drained, 1),
            "received": status.events_received,
            "accepted": status.events_accepted,
            "in_batch": status.batch.events if status.batch else 0,
        }

    # ---------------------------------------------------------------- tear-down

    async def close(self) -> None:
        self.worker.kill()
        self.endpoint.stop()
        self.proxy.stop()
        self.server.stop()


def _past(stage: LoopStage, target: LoopStage) -> bool:
    """Whether a loop at `stage` is already past `target` (the point cannot come any more)."""
    order = list(LoopStage)
    return order.index(stage) > order.index(target)


def elapsed(since: float) -> str:
    return f"{time.monotonic() - since:.0f}s"


__all__ = ["Chaos", "Kill", "Run", "wall"]
