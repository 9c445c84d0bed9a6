"""Run the local prediction endpoint for real in tests: trained versions, a live server, traffic.

- `train_versions(home, model, count)`: demo data, the registered spec, `count` small real
  sklearn versions in the MLflow registry (the first promoted to champion).
- `register_estimator(home, model, estimator, loop_id)`: register any picklable estimator, e.g.
  `FailingModel()`, whose every prediction raises.
- `running_endpoint(config)`: uvicorn on 127.0.0.1 (a free port) in a background thread; yields
  the base URL; leaving the block shuts it down cleanly (the lifespan flushes the capture).
  Entering it again with the same config restarts the endpoint on the same home.
- `demo_features(n, seed)` / `send_requests(url, n, ...)`: demo-like feature rows and traffic.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import joblib  # type: ignore[import-untyped, unused-ignore]
import numpy as np
import uvicorn

from activities.default_training import train
from activities.local.registry import MlflowRegistry
from activities.loop.data_window import resolve_uri
from activities.specs import SpecStore
from activities.training_runner import sha256_file
from serving.app import create_app
from serving.config import EndpointConfig
from starters.demo.synthetic import CATEGORICAL, FEATURES, generate_rows, write_demo_dataset
from workflows.loop.models import (
    Lineage,
    ModelVersion,
    PromoteRequest,
    RegisterRequest,
    TrainingRequest,
)
from workflows.spec.models import ModelSpec

# Version i (from 1) trains the estimator at index (i - 1) % 2: two models that disagree a bit.
_ESTIMATORS: tuple[dict[str, str | int | float | bool], ...] = (
    {"estimator": "logistic_regression", "C": 1.0},
    {"estimator": "hist_gradient_boosting", "max_iter": 20},
)
_STARTUP_SECONDS = 60.0


class FailingModel:
    """A picklable stand-in estimator whose every prediction raises (a broken version)."""

    classes_ = np.array([0, 1])

    def predict(self, frame: Any) -> Any:
        raise RuntimeError("deliberate failure of a test model")

    def predict_proba(self, frame: Any) -> Any:
        raise RuntimeError("deliberate failure of a test model")


def train_versions(
    home: Path, model: str, count: int = 2, baseline_rows: int = 300
) -> tuple[ModelSpec, list[ModelVersion]]:
    """Demo data for `model` in `home`, its spec registered, and `count` trained versions
    registered (versions "1".."count"); version 1 is the champion."""
    today = datetime.now(UTC).date()
    start = today - timedelta(days=2)
    spec = write_demo_dataset(
        home, model, start, days=2, drift_day=None, rows_per_day=300, baseline_rows=baseline_rows
    )
    SpecStore(home).register(spec)
    labelled = resolve_uri(home, spec.data.labelled)
    registry = MlflowRegistry(home)
    versions: list[ModelVersion] = []
    for number in range(1, count + 1):
        loop_id = f"retrain-{model}-{number}"
        request = TrainingRequest(
            model=model,
            loop_id=loop_id,
            task=spec.task.value,
            train_path=str(labelled / f"date={start.isoformat()}" / "part-0.parquet"),
            validation_path=str(
                labelled / f"date={(start + timedelta(days=1))}" / "part-0.parquet"
            ),
            features=spec.feature_names,
            categorical_features=list(CATEGORICAL),
            label=spec.label,
            hyperparameters=_ESTIMATORS[(number - 1) % len(_ESTIMATORS)],
            output_dir=str(home / "runs" / model / loop_id / "training"),
            seed=number,
        )
        output = train(request)
        artifact = Path(output.artifact_path)
        versions.append(_register(registry, model, loop_id, artifact, output.metrics))
    registry.promote(
        PromoteRequest(model=model, version=versions[0].version, loop_id=f"retrain-{model}-1")
    )
    # Read back: the champion's aliases changed with the promotion.
    current = {v.version: v for v in registry.versions(model)}
    return spec, [current[v.version] for v in versions]


def register_estimator(home: Path, model: str, estimator: Any, loop_id: str) -> ModelVersion:
    """Register any picklable estimator as a new version of `model` (not promoted)."""
    artifact = home / "runs" / model / loop_id / "training" / "model.joblib"
    artifact.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(estimator, artifact)
    return _register(MlflowRegistry(home), model, loop_id, artifact, {})


def _register(
    registry: MlflowRegistry, model: str, loop_id: str, artifact: Path, metrics: dict[str, float]
) -> ModelVersion:
    return registry.register(
        RegisterRequest(
            model=model,
            loop_id=loop_id,
            artifact_path=str(artifact),
            artifact_sha256=sha256_file(artifact),
            lineage=Lineage(
                loop_id=loop_id,
                trigger_origin="test",
                trigger_kinds=["manual"],
                trigger_event_ids=[f"{loop_id}-event"],
                dataset_hashes={},
                training_metrics=metrics,
                spec_hash="0" * 64,
            ),
        )
    )


ADMIN_TOKEN = "test-endpoint-admin-token"
# The endpoint's /admin/* needs the bearer token (tests/conftest.py sets it for the session).
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@contextmanager
def running_endpoint(config: EndpointConfig) -> Iterator[str]:
    """Serve `config` on 127.0.0.1 in a background thread; yields e.g. `http://127.0.0.1:PORT`.

    Raises EndpointError (from create_app) when the endpoint cannot start. Leaving the block
    stops the server and runs the lifespan shutdown (final capture flush) before returning.
    """
    app = create_app(config)
    # Bound here, so the port is known before the server starts and never raced for.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False)
    )
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"endpoint-{port}", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + _STARTUP_SECONDS
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the endpoint stopped during startup (see the log)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the endpoint did not start within {_STARTUP_SECONDS}s")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=_STARTUP_SECONDS)
        sock.close()


def demo_features(n: int, seed: int = 0, day: date | None = None) -> list[dict[str, Any]]:
    """`n` feature rows like the demo's (JSON-ready: ints for integer features)."""
    table = generate_rows(day or date(2026, 1, 1), n, function=0, seed=seed, stream=7)
    return table.select(list(FEATURES)).to_pylist()  # type: ignore[no-any-return]


def send_requests(
    url: str,
    n: int,
    *,
    seed: int = 0,
    concurrency: int = 4,
    request_ids: list[str] | None = None,
    client: httpx.Client | None = None,
) -> list[httpx.Response]:
    """POST `n` demo rows to `url`/invocations from `concurrency` threads; responses in order."""
    rows = demo_features(n, seed)
    ids: list[str | None] = list(request_ids) if request_ids is not None else [None] * n

    def post(http: httpx.Client, index: int) -> httpx.Response:
        body: dict[str, Any] = {"features": rows[index]}
        if ids[index] is not None:
            body["request_id"] = ids[index]
        return http.post(f"{url}/invocations", json=body)

    owned = httpx.Client(timeout=30) if client is None else nullcontext(client)
    with owned as http, ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(lambda i: post(http, i), range(n)))
