"""The event gateway in-process for tests: the Starlette app behind httpx's ASGI transport (no
sockets), its lifespan run by hand, secrets and realistic payloads."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from temporalio.client import Client

from activities.specs import SpecStore
from starters.api.connection import connect
from starters.gateway import dead_letters, pending
from starters.gateway.app import GatewayConfig, create_app
from starters.gateway.auth import SOURCES, SourceSecrets
from starters.gateway.database import database_path, open_database
from starters.gateway.delivery import DeliveryPolicy
from tests.events.test_aws_events import OBJECT_CREATED
from workflows.spec.models import ModelSpec

TOKEN = "test-token-0123456789"
HMAC_KEY = "test-hmac-key-9876543210"
# Retries and waits short enough for tests; real values come from DeliveryPolicy's defaults.
FAST = DeliveryPolicy(
    attempts=2,
    backoff_seconds=0.01,
    max_backoff_seconds=0.05,
    linger_seconds=0.01,
    poll_seconds=0.2,
    rpc_timeout_seconds=10,
)
ROLE_ARN = "arn:aws:iam::123456789012:role/retrain-sagemaker"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/retrain:1"


def all_secrets() -> dict[str, SourceSecrets]:
    """A token for every source, plus an HMAC key for Alertmanager."""
    found = {source: SourceSecrets(token=TOKEN.encode()) for source in SOURCES}
    found["alertmanager"] = SourceSecrets(token=TOKEN.encode(), hmac_key=HMAC_KEY.encode())
    return found


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def signed(body: bytes, key: str = HMAC_KEY, at: float | None = None) -> dict[str, str]:
    """What a sender signing with `key` adds: the timestamp and the HMAC of `<ts>.<body>`."""
    timestamp = str(int(time.time() if at is None else at))
    digest = hmac.new(key.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {
        "X-Retrain-Timestamp": timestamp,
        "X-Retrain-Signature": f"sha256={digest}",
        "Content-Type": "application/json",
    }


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def temporal_down() -> Callable[[], Awaitable[Client]]:
    address = f"127.0.0.1:{closed_port()}"
    return lambda: connect(address)


def temporal_at(client: Client) -> Callable[[], Awaitable[Client]]:
    async def connected() -> Client:
        return client

    return connected


@dataclass
class Gateway:
    app: Starlette
    http: httpx.AsyncClient
    home: Path

    async def post(
        self,
        source: str,
        payload: Any,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        return await self.http.post(
            f"/v1/events/{source}",
            content=json.dumps(payload).encode(),
            headers=bearer() if headers is None else headers,
            params=params,
        )

    def metric(self, text: str, name: str, **labels: str) -> float:
        """A sample's value from /metrics text (0 when absent)."""
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        prefix = f"{name}{{{wanted}}} " if labels else f"{name} "
        for line in text.splitlines():
            if line.startswith(prefix):
                return float(line.split()[-1])
        return 0.0


@asynccontextmanager
async def gateway(
    home: Path,
    connect_to: Callable[[], Awaitable[Client]],
    task_queue: str = "retraining",
    policy: DeliveryPolicy = FAST,
    secrets: dict[str, SourceSecrets] | None = None,
    max_body_bytes: int = 64 * 1024,
    max_pending: int = 200_000,
    slack_secret: str | None = None,
    slack_http: httpx.AsyncClient | None = None,
) -> AsyncIterator[Gateway]:
    config = GatewayConfig(
        home=home,
        secrets=all_secrets() if secrets is None else secrets,
        max_body_bytes=max_body_bytes,
        task_queue=task_queue,
        delivery=policy,
        health_timeout_seconds=1.0,
        max_pending=max_pending,
        slack_signing_secret=slack_secret,
    )
    app = create_app(config, connect_to, slack_http)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            yield Gateway(app, http, home)


def stored(home: Path) -> tuple[list[pending.PendingEvent], list[dead_letters.DeadLetter]]:
    """What the gateway's database holds, read as another process would."""
    with closing(open_database(database_path(home))) as conn:
        return pending.take(conn, 1_000_000), dead_letters.select(conn)


def register_sagemaker_model(
    home: Path, model: str, labelled: str, endpoint: str = "churn"
) -> ModelSpec:
    bucket = labelled.removeprefix("s3://").split("/", 1)[0]
    spec = ModelSpec.model_validate(
        {
            "name": model,
            "backend": "sagemaker",
            "sagemaker": {
                "region": "us-east-1",
                "role_arn": ROLE_ARN,
                "bucket": bucket,
                "training_image": IMAGE,
                "inference_image": IMAGE,
                "endpoint_name": endpoint,
            },
            "features": [{"name": "tenure"}, {"name": "charges"}],
            "label": "churned",
            "data": {
                "labelled": labelled,
                "baseline_holdout": f"s3://{bucket}/baseline/holdout.parquet",
                "golden_set": f"s3://{bucket}/baseline/golden.parquet",
            },
        }
    )
    SpecStore(home).register(spec)
    return spec


def object_created(bucket: str, key: str, event_id: str) -> dict[str, Any]:
    """An EventBridge S3 "Object Created" event for s3://bucket/key."""
    event = copy.deepcopy(OBJECT_CREATED)
    event["id"] = event_id
    event["detail"]["bucket"]["name"] = bucket
    event["detail"]["object"]["key"] = key
    return event


def alertmanager_payload(
    model: str | None, status: str = "firing", fingerprint: str = "a1b2c3d4e5f60718"
) -> dict[str, Any]:
    labels = {"alertname": "ChurnConversionDrop", "severity": "critical", "team": "ml"}
    if model is not None:
        labels["model"] = model
    return {
        "version": "4",
        "groupKey": '{}:{alertname="ChurnConversionDrop"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "retrain-gateway",
        "groupLabels": {"alertname": "ChurnConversionDrop"},
        "commonLabels": labels,
        "commonAnnotations": {"summary": "conversion below 10% for 15m"},
        "externalURL": "http://alertmanager:9093",
        "alerts": [
            {
                "status": status,
                "labels": labels,
                "annotations": {"summary": "conversion below 10% for 15m"},
                "startsAt": "2026-11-12T10:00:00.000Z",
                "endsAt": "0001-01-01T00:00:00Z"
                if status == "firing"
                else "2026-11-12T11:00:00.000Z",
                "generatorURL": "http://prometheus:9090/graph?g0.expr=conversion_rate",
                "fingerprint": fingerprint,
            }
        ],
    }
