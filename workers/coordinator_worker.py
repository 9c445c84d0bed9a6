"""The worker that runs coordinators (and, as they land, loops, rollouts and monitors)."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from activities.loop_watch import LoopWatchActivities
from activities.notifications import NotificationActivities, OutboxChannel
from workers.sandbox import workflow_runner
from workflows.coordinator import ModelCoordinator
from workflows.names import TASK_QUEUE

log = logging.getLogger(__name__)


def build_worker(
    client: Client,
    *,
    home: Path,
    task_queue: str = TASK_QUEUE,
    extra_workflows: Sequence[type] = (),
    activity_executor: ThreadPoolExecutor | None = None,
    **worker_options: Any,
) -> Worker:
    notifications = NotificationActivities(OutboxChannel(home / "notifications"))
    loop_watch = LoopWatchActivities(client)
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[ModelCoordinator, *extra_workflows],
        activities=[notifications.notify, loop_watch.await_loop_result],
        activity_executor=activity_executor or ThreadPoolExecutor(max_workers=8),
        workflow_runner=workflow_runner(),
        **worker_options,
    )


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
