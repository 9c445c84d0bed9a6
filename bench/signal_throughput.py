"""Signal throughput and history size: raw Temporal vs the ModelCoordinator with every rule on.

    .venv/bin/python -m bench.signal_throughput [--events 3000] [--rounds 3] [--quick]

One embedded dev server (the `temporal` binary next to the interpreter, default server limits),
one in-process worker (`build_worker` plus the two workflows below), then:

1. Throughput. N trigger events are signalled (`trigger`, bounded client concurrency) into
   (a) `BenchRawCounter`, a trivial workflow that only counts signals and continues-as-new when
   the server suggests it (the "raw Temporal" baseline), and (b) a fresh `ModelCoordinator`
   with batching, cooldown, daily limit and budget active, fed a realistic mix (mostly
   `data_arrived`, drift across severities, scheduled, manual, alarms, ~5% redelivered
   duplicates). The clock runs from the first send until a query shows every event processed;
   the last event is unique and sent only after all others were acknowledged, so the count it
   completes proves everything before it was handled (signals are applied in history order).
   The two alternate for several rounds with fresh workflow ids; the machine is shared, so
   the figure that matters is the per-round ratio coordinator/raw, next to its target.
2. History. Every run of each continue-as-new chain is fetched and counted: events per 1,000
   triggers, runs, the largest run (events and bytes) and the largest carried state, for N and
   for a storm of `--storm-events`, to show history stays bounded whatever the event count.
   Failed workflow tasks are counted by cause: under a fast signal stream the server
   force-closes a running task once too many signals are buffered behind it
   (FORCE_CLOSE_COMMAND), and refuses a continue-as-new while new signals keep arriving
   (UNHANDLED_COMMAND); after either, the worker replays the run from its start, so the
   per-signal handler cost decides whether a workflow keeps up. A run whose processed count
   does not move for `--stall` seconds is reported as stalled, with its task failures.
   The storm is also delivered to a fresh coordinator through `trigger_batch`, 200 triggers
   a signal: what high-volume senders should do (one history event per batch).
3. Optionally (`--backlog N ...`), backlog drain: N signals queued while no worker runs, then
   one worker starts and gets them all in one activation, which the SDK fails as a potential
   deadlock past 2 s (what a coordinator meets after a worker outage or deploy).

Results are printed as tables and written to `bench/results/signal_throughput.json`.
The module is re-imported by the workflow sandbox: side effects stay under `__main__`.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    import argparse
    import asyncio
    import contextlib
    import cProfile
    import io
    import json
    import logging
    import os
    import platform
    import pstats
    import random
    import statistics
    import sysconfig
    import tempfile
    import time
    import uuid
    from collections import Counter
    from collections.abc import Awaitable, Callable, Sequence
    from concurrent.futures import ThreadPoolExecutor
    from dataclasses import asdict, dataclass, field
    from datetime import UTC, datetime, timedelta
    from pathlib import Path
    from typing import Any

    from pydantic import BaseModel
    from rich.console import Console
    from rich.table import Table
    from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
    from temporalio.client import Client, WorkflowHandle
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.service import RPCError
    from temporalio.testing import WorkflowEnvironment
    from temporalio.worker import Worker

    from bench.instant_loop import InstantLoop
    from starters.api.coordinators import Coordinators
    from workers.search_attributes import dev_server_flags
    from workers.worker import build_worker
    from workflows.common import names
    from workflows.coordinator.models import CoordinatorStatus, Decision, DecisionsQuery
    from workflows.coordinator.policy import CostModel, TriggerPolicy
    from workflows.coordinator.triggers import (
        AlarmSignal,
        AlarmState,
        DataArrival,
        DriftSignal,
        TriggerBatch,
        TriggerEvent,
        TriggerKind,
    )
    from workflows.coordinator.workflow import ModelCoordinator

TARGET_RATIO = 0.8
BATCH_PER_SIGNAL = 200
RAW_WORKFLOW = "BenchRawCounter"
DUPLICATE_SHARE = 0.05

# Every rule that can fire on a busy day is active: batches of 50 (debounce 10 min, max wait
# 1 h), a cooldown (work deferred during a round piles up as it would over a real 6 h one,
# drift of priority <= 2 bypasses it), and a daily limit and budget that the mix reaches.
BENCH_POLICY = TriggerPolicy(
    batch_size=50,
    batch_window=timedelta(minutes=10),
    max_wait=timedelta(hours=1),
    cooldown=timedelta(seconds=20),
    max_daily_trainings=12,
    daily_budget=120.0,
    cost=CostModel(fixed_cost=2.0, hourly_rate=3.0, base_hours=1.0, hours_per_million_rows=0.5),
    auto_retrain=True,
)


# ---------------------------------------------------------------------- workflows (sandboxed)


class RawInput(BaseModel):
    count: int = 0


@workflow.defn(name=RAW_WORKFLOW)
class RawCounter:
    """The baseline: counts `trigger` signals, continues-as-new when the server suggests it."""

    @workflow.init
    def __init__(self, input: RawInput) -> None:
        self._count = input.count

    @workflow.run
    async def run(self, input: RawInput) -> None:
        await workflow.wait_condition(lambda: workflow.info().is_continue_as_new_suggested())
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(RawInput(count=self._count))

    @workflow.signal(name="trigger")
    def trigger(self, *payload: Any) -> None:
        self._count += 1

    @workflow.query(name="count")
    def count(self) -> int:
        return self._count


# ---------------------------------------------------------------------- the event mix

_SEVERITY_SCORES = {  # score ranges per severity under the default cut points (0.1, 0.3, 0.5)
    "low": (0.01, 0.09),
    "medium": (0.1, 0.29),
    "high": (0.3, 0.49),
    "critical": (0.5, 0.95),
}
_SEVERITY_WEIGHTS = {"low": 45, "medium": 30, "high": 17, "critical": 8}
_FEATURES = ["age", "income", "tenure", "region", "plan", "spend_30d", "sessions", "device"]
_ALARMS = ["p95-latency", "conversion-drop", "error-rate", "label-delay"]


def _hex(rng: random.Random, bits: int) -> str:
    return f"{rng.getrandbits(bits):0{bits // 4}x}"


def _fresh_event(rng: random.Random, i: int, model: str, base: datetime) -> TriggerEvent:
    occurred = base + timedelta(milliseconds=i)
    event_id = f"evt-{_hex(rng, 128)}"
    roll = rng.random()
    if roll < 0.84:
        day = f"dt=2025-06-{1 + i % 28:02d}"
        return TriggerEvent(
            kind=TriggerKind.DATA_ARRIVED,
            source="ingest-pipeline",
            event_id=event_id,
            occurred_at=occurred,
            priority=rng.choice((3, 3, 3, 4)),
            metadata={"pipeline": "labelled-ingest", "partition": day},
            data=DataArrival(
                uri=f"s3://bench-data/{model}/{day}/part-{i:06d}-{_hex(rng, 32)}.parquet",
                rows=rng.randint(1_000, 50_000),
                size_bytes=rng.randint(100_000, 20_000_000),
            ),
        )
    if roll < 0.92:
        severity = rng.choices(list(_SEVERITY_WEIGHTS), weights=list(_SEVERITY_WEIGHTS.values()))
        low, high = _SEVERITY_SCORES[severity[0]]
        return TriggerEvent(
            kind=TriggerKind.DRIFT,
            source="drift-monitor",
            event_id=event_id,
            occurred_at=occurred,
            priority=rng.choice((1, 2, 3, 3, 4)),
            drift=DriftSignal(
                score=round(rng.uniform(low, high), 4),
                features=rng.sample(_FEATURES, rng.randint(1, 4)),
                endpoint=f"{model}-prod",
                window_start=occurred - timedelta(hours=1),
                window_end=occurred,
            ),
        )
    if roll < 0.95:
        return TriggerEvent(
            kind=TriggerKind.SCHEDULED,
            source="scheduler",
            event_id=event_id,
            occurred_at=occurred,
            priority=4,
        )
    if roll < 0.975:
        return TriggerEvent(
            kind=TriggerKind.MANUAL,
            source="oncall",
            event_id=event_id,
            occurred_at=occurred,
            priority=2,
            metadata={"ticket": f"ML-{rng.randint(100, 999)}"},
        )
    return TriggerEvent(
        kind=TriggerKind.ALARM,
        source="cloudwatch",
        event_id=event_id,
        occurred_at=occurred,
        priority=rng.choice((2, 3)),
        alarm=AlarmSignal(
            name=rng.choice(_ALARMS),
            state=AlarmState.ALARM if rng.random() < 0.8 else AlarmState.OK,
        ),
    )


def make_events(n: int, model: str, seed: int) -> list[TriggerEvent]:
    """N events, ~5% of them redeliveries of a recent one; the last one is always unique."""
    rng = random.Random(seed)
    base = datetime.now(UTC)
    unique: list[TriggerEvent] = []
    events: list[TriggerEvent] = []
    for i in range(n):
        if unique and i < n - 1 and rng.random() < DUPLICATE_SHARE:
            events.append(rng.choice(unique[-200:]))
            continue
        event = _fresh_event(rng, i, model, base)
        unique.append(event)
        events.append(event)
    return events


def describe_mix(events: Sequence[TriggerEvent]) -> dict[str, int]:
    mix = Counter(e.kind.value for e in events)
    mix["duplicates"] = len(events) - len({e.event_id for e in events})
    return dict(sorted(mix.items()))


# ---------------------------------------------------------------------- measurements


@dataclass
class ChainHistory:
    """History of one workflow id across its continue-as-new chain."""

    triggers: int
    runs: int
    total_events: int
    events_per_1k_triggers: float
    max_run_events: int
    max_run_kb: float
    max_signals_in_run: int
    max_carried_state_kb: float
    # Largest child workflow input (the coordinator's RetrainingLoop starts carry their events).
    max_child_input_kb: float
    # Workflow tasks that failed or timed out over the whole chain, and why: e.g. a
    # continue-as-new refused because new signals arrived meanwhile (UNHANDLED_COMMAND), or
    # the SDK's deadlock detection (WORKFLOW_WORKER_UNHANDLED_FAILURE).
    task_failures: int
    task_failure_causes: dict[str, int]
    run_events: list[int]


@dataclass
class Phase:
    """One measured send-and-process of N events into one workflow."""

    workflow: str
    label: str
    events: int
    completed: bool
    processed: int
    expected: int
    seconds: float
    send_seconds: float
    drain_seconds: float
    events_per_s: float
    python_cpu_ms_per_1k: float
    server_cpu_ms_per_1k: float | None
    workflow_id: str
    send_errors: int = 0
    history: ChainHistory | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Backlog:
    """Signals queued while no worker ran, drained by one worker starting afterwards."""

    workflow: str
    signals: int
    completed: bool
    processed: int
    expected: int
    seconds: float
    us_per_signal: float | None
    task_failures: str


class ServerCpu:
    """CPU time of the dev server process (a child of ours), from /proc; None elsewhere."""

    def __init__(self) -> None:
        self.pid = self._find()
        self._tick = os.sysconf("SC_CLK_TCK") if self.pid else 100

    @staticmethod
    def _find() -> int | None:
        proc = Path("/proc")
        if not proc.is_dir():
            return None
        me = os.getpid()
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            comm, rest = stat.split("(", 1)[1].rsplit(")", 1)
            if int(rest.split()[1]) == me and "temporal" in comm:
                return int(entry.name)
        return None

    def seconds(self) -> float | None:
        if self.pid is None:
            return None
        try:
            rest = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(rest[11]) + int(rest[12])) / self._tick


class WorkerProfile:
    """cProfile of the (single) workflow-task thread, switched on around coordinator phases."""

    def __init__(self, executor: ThreadPoolExecutor) -> None:
        self.executor = executor
        self.profile = cProfile.Profile()

    def enable(self) -> None:
        self.executor.submit(self.profile.enable).result()

    def disable(self) -> None:
        self.executor.submit(self.profile.disable).result()

    def report(self, path: Path, top: int = 30) -> str:
        self.profile.dump_stats(str(path))
        out = io.StringIO()
        stats = pstats.Stats(self.profile, stream=out).strip_dirs()
        stats.sort_stats("cumulative").print_stats(top)
        stats.sort_stats("tottime").print_stats(top)
        return out.getvalue()


async def send_all(
    handle: WorkflowHandle[Any, Any], events: Sequence[TriggerEvent], concurrency: int
) -> list[str]:
    """Signal every event with at most `concurrency` in flight; the last one after all others.

    Returns the errors of refused signals (e.g. the per-execution signal limit of a run that
    cannot continue-as-new) instead of stopping at the first.
    """
    errors: list[str] = []

    async def send(event: TriggerEvent) -> None:
        try:
            await handle.signal("trigger", event)
        except RPCError as err:
            errors.append(f"{err.status.name if err.status else 'rpc'}: {err.message}"[:300])

    pending = iter(events[:-1])

    async def sender() -> None:
        for event in pending:
            await send(event)

    await asyncio.gather(*(sender() for _ in range(concurrency)))
    await send(events[-1])
    return errors


async def send_batches(
    handle: WorkflowHandle[Any, Any], events: Sequence[TriggerEvent], per_signal: int
) -> list[str]:
    """The same events through `trigger_batch`, `per_signal` to a signal, in order."""
    errors: list[str] = []
    for start in range(0, len(events), per_signal):
        batch = TriggerBatch(events=list(events[start : start + per_signal]))
        try:
            await handle.signal("trigger_batch", batch)
        except RPCError as err:
            errors.append(f"{err.status.name if err.status else 'rpc'}: {err.message}"[:300])
    return errors


async def poll_until(
    read: Callable[[], Awaitable[int]],
    target: int,
    stall: float,
    interval: float = 0.02,
) -> tuple[bool, int]:
    """Poll a query until it reports `target`; queries follow continue-as-new (latest run).

    Gives up when the count has not moved for `stall` seconds (a stuck workflow task).
    """
    value = -1
    progress_at = time.monotonic()
    while True:
        # A failed query (a new run not picked up yet, a workflow task that never finishes)
        # is simply asked again.
        with contextlib.suppress(RPCError, TimeoutError):
            latest = await asyncio.wait_for(read(), timeout=stall)
            if latest != value:
                value, progress_at = latest, time.monotonic()
        if value >= target:
            return True, value
        if time.monotonic() - progress_at > stall:
            return False, value
        await asyncio.sleep(interval)


_CAUSE_PREFIX = "WORKFLOW_TASK_FAILED_CAUSE_"


async def chain_history(
    client: Client, workflow_id: str, first_run_id: str, triggers: int
) -> ChainHistory:
    run_events: list[int] = []
    run_bytes: list[int] = []
    signals: list[int] = []
    carried: list[int] = []
    child_inputs = [0]
    causes: Counter[str] = Counter()
    run_id: str | None = first_run_id
    while run_id:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        events = history.events
        run_events.append(len(events))
        run_bytes.append(sum(e.ByteSize() for e in events))
        signals.append(
            sum(
                1
                for e in events
                if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
            )
        )
        carried.append(events[0].workflow_execution_started_event_attributes.input.ByteSize())
        for e in events:
            if e.HasField("start_child_workflow_execution_initiated_event_attributes"):
                attributes = e.start_child_workflow_execution_initiated_event_attributes
                child_inputs.append(attributes.input.ByteSize())
            elif e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                cause = e.workflow_task_failed_event_attributes.cause
                causes[_cause_name(cause)] += 1
            elif e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT:
                causes["TIMED_OUT"] += 1
        last = events[-1]
        run_id = None
        if last.HasField("workflow_execution_continued_as_new_event_attributes"):
            run_id = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
    total = sum(run_events)
    return ChainHistory(
        triggers=triggers,
        runs=len(run_events),
        total_events=total,
        events_per_1k_triggers=round(total * 1000 / triggers, 1),
        max_run_events=max(run_events),
        max_run_kb=round(max(run_bytes) / 1024, 1),
        max_signals_in_run=max(signals),
        max_carried_state_kb=round(max(carried) / 1024, 1),
        max_child_input_kb=round(max(child_inputs) / 1024, 1),
        task_failures=sum(causes.values()),
        task_failure_causes=dict(causes.most_common()),
        run_events=run_events,
    )


_SHORT_CAUSES = {
    "FORCE_CLOSE_COMMAND": "force-close",
    "UNHANDLED_COMMAND": "unhandled-cmd",
    "WORKFLOW_WORKER_UNHANDLED_FAILURE": "worker-failure",
    "TIMED_OUT": "timeout",
}


def _cause_name(cause: int) -> str:
    return WorkflowTaskFailedCause.Name(cause).removeprefix(_CAUSE_PREFIX)  # type: ignore[arg-type]


async def task_failure_summary(client: Client, workflow_id: str) -> str:
    """Why a stalled workflow is stuck: its latest run's workflow task failures and timeouts,
    with the last failure message the worker reported (e.g. the SDK's deadlock detection)."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    causes: Counter[str] = Counter()
    message = ""
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
            attributes = event.workflow_task_failed_event_attributes
            causes[_cause_name(attributes.cause)] += 1
            message = attributes.failure.message or message
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT:
            causes["TIMED_OUT"] += 1
    listed = ", ".join(f"{n} {c}" for c, n in causes.most_common()) or "none"
    return f"workflow task failures: {listed}; last message: {message[:300] or '-'}"


class Bench:
    def __init__(
        self,
        client: Client,
        task_queue: str,
        args: argparse.Namespace,
        server_cpu: ServerCpu,
        profile: WorkerProfile | None,
        console: Console,
    ) -> None:
        self.console = console
        self.client = client
        self.task_queue = task_queue
        self.args = args
        self.server_cpu = server_cpu
        self.profile = profile
        self.coordinators = Coordinators(client, task_queue=task_queue, models=None)

    async def _measure(
        self,
        kind: str,
        label: str,
        workflow_id: str,
        events: Sequence[TriggerEvent],
        read: Callable[[], Awaitable[int]],
        expected: int,
        per_signal: int = 0,
    ) -> Phase:
        handle = self.client.get_workflow_handle(workflow_id)  # no run id: follows the chain
        # Ready: the first workflow task ran (the query answers) before the clock starts.
        ready, _ = await poll_until(read, 0, stall=60)
        if not ready:
            raise RuntimeError(f"{workflow_id} never answered its first query")
        if self.profile and kind == "coordinator":
            self.profile.enable()
        server0 = self.server_cpu.seconds()
        cpu0 = time.process_time()
        start = time.perf_counter()
        if per_signal:
            errors = await send_batches(handle, events, per_signal)
        else:
            errors = await send_all(handle, events, self.args.concurrency)
        sent = time.perf_counter()
        completed, processed = await poll_until(read, expected, self.args.stall)
        end = time.perf_counter()
        cpu = time.process_time() - cpu0
        server1 = self.server_cpu.seconds()
        if self.profile and kind == "coordinator":
            self.profile.disable()
        n = len(events)
        seconds = end - start
        return Phase(
            workflow=kind,
            label=label,
            events=n,
            completed=completed,
            processed=processed,
            expected=expected,
            seconds=round(seconds, 3),
            send_seconds=round(sent - start, 3),
            drain_seconds=round(end - sent, 3),
            events_per_s=round(n / seconds, 1) if completed else 0.0,
            python_cpu_ms_per_1k=round(cpu * 1e6 / n, 1),
            server_cpu_ms_per_1k=None
            if server0 is None or server1 is None
            else round((server1 - server0) * 1e6 / n, 1),
            workflow_id=workflow_id,
            send_errors=len(errors),
            details={"send_errors": dict(Counter(errors).most_common(3))} if errors else {},
        )

    async def _finish(self, phase: Phase, first_run_id: str, with_history: bool) -> None:
        # Stop it so its timers (or a failing workflow task retried over and over) cannot
        # disturb the next measurement; a completed one is counted first, so its history has
        # no terminate event.
        if not phase.completed:
            phase.details["stalled"] = await task_failure_summary(self.client, phase.workflow_id)
            await self._terminate(phase.workflow_id)
        if with_history:
            phase.history = await chain_history(
                self.client, phase.workflow_id, first_run_id, phase.events
            )
        await self._terminate(phase.workflow_id)

    async def _terminate(self, workflow_id: str) -> None:
        with contextlib.suppress(RPCError):
            await self.client.get_workflow_handle(workflow_id).terminate("bench done")

    async def raw(self, n: int, label: str, seed: int, with_history: bool = True) -> Phase:
        workflow_id = f"bench-raw-{uuid.uuid4().hex[:10]}"
        events = make_events(n, "raw", seed)
        started = await self.client.start_workflow(
            RawCounter.run, RawInput(), id=workflow_id, task_queue=self.task_queue
        )
        first_run_id = started.result_run_id or ""
        latest = self.client.get_workflow_handle_for(RawCounter.run, workflow_id)

        async def read() -> int:
            return await latest.query(RawCounter.count)

        phase = await self._measure("raw", label, workflow_id, events, read, expected=n)
        await self._finish(phase, first_run_id, with_history)
        return phase

    async def coordinator(
        self, n: int, label: str, seed: int, with_history: bool = True, per_signal: int = 0
    ) -> Phase:
        """`per_signal` > 0: deliver through `trigger_batch`, that many triggers a signal."""
        model = f"bench-{uuid.uuid4().hex[:10]}"
        workflow_id = names.coordinator_id(model)
        events = make_events(n, model, seed)
        await self.coordinators.start(model, BENCH_POLICY)
        first_run_id = (await self.client.get_workflow_handle(workflow_id).describe()).run_id

        async def read() -> int:
            return (await self.coordinators.status(model)).events_received

        phase = await self._measure(
            "coordinator" if not per_signal else f"coordinator, {per_signal}/signal",
            label,
            workflow_id,
            events,
            read,
            expected=len(events),
            per_signal=per_signal,
        )
        phase.details["mix"] = describe_mix(events)
        if phase.completed:
            status = await self.coordinators.status(model)
            phase.details.update(self._coordinator_details(status))
            phase.details["recent_reasons"] = dict(
                Counter(
                    f"{d.action.value}:{d.reason.value}" for d in await self._decisions(model)
                ).most_common()
            )
        await self._finish(phase, first_run_id, with_history)
        return phase

    async def backlog(self, kind: str, n: int, seed: int, home: Path) -> Backlog:
        """N signals queued while no worker polls the workflow's task queue, then a worker
        starts: its first workflow task carries all of them in one activation, which the SDK
        fails as a potential deadlock if it takes over 2 s (a worker outage or a deploy)."""
        queue = f"bench-backlog-{uuid.uuid4().hex[:8]}"
        read: Callable[[], Awaitable[int]]
        if kind == "raw":
            workflow_id = f"bench-raw-{uuid.uuid4().hex[:10]}"
            events = make_events(n, "raw", seed)
            expected = n
            await self.client.start_workflow(
                RawCounter.run, RawInput(), id=workflow_id, task_queue=queue
            )
            latest = self.client.get_workflow_handle_for(RawCounter.run, workflow_id)

            async def read_raw() -> int:
                return await latest.query(RawCounter.count)

            read = read_raw
        else:
            model = f"bench-{uuid.uuid4().hex[:10]}"
            workflow_id = names.coordinator_id(model)
            events = make_events(n, model, seed)
            expected = len(events)
            coordinators = Coordinators(self.client, task_queue=queue, models=None)
            await coordinators.start(model, BENCH_POLICY)

            async def read_coordinator() -> int:
                return (await coordinators.status(model)).events_received

            read = read_coordinator
        await send_all(self.client.get_workflow_handle(workflow_id), events, self.args.concurrency)
        worker = build_worker(
            self.client,
            home=home,
            task_queue=queue,
            workflows=[ModelCoordinator, RawCounter, InstantLoop],
        )
        task = asyncio.create_task(worker.run())
        start = time.perf_counter()
        completed, processed = await poll_until(read, expected, self.args.stall)
        seconds = time.perf_counter() - start
        failures = await task_failure_summary(self.client, workflow_id)
        await self._terminate(workflow_id)
        await stop_worker(worker, task, self.console)
        return Backlog(
            workflow=kind,
            signals=n,
            completed=completed,
            processed=processed,
            expected=expected,
            seconds=round(seconds, 2),
            us_per_signal=round(seconds * 1e6 / n) if completed else None,
            task_failures=failures,
        )

    async def _decisions(self, model: str) -> list[Decision]:
        decisions: list[Decision] = await self.coordinators.handle(model).query(
            "decisions", DecisionsQuery(limit=200), result_type=list[Decision]
        )
        return decisions

    @staticmethod
    def _coordinator_details(status: CoordinatorStatus) -> dict[str, Any]:
        last = status.recent_decisions[-1].seq if status.recent_decisions else 0
        return {
            "events_accepted": status.events_accepted,
            "decisions": last,
            "loops_started": status.loops_started,
            "trainings_today": status.trainings_today,
            "budget_left": status.budget_left,
            "review_pending": status.review_pending,
            "batch_pending": status.batch.events if status.batch else 0,
            "deferred_events": status.deferred.events if status.deferred else 0,
            "follow_up_events": status.follow_up.events if status.follow_up else 0,
        }


# ---------------------------------------------------------------------- reporting


def _median(values: Sequence[float]) -> float:
    return round(statistics.median(values), 3) if values else 0.0


def summarize(rounds: list[dict[str, Phase]], storm: dict[str, Phase]) -> dict[str, Any]:
    raw = [r["raw"].events_per_s for r in rounds]
    coord = [r["coordinator"].events_per_s for r in rounds]
    ratios = [c / r for c, r in zip(coord, raw, strict=True) if r > 0 and c > 0]
    median_ratio = _median(ratios)
    return {
        "raw_events_per_s_median": _median(raw),
        "coordinator_events_per_s_median": _median(coord),
        "ratios": [round(x, 3) for x in ratios],
        "ratio_median": median_ratio,
        "target_ratio": TARGET_RATIO,
        "throughput_target_met": bool(ratios) and median_ratio >= TARGET_RATIO,
        "all_completed": all(p.completed for r in rounds for p in r.values())
        and all(p.completed for p in storm.values()),
    }


def _failures(history: ChainHistory) -> str:
    if not history.task_failures:
        return "0"
    causes = ", ".join(
        f"{n} {_SHORT_CAUSES.get(c, c.lower())}" for c, n in history.task_failure_causes.items()
    )
    return f"[red]{history.task_failures}[/red] ({causes})"


def _cpu(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def print_report(
    console: Console,
    rounds: list[dict[str, Phase]],
    storm: dict[str, Phase],
    summary: dict[str, Any],
) -> None:
    table = Table(
        title="Signal throughput: raw Temporal vs ModelCoordinator (all rules on)",
        caption="ev/s from first send until every event is processed; CPU in ms per 1,000 "
        "events (python = client + worker process, server = dev server)",
    )
    for column in (
        "round",
        "events",
        "raw ev/s",
        "coordinator ev/s",
        "ratio",
        "raw drain s",
        "coord drain s",
        "python CPU raw/coord",
        "server CPU raw/coord",
    ):
        table.add_column(column, justify="right" if column != "round" else "left")
    rows = [(str(i + 1), r) for i, r in enumerate(rounds)] + [
        ("storm", storm) for _ in [0] if storm
    ]
    if "batched" in storm:
        rows.append(
            (f"storm, {BATCH_PER_SIGNAL}/signal", {**storm, "coordinator": storm["batched"]})
        )
    for name, phases in rows:
        raw, coord = phases["raw"], phases["coordinator"]
        ratio = (
            coord.events_per_s / raw.events_per_s if raw.events_per_s and coord.events_per_s else 0
        )
        table.add_row(
            name,
            f"{raw.events:,}",
            f"{raw.events_per_s:,.0f}" if raw.completed else "[red]stalled[/red]",
            f"{coord.events_per_s:,.0f}" if coord.completed else "[red]stalled[/red]",
            f"{ratio:.2f}x" if ratio else "-",
            f"{raw.drain_seconds:.2f}",
            f"{coord.drain_seconds:.2f}",
            f"{_cpu(raw.python_cpu_ms_per_1k)} / {_cpu(coord.python_cpu_ms_per_1k)}",
            f"{_cpu(raw.server_cpu_ms_per_1k)} / {_cpu(coord.server_cpu_ms_per_1k)}",
        )
    met = summary["throughput_target_met"]
    table.add_section()
    table.add_row(
        "median",
        "",
        f"{summary['raw_events_per_s_median']:,.0f}",
        f"{summary['coordinator_events_per_s_median']:,.0f}",
        f"[{'green' if met else 'red'}]{summary['ratio_median']:.2f}x[/]",
        "",
        "",
        "",
        "",
    )
    console.print(table)
    verdict = "[green]met[/green]" if met else "[red]NOT met[/red]"
    console.print(
        f"Target: coordinator >= {TARGET_RATIO}x raw (median of rounds) — "
        f"median ratio {summary['ratio_median']:.2f}x: {verdict}"
    )

    history = Table(
        title="History across the continue-as-new chain (default server limits)",
        caption="suggestContinueAsNew at 4,096 events / 4 MB; hard limit 51,200 events / 50 MB",
    )
    for column in (
        "workflow",
        "triggers",
        "runs",
        "events",
        "events / 1k triggers",
        "max events in a run",
        "max run KB",
        "max signals in a run",
        "max carried state KB",
        "max loop input KB",
        "failed tasks",
    ):
        history.add_column(column, justify="right" if column != "workflow" else "left")
    for phases in ([rounds[-1]] if rounds else []) + ([storm] if storm else []):
        for kind in ("raw", "coordinator", "batched"):
            if kind not in phases or phases[kind].history is None:
                continue
            h = phases[kind].history
            assert h is not None
            history.add_row(
                phases[kind].workflow,
                f"{h.triggers:,}",
                str(h.runs),
                f"{h.total_events:,}",
                f"{h.events_per_1k_triggers:,.0f}",
                f"{h.max_run_events:,}",
                f"{h.max_run_kb:,.0f}",
                f"{h.max_signals_in_run:,}",
                f"{h.max_carried_state_kb:,.1f}",
                f"{h.max_child_input_kb:,.1f}",
                _failures(h),
            )
    console.print(history)
    for name, phases in [(f"round {len(rounds)}", rounds[-1]), ("storm", storm)]:
        if phases and "coordinator" in phases:
            details = phases["coordinator"].details
            console.print(
                f"[dim]{name} coordinator: mix {details.get('mix')}; "
                f"{details.get('decisions')} decisions, {details.get('loops_started')} loops "
                f"started, budget left {details.get('budget_left')}, deferred "
                f"{details.get('deferred_events')}, follow-up {details.get('follow_up_events')}; "
                f"last 200 decisions: {details.get('recent_reasons')}[/dim]"
            )
    for phases in [*rounds, storm]:
        for phase in phases.values():
            if not phase.completed:
                console.print(
                    f"[red]{phase.workflow} ({phase.label}) stalled: "
                    f"{'no answer to queries' if phase.processed < 0 else phase.processed} / "
                    f"{phase.expected} processed after {phase.seconds:.0f} s; "
                    f"{phase.details.get('stalled')}[/red]",
                    highlight=False,
                )
            if phase.send_errors:
                console.print(
                    f"[red]{phase.workflow} ({phase.label}): {phase.send_errors} signals refused: "
                    f"{phase.details.get('send_errors')}[/red]",
                    highlight=False,
                )


def print_backlogs(console: Console, backlogs: Sequence[Backlog]) -> None:
    table = Table(
        title="Backlog drain: signals queued during a worker outage, then one worker starts",
        caption="the first workflow task carries the whole backlog in one activation; the SDK "
        "fails an activation that runs over 2 s (potential deadlock)",
    )
    for column in ("workflow", "queued signals", "result", "seconds", "us / signal", "failures"):
        table.add_column(column, justify="left" if column in ("workflow", "failures") else "right")
    for b in backlogs:
        table.add_row(
            b.workflow,
            f"{b.signals:,}",
            "drained" if b.completed else "[red]stuck[/red]",
            f"{b.seconds:.1f}",
            "-" if b.us_per_signal is None else f"{b.us_per_signal:,.0f}",
            b.task_failures.removeprefix("workflow task failures: "),
        )
    console.print(table)


# ---------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.signal_throughput", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--events", type=int, help="events per measured run (default 3000)")
    parser.add_argument("--storm-events", type=int, help="events in the storm run (default 10000)")
    parser.add_argument("--rounds", type=int, help="alternating rounds (default 3)")
    parser.add_argument("--concurrency", type=int, default=64, help="signals in flight")
    parser.add_argument(
        "--stall",
        type=float,
        default=30.0,
        help="give a run up when its processed count has not moved for this many seconds",
    )
    parser.add_argument(
        "--backlog",
        type=int,
        nargs="*",
        default=[],
        metavar="N",
        help="also drain N signals queued while no worker ran (one activation), e.g. 3000 6000",
    )
    parser.add_argument("--seed", type=int, default=20250601)
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="cProfile the workflow-task thread during coordinator runs (one thread: slower)",
    )
    parser.add_argument("--output", type=Path, default=None, help="JSON results file")
    args = parser.parse_args(argv)
    if args.output is None:
        args.output = Path(__file__).resolve().parent / "results" / "signal_throughput.json"
    quick = args.quick
    args.events = args.events or (300 if quick else 3000)
    args.storm_events = (
        args.storm_events if args.storm_events is not None else (1000 if quick else 10_000)
    )
    args.rounds = args.rounds or (1 if quick else 3)
    args.warmup = 50 if quick else 200
    if args.events < 2 or args.rounds < 1 or args.concurrency < 1:
        parser.error("--events must be >= 2, --rounds and --concurrency >= 1")
    return args


async def stop_worker(worker: Worker, task: asyncio.Task[None], console: Console) -> None:
    """Graceful shutdown, bounded: a workflow that cannot be evicted would hang it forever."""
    try:
        await asyncio.wait_for(worker.shutdown(), timeout=20)
    except TimeoutError:
        console.print(
            "[yellow]the worker did not shut down within 20 s (a workflow could not be "
            "evicted); abandoning it[/yellow]"
        )
        task.cancel()
    else:
        with contextlib.suppress(Exception):
            await task


async def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    started = time.perf_counter()
    temporal = Path(sysconfig.get_path("scripts")) / "temporal"
    if not temporal.exists():
        raise SystemExit(
            f"{temporal} is missing: install the project (make bench bootstraps .venv)"
        )
    console.print("[dim]starting the dev server…[/dim]")
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal),
        data_converter=pydantic_data_converter,
        dev_server_extra_args=dev_server_flags(),
    )
    executor = ThreadPoolExecutor(max_workers=1) if args.profile else None
    profile = WorkerProfile(executor) if executor else None
    rounds: list[dict[str, Phase]] = []
    storm: dict[str, Phase] = {}
    backlogs: list[Backlog] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-home-") as home:
            task_queue = f"bench-{uuid.uuid4().hex[:8]}"
            worker = build_worker(
                env.client,
                home=Path(home),
                task_queue=task_queue,
                workflows=[ModelCoordinator, RawCounter, InstantLoop],
                workflow_task_executor=executor,
            )
            worker_task = asyncio.create_task(worker.run())
            try:
                bench = Bench(env.client, task_queue, args, ServerCpu(), None, console)
                console.print(f"[dim]warm-up ({args.warmup} events each)…[/dim]")
                await bench.raw(args.warmup, "warm-up", args.seed, with_history=False)
                await bench.coordinator(args.warmup, "warm-up", args.seed, with_history=False)
                bench.profile = profile
                for i in range(args.rounds):
                    seed = args.seed + i + 1
                    order = ("raw", "coordinator") if i % 2 == 0 else ("coordinator", "raw")
                    phases: dict[str, Phase] = {}
                    for kind in order:
                        console.print(f"[dim]round {i + 1}: {kind}, {args.events:,} events…[/dim]")
                        measure = bench.raw if kind == "raw" else bench.coordinator
                        phases[kind] = await measure(args.events, f"round {i + 1}", seed)
                    rounds.append(phases)
                if args.storm_events:
                    for kind in ("raw", "coordinator"):
                        console.print(f"[dim]storm: {kind}, {args.storm_events:,} events…[/dim]")
                        measure = bench.raw if kind == "raw" else bench.coordinator
                        storm[kind] = await measure(args.storm_events, "storm", args.seed)
                    console.print(
                        f"[dim]storm: coordinator, {args.storm_events:,} events, "
                        f"{BATCH_PER_SIGNAL} per trigger_batch signal…[/dim]"
                    )
                    storm["batched"] = await bench.coordinator(
                        args.storm_events, "storm", args.seed, per_signal=BATCH_PER_SIGNAL
                    )
                for n in args.backlog:
                    for kind in ("raw", "coordinator"):
                        console.print(f"[dim]backlog: {kind}, {n:,} queued signals…[/dim]")
                        backlogs.append(await bench.backlog(kind, n, args.seed, Path(home)))
            finally:
                await stop_worker(worker, worker_task, console)
    finally:
        await env.shutdown()
        if executor:
            executor.shutdown(wait=False)

    summary = summarize(rounds, storm)
    print_report(console, rounds, storm, summary)
    if backlogs:
        print_backlogs(console, backlogs)
    result: dict[str, Any] = {
        "benchmark": "signal_throughput",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "config": {
            "events": args.events,
            "storm_events": args.storm_events,
            "rounds": args.rounds,
            "concurrency": args.concurrency,
            "seed": args.seed,
            "quick": args.quick,
            "profiled": args.profile,
            "policy": BENCH_POLICY.model_dump(mode="json"),
        },
        "summary": summary,
        "rounds": [{k: asdict(p) for k, p in r.items()} for r in rounds],
        "storm": {k: asdict(p) for k, p in storm.items()},
        "backlog": [asdict(b) for b in backlogs],
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    if profile:
        prof_path = args.output.with_suffix(".prof")
        prof_path.parent.mkdir(parents=True, exist_ok=True)
        console.print(profile.report(prof_path), markup=False, highlight=False)
        result["profile"] = str(prof_path)
    return result


class ShortEvictionErrors(logging.Filter):
    """When a workflow cannot be evicted (after a deadlocked activation) the SDK logs the stack
    of every pending handler task, every 2 s: hundreds of lines. Keep the first line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and "tasks remain" in str(error):
            record.msg = f"{record.getMessage()} ({str(error).splitlines()[0]} [stacks omitted])"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.getLogger("temporalio.worker._workflow").addFilter(ShortEvictionErrors())
    console = Console()
    if not console.is_terminal:  # piped (make bench | tee): do not squeeze the tables
        console = Console(width=max(console.width, 160))
    result = asyncio.run(run(args, console))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"results written to {args.output} ({result['wall_seconds']} s)")


if __name__ == "__main__":
    # Run the workflows from their importable module, not from `__main__`, so the sandbox
    # re-imports the same module the worker registered.
    from bench.signal_throughput import main as bench_main

    bench_main()
