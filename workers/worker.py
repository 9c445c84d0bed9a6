"""The worker: coordinators, retraining loops, rollouts, drift monitors, and the activities of
every backend (local, SageMaker, Vertex), routed per model by its spec."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from temporalio.client import Client
from temporalio.worker import Worker

from workers.converter import with_worker_converter
from workers.liveness import KeepAlive
from workers.sandbox import workflow_runner
from workflows.common.names import TASK_QUEUE
from workflows.coordinator.workflow import ModelCoordinator
from workflows.drift.workflow import DriftMonitor
from workflows.loop.workflow import RetrainingLoop
from workflows.rollout.workflow import StagedRollout
from workflows.schedule.workflow import ScheduledTrigger
from workflows.slots.workflow import TrainingSlots

if TYPE_CHECKING:
    from activities.backends import CloudConnections

log = logging.getLogger(__name__)

# `retrain worker` on SIGTERM: running activities get this long to finish before they are
# cancelled; compose grants the container 60 s (`stop_grace_period`) before SIGKILL, and the
# rest lets the cancelled ones report back and the process exit. (Tests build workers without
# it: their teardown cancels at once.)
GRACEFUL_SHUTDOWN = timedelta(seconds=50)


ALL_WORKFLOWS: tuple[type, ...] = (
    ModelCoordinator,
    RetrainingLoop,
    StagedRollout,
    DriftMonitor,
    ScheduledTrigger,
    TrainingSlots,
)


def build_worker(
    client: Client,
    *,
    home: Path,
    task_queue: str = TASK_QUEUE,
    workflows: Sequence[type] = ALL_WORKFLOWS,
    activity_executor: ThreadPoolExecutor | None = None,
    cloud: CloudConnections | None = None,
    **worker_options: Any,
) -> Worker:
    """A worker for every workflow, and the activities under them: each model's on the backend
    its spec names (local by default). Tests pass `workflows` to run doubles in place of the
    real loop, and `cloud` to reach moto and the Vertex fake."""
    # Every activity heartbeats while its worker lives (workers/liveness.py).
    worker_options["interceptors"] = [KeepAlive(), *worker_options.get("interceptors", [])]
    return Worker(
        # Workflow messages decode tolerantly: an undecodable signal or update is refused with
        # a reason by its handler instead of being dropped (workers/converter.py).
        with_worker_converter(client),
        task_queue=task_queue,
        workflows=list(workflows),
        activities=all_activities(client, home, cloud),
        activity_executor=activity_executor or ThreadPoolExecutor(max_workers=8),
        workflow_runner=workflow_runner(),
        **worker_options,
    )


def all_activities(
    client: Client, home: Path, cloud: CloudConnections | None = None
) -> list[Callable[..., Any]]:
    """Every activity, on every backend. Imported here, not at the top: the activities' stack
    (scikit-learn, scipy, MLflow, pandas) takes seconds to import, which `retrain worker` spends
    while its workflows already run (`run_worker`)."""
    from activities.backends import (
        BackendResolver,
        CloudConnections,
        RoutedCanary,
        RoutedRegistry,
        RoutedServing,
        RoutedTraining,
        registry_factories,
    )
    from activities.coordinator.decisions import DecisionArchiveActivities
    from activities.coordinator.loop_watch import LoopWatchActivities
    from activities.drift.check import DriftActivities
    from activities.drift.performance_check import PerformanceActivities
    from activities.local.backend import local_backend
    from activities.local.notifications import OutboxChannel
    from activities.loop.audit import AuditActivities, AuditStore
    from activities.loop.data_window import DataWindowActivities
    from activities.loop.evaluation import EvaluationActivities
    from activities.loop.golden_set import GoldenSetActivities
    from activities.loop.registry import RegistryActivities
    from activities.loop.training import TrainingActivities
    from activities.mirror import DataMirror
    from activities.notifications import LogChannel, NotificationActivities
    from activities.ports import ObjectStore
    from activities.rollout.canary import CanaryActivities
    from activities.rollout.deployment import DeploymentActivities
    from activities.scaling import ScalingLog
    from activities.schedule.checks import ScheduleCheckActivities
    from activities.slots.limiter import TrainingSlotActivities
    from activities.specs import ModelSpecActivities, SpecStore

    cloud = cloud or CloudConnections()
    specs = SpecStore(home)
    backends = BackendResolver(specs, local_backend(home), registry_factories(home, cloud))
    mirror = DataMirror(home, lambda spec: backends.for_spec(spec).store)
    notifications = NotificationActivities(
        specs,
        [LogChannel(), OutboxChannel(home / "notifications")],
        lambda model: backends.for_model(model).notifications,
    )
    registry = RoutedRegistry(backends)
    registry_activities = RegistryActivities(registry)
    drift = DriftActivities(
        home,
        specs,
        registry,
        RoutedServing(backends),
        platform=lambda spec: backends.for_spec(spec).drift_source,
        mirror=mirror,
        capture=lambda spec: backends.for_spec(spec).capture,
    )
    serving = RoutedServing(backends)
    performance = PerformanceActivities(
        home,
        specs,
        registry,
        serving.flush_capture,
        capture=lambda spec: backends.for_spec(spec).capture,
    )
    schedule_checks = ScheduleCheckActivities(
        client, home, specs, lambda spec: backends.for_spec(spec).store
    )

    training_slots = TrainingSlotActivities(client)

    def remote_audit(model: str) -> tuple[ObjectStore, str] | None:
        backend = backends.for_model(model)
        if backend.store is None or backend.store_root is None:
            return None
        return backend.store, backend.store_root

    return [
        notifications.notify,
        notifications.notify_reviewers,
        LoopWatchActivities(client).await_loop_result,
        DecisionArchiveActivities(home).archive,
        ModelSpecActivities(specs).load,
        DataWindowActivities(home, mirror).select,
        GoldenSetActivities(home, mirror).verify,
        TrainingActivities(RoutedTraining(backends)).train,
        registry_activities.register_candidate,
        registry_activities.champion_version,
        registry_activities.promote_candidate,
        registry_activities.reject_candidate,
        EvaluationActivities(home, registry.load).evaluate,
        AuditActivities(AuditStore(home), remote_audit, ScalingLog(home)).write,
        DeploymentActivities(RoutedServing(backends)).shift_traffic,
        CanaryActivities(RoutedCanary(backends)).analyse,
        drift.check,
        drift.build_reference_profile,
        performance.check,
        schedule_checks.deliver,
        schedule_checks.health,
        schedule_checks.freshness,
        training_slots.request_slot,
        training_slots.find_closed,
    ]


async def run_worker(
    client: Client, *, home: Path, task_queue: str = TASK_QUEUE, **worker_options: Any
) -> None:
    """`retrain worker`: until SIGINT/SIGTERM, then a graceful shutdown (in-flight tasks finish).

    The activities' stack (scikit-learn, scipy, MLflow, river) is imported before the workflow
    worker polls: the workflow sandbox swaps `sys.modules` for a thread-local proxy while it
    imports a workflow's modules, and a native extension imported in another thread meanwhile
    (river's Rust core) fails on it ("'_ThreadLocalSysModules' object is not an instance of
    'dict'"), which killed workers that imported it in a thread beside running workflows.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    decoding = with_worker_converter(client)
    loading = asyncio.ensure_future(asyncio.to_thread(all_activities, client, home))
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if stop.is_set():
        log.info("shutting down before the workers started")
        return
    workflows = Worker(
        decoding,
        task_queue=task_queue,
        workflows=list(ALL_WORKFLOWS),
        workflow_runner=workflow_runner(),
        **worker_options,
    )
    log.info("%d startup objects frozen out of garbage collection", freeze_startup_heap())
    async with workflows:
        log.info("workflows polling task queue %r", task_queue)
        options = dict(worker_options)
        options["interceptors"] = [KeepAlive(), *options.get("interceptors", [])]
        activities = Worker(
            decoding,
            task_queue=task_queue,
            activities=loading.result(),
            activity_executor=ThreadPoolExecutor(max_workers=8),
            **options,
        )
        async with activities:
            log.info("activities polling task queue %r", task_queue)
            await stop.wait()
            log.info("shutting down: finishing in-flight tasks")


def freeze_startup_heap() -> int:
    """Move what start-up built (the activities' stack and the sandbox's validated workflows,
    about 420,000 objects) out of the collector's reach, and return how many there are.

    A full collection walks every tracked object while holding the GIL, in whichever thread
    triggered it, a workflow activation's included; the SDK fails an activation that takes
    over 2 s as a deadlock. Over the start-up heap alone that walk took 0.56 s on a busy
    two-core host; frozen, those objects are never walked again (they live as long as the
    process anyway)."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
