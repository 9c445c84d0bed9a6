"""The worker: coordinators, retraining loops, rollouts, drift monitors and the local backend's
activities."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from activities.audit import AuditActivities, AuditStore
from activities.canary_activities import CanaryActivities
from activities.data_window import DataWindowActivities
from activities.deployment import DeploymentActivities, LocalEndpoint
from activities.drift_check import DriftActivities
from activities.evaluation import EvaluationActivities
from activities.golden_set import GoldenSetActivities
from activities.loop_watch import LoopWatchActivities
from activities.model_specs import ModelSpecActivities, SpecStore
from activities.notifications import NotificationActivities, OutboxChannel
from activities.notifier import LogNotifier, LoopNotificationActivities, OutboxNotifier
from activities.registry import MlflowRegistry, RegistryActivities
from activities.training import LocalTrainingBackend, TrainingActivities
from workers.sandbox import workflow_runner
from workflows.coordinator import ModelCoordinator
from workflows.drift_monitor import DriftMonitor
from workflows.names import TASK_QUEUE
from workflows.retraining import RetrainingLoop
from workflows.rollout import StagedRollout

log = logging.getLogger(__name__)


def build_worker(
    client: Client,
    *,
    home: Path,
    task_queue: str = TASK_QUEUE,
    workflows: Sequence[type] = (ModelCoordinator, RetrainingLoop, StagedRollout, DriftMonitor),
    activity_executor: ThreadPoolExecutor | None = None,
    **worker_options: Any,
) -> Worker:
    """A worker for the embedded default: every workflow, and the local backend under them.
    Tests pass `workflows` to run doubles in place of the real loop."""
    return Worker(
        client,
        task_queue=task_queue,
        workflows=list(workflows),
        activities=local_activities(client, home),
        activity_executor=activity_executor or ThreadPoolExecutor(max_workers=8),
        workflow_runner=workflow_runner(),
        **worker_options,
    )


def local_activities(client: Client, home: Path) -> list[Callable[..., Any]]:
    outbox = OutboxChannel(home / "notifications")
    specs = SpecStore(home)
    registry = MlflowRegistry(home)
    coordinator_notifications = NotificationActivities(outbox)
    loop_notifications = LoopNotificationActivities(specs, [LogNotifier(), OutboxNotifier(outbox)])
    registry_activities = RegistryActivities(registry)
    endpoint = LocalEndpoint()
    drift = DriftActivities(home, specs, registry, endpoint)
    return [
        coordinator_notifications.notify,
        LoopWatchActivities(client).await_loop_result,
        ModelSpecActivities(specs).load,
        DataWindowActivities(home).select,
        GoldenSetActivities(home).verify,
        TrainingActivities(LocalTrainingBackend(home)).train,
        registry_activities.register_candidate,
        registry_activities.champion_version,
        registry_activities.promote_candidate,
        EvaluationActivities(home, registry.load).evaluate,
        AuditActivities(AuditStore(home)).write,
        loop_notifications.notify,
        DeploymentActivities(endpoint).shift_traffic,
        CanaryActivities(home, endpoint.flush_capture).analyse,
        drift.check,
        drift.build_reference_profile,
    ]


async def run_until_signalled(worker: Worker) -> None:
    """Run until SIGINT/SIGTERM, then shut down gracefully (finish in-flight tasks)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with worker:
        log.info("worker polling task queue %r", worker.task_queue)
        await stop.wait()
        log.info("shutting down: finishing in-flight tasks")
