"""The registry against a team's own MLflow tracking server: `MLFLOW_TRACKING_URI` is honoured,
the embedded SQLite store stays the default.

A real `mlflow server` (from the dev extra) on loopback, with its backend store in a SQLite
file and artifacts proxied by the server (`--artifacts-destination`), as the compose service
runs it on Postgres.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import joblib  # type: ignore[import-untyped, unused-ignore]
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped, unused-ignore]

from activities.local.registry import MlflowRegistry
from activities.ports import CHALLENGER, CHAMPION
from tests.loop.test_registry import register_request
from workflows.loop.models import PromoteRequest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow.*"),
]
MLFLOW = Path(sys.executable).parent / "mlflow"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not MLFLOW.exists():
        pytest.skip("the mlflow server is not installed (dev extra)")
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    process = subprocess.Popen(
        [
            str(MLFLOW),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{root / 'server.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail("mlflow server did not start")
        time.sleep(0.5)
    yield url
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    features = np.random.default_rng(2).normal(size=(100, 3))
    path = tmp_path / "model.joblib"
    joblib.dump(LogisticRegression().fit(features, features[:, 0] > 0), path)
    return path


def test_the_tracking_server_named_by_the_environment_is_used(
    server: str, artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    home = tmp_path / "home"
    registry = MlflowRegistry(home)
    assert (registry.uri, registry.registry_uri, registry.artifact_root) == (server, server, None)

    request = register_request("churn-remote", "retrain-churn-remote-1", artifact)
    version = registry.register(request)
    assert registry.register(request) == version  # idempotent through the server as well
    assert (version.version, version.aliases) == ("1", [CHALLENGER])
    registry.promote(
        PromoteRequest(model="churn-remote", version="1", loop_id="retrain-churn-remote-1")
    )
    champion = registry.champion("churn-remote")
    assert champion is not None and champion.aliases == [CHAMPION]
    # The artifacts went to the server (proxied), and come back from it.
    estimator = registry.load(champion)
    assert estimator.predict(np.zeros((1, 3))).shape == (1,)
    assert not (home / "mlflow.db").exists() and not (home / "mlartifacts").exists()
    # The server itself knows the version: the REST API answers with it.
    answer = httpx.get(
        f"{server}/api/2.0/mlflow/registered-models/get-latest-versions",
        params={"name": "churn-remote"},
        timeout=10,
    ).json()
    assert [v["version"] for v in answer["model_versions"]] == ["1"]


def test_the_embedded_store_stays_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    registry = MlflowRegistry(tmp_path)
    assert registry.uri == registry.registry_uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert registry.artifact_root == tmp_path.resolve() / "mlartifacts"
    # A separate registry server is honoured on its own.
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", "http://registry.invalid:5000")
    split = MlflowRegistry(tmp_path)
    assert (
        split.uri.startswith("sqlite:///") and split.registry_uri == "http://registry.invalid:5000"
    )
