"""A burst of events through the gateway vs the same events sent straight from Python.

    .venv/bin/python -m bench.gateway_burst [--events 10000] [--models 10] [--rounds 3]

One embedded dev server and one in-process worker running the real ModelCoordinator (a batch
size above the events per model, so no loop starts: the coordinators' side is the same in both
paths). Per round, on fresh models:

1. direct: `Coordinators.send_triggers` per model (batched `trigger_batch` signals, what a
   pipeline holding the events would do), all models at once;
2. gateway: each event POSTed on its own (EventBridge S3 "Object Created", bearer token) by 50
   concurrent senders into the gateway app in process (httpx over ASGI: no sockets), which
   commits each request to SQLite before its 202 and delivers in batched signals.

The clock runs until the coordinators' `status` counts every event. The machine is shared and
noisy, so what matters is the per-round ratio gateway/direct, measured side by side; the
gateway's acknowledgement time (every 202 received) is printed too. The senders' HTTP client
runs in the gateway's process and event loop, so its cost (about as much as the gateway's own
request handling, by cProfile) is in the gateway's figure: a deployed gateway does better.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.specs import SpecStore
from starters.api.coordinators import Coordinators
from starters.gateway.app import GatewayConfig, create_app
from starters.gateway.auth import SourceSecrets
from workers.search_attributes import dev_server_flags
from workers.worker import build_worker
from workflows.coordinator.policy import TriggerPolicy
from workflows.coordinator.triggers import DataArrival, TriggerEvent, TriggerKind
from workflows.coordinator.workflow import ModelCoordinator
from workflows.spec.models import ModelSpec

TOKEN = "bench-token"
BUCKET = "bench-data"
SENDERS = 50


def _spec(model: str) -> ModelSpec:
    return ModelSpec.model_validate(
        {
            "name": model,
            "features": [{"name": "x"}],
            "label": "y",
            "data": {
                "labelled": f"s3://{BUCKET}/{model}",
                "baseline_holdout": f"s3://{BUCKET}/baseline/holdout.parquet",
                "golden_set": f"s3://{BUCKET}/baseline/golden.parquet",
            },
            "backend": "sagemaker",
            "sagemaker": {
                "region": "us-east-1",
                "role_arn": "arn:aws:iam::123456789012:role/bench",
                "bucket": BUCKET,
                "training_image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/bench:1",
                "inference_image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/bench:1",
                "endpoint_name": f"{model}-endpoint",
            },
        }
    )


def _object_created(model: str, i: int) -> dict[str, Any]:
    """An EventBridge S3 "Object Created" event, as S3 sends it."""
    return {
        "version": "0",
        "id": f"{model}-{i}",
        "detail-type": "Object Created",
        "source": "aws.s3",
        "account": "123456789012",
        "time": "2026-11-22T10:00:00Z",
        "region": "us-east-1",
        "resources": [f"arn:aws:s3:::{BUCKET}"],
        "detail": {
            "version": "0",
            "bucket": {"name": BUCKET},
            "object": {"key": f"{model}/part-{i:05d}.parquet", "size": 1024, "etag": "e"},
            "request-id": "r",
            "requester": "123456789012",
            "reason": "PutObject",
        },
    }


def _trigger(model: str, i: int) -> TriggerEvent:
    return TriggerEvent(
        kind=TriggerKind.DATA_ARRIVED,
        source="bench",
        event_id=f"{model}-{i}",
        occurred_at=datetime(2026, 11, 22, 10, tzinfo=UTC),
        data=DataArrival(uri=f"s3://{BUCKET}/{model}/part-{i:05d}.parquet", size_bytes=1024),
    )


async def _received(coordinators: Coordinators, models: Sequence[str]) -> int:
    statuses = await asyncio.gather(*(coordinators.status(m) for m in models))
    return sum(s.events_received for s in statuses)


async def _until_received(coordinators: Coordinators, models: Sequence[str], total: int) -> None:
    while await _received(coordinators, models) < total:
        await asyncio.sleep(0.05)


async def _start(coordinators: Coordinators, models: Sequence[str], per_model: int) -> None:
    # Batches never fill: no loop starts, the coordinators only decide and record.
    policy = TriggerPolicy(
        batch_size=per_model + 1, batch_window=timedelta(hours=1), max_wait=timedelta(hours=2)
    )
    await asyncio.gather(*(coordinators.start(m, policy) for m in models))


async def direct_round(coordinators: Coordinators, models: Sequence[str], per_model: int) -> float:
    await _start(coordinators, models, per_model)
    events = {m: [_trigger(m, i) for i in range(per_model)] for m in models}
    began = time.perf_counter()
    await asyncio.gather(*(coordinators.send_triggers(m, events[m]) for m in models))
    await _until_received(coordinators, models, per_model * len(models))
    return time.perf_counter() - began


async def gateway_round(
    client: Client, home: Path, task_queue: str, models: Sequence[str], per_model: int
) -> tuple[float, float]:
    coordinators = Coordinators(client, task_queue, models=None)
    await _start(coordinators, models, per_model)
    for model in models:
        SpecStore(home).register(_spec(model))
    requests = [_object_created(m, i) for i in range(per_model) for m in models]
    config = GatewayConfig(
        home=home,
        secrets={"eventbridge": SourceSecrets(token=TOKEN.encode())},
        task_queue=task_queue,
    )

    async def connected() -> Client:
        return client

    app = create_app(config, connected)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:

            async def sender(chunk: list[dict[str, Any]]) -> None:
                for event in chunk:
                    answer = await http.post("/v1/events/eventbridge", json=event, headers=headers)
                    if answer.status_code != 202:
                        raise RuntimeError(f"gateway answered {answer.status_code}: {answer.text}")

            began = time.perf_counter()
            await asyncio.gather(*(sender(requests[i::SENDERS]) for i in range(SENDERS)))
            acknowledged = time.perf_counter() - began
            await _until_received(coordinators, models, len(requests))
            return time.perf_counter() - began, acknowledged


@contextlib.contextmanager
def _quiet_gateway_logs() -> Iterator[None]:
    import logging

    logger = logging.getLogger("starters.gateway")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


async def run(args: argparse.Namespace, console: Console) -> list[dict[str, float]]:
    per_model = args.events // args.models
    binary = str(Path(sys.executable).parent / "temporal")
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=binary,
        data_converter=pydantic_data_converter,
        dev_server_extra_args=dev_server_flags(),
    )
    rounds: list[dict[str, float]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp, _quiet_gateway_logs():
            task_queue = f"bench-{uuid.uuid4().hex[:8]}"
            worker = build_worker(
                env.client, home=Path(tmp), task_queue=task_queue, workflows=[ModelCoordinator]
            )
            async with worker:
                coordinators = Coordinators(env.client, task_queue, models=None)
                for number in range(1, args.rounds + 1):
                    tag = uuid.uuid4().hex[:6]
                    direct = await direct_round(
                        coordinators, [f"d{tag}-{i}" for i in range(args.models)], per_model
                    )
                    home = Path(tmp) / f"gateway-{number}"
                    gateway, acknowledged = await gateway_round(
                        env.client,
                        home,
                        task_queue,
                        [f"g{tag}-{i}" for i in range(args.models)],
                        per_model,
                    )
                    rounds.append(
                        {"direct": direct, "gateway": gateway, "acknowledged": acknowledged}
                    )
                    console.print(
                        f"round {number}: direct {direct:.2f} s, gateway {gateway:.2f} s "
                        f"(all 202s after {acknowledged:.2f} s), ratio {gateway / direct:.2f}"
                    )
    finally:
        await env.shutdown()
    return rounds


def report(console: Console, rounds: list[dict[str, float]], events: int) -> None:
    table = Table(title=f"{events:,} data_arrived events into coordinators (median of rounds)")
    for column in ("path", "seconds", "events/s", "ratio to direct"):
        table.add_column(column, justify="right" if column != "path" else "left")
    direct = statistics.median(r["direct"] for r in rounds)
    ratios = [r["gateway"] / r["direct"] for r in rounds]
    for path, key in (
        ("direct (send_triggers)", "direct"),
        ("gateway (HTTP, 1 event/request)", "gateway"),
        ("gateway, all acknowledged", "acknowledged"),
    ):
        seconds = statistics.median(r[key] for r in rounds)
        ratio = "1.00" if key == "direct" else f"{seconds / direct:.2f}"
        table.add_row(path, f"{seconds:.2f}", f"{events / seconds:,.0f}", ratio)
    console.print(table)
    console.print("per-round gateway/direct ratios: " + ", ".join(f"{r:.2f}" for r in ratios))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if args.events < args.models or args.models < 1 or args.rounds < 1:
        parser.error("need at least one round, one model and one event per model")
    console = Console()
    rounds = asyncio.run(run(args, console))
    report(console, rounds, (args.events // args.models) * args.models)


if __name__ == "__main__":
    main()
