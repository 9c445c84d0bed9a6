"""The Vertex/GCS fake on loopback, and `GcpClients` pointed at it, for the Vertex backend's tests.

One fake per test (it starts in milliseconds), so tests never see each other's buckets, jobs or
models. Clients use anonymous credentials and the fake's address for Vertex, Cloud Storage,
Cloud Monitoring, BigQuery and Pub/Sub, so nothing reaches Google.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.auth.credentials import AnonymousCredentials

from activities.gcp.clients import GcpClients
from activities.gcp.training import gcs_mount
from tests.support.vertex_fake import jobs, models, storage
from tests.support.vertex_fake.server import FakeState, RouteFactory, RunningFake, serve

PROJECT = "retrain-tests"
LOCATION = "us-central1"
BUCKET = "retrain-staging"


def route_factories() -> list[RouteFactory]:
    """Every concern's routes; endpoints/monitoring join when their modules exist."""
    factories: list[RouteFactory] = [storage.routes, jobs.routes, models.routes]
    for name in (
        "tests.support.vertex_fake.endpoints",
        "tests.support.vertex_fake.monitoring",
        "tests.support.vertex_fake.bigquery",
        "tests.support.vertex_fake.pubsub",
    ):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:
                raise
            continue
        factories.append(module.routes)
    return factories


def fake_clients(fake: RunningFake) -> GcpClients:
    return GcpClients(
        fake.state.project,
        fake.state.location,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        api_endpoint=fake.url,
        storage_endpoint=fake.url,
        monitoring_endpoint=fake.url,
        bigquery_endpoint=fake.url,
        pubsub_endpoint=fake.url,
    )


@pytest.fixture
def vertex() -> Iterator[RunningFake]:
    state = FakeState(project=PROJECT, location=LOCATION)
    storage.create_bucket(state, BUCKET)
    yield from serve(state, route_factories())


class ContainerEmulator:
    """What Vertex (or the user's pipeline) would run, against the fake's GCS.

    Set as the fake's `run_custom_job` / `run_pipeline_job` hooks: it maps the container's
    `/gcs/<bucket>/<path>` mounts into a temporary directory, copies the inputs there from the
    fake's GCS, runs the real `python -m activities.container_entry` with the job's own
    arguments, and copies the model dir and failure file back, as Cloud Storage FUSE would.
    `gate` holds a job running until it is set (cancellation tests).
    """

    def __init__(self, state: FakeState) -> None:
        self.state = state
        self.runs: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        state.hooks["run_custom_job"] = self.run_custom_job
        state.hooks["run_pipeline_job"] = self.run_pipeline_job

    def run_custom_job(self, job: dict[str, Any]) -> str | None:
        container = job["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]
        assert container["command"] == ["python", "-m", "activities.container_entry"]
        return self._run(job["name"], list(container["args"]))

    def run_pipeline_job(self, job: dict[str, Any]) -> str | None:
        values = job["runtimeConfig"]["parameterValues"]
        arguments = [
            "--job", gcs_mount(values["job_config_path"]),
            "--train", gcs_mount(values["train_path"]),
            "--validation", gcs_mount(values["validation_path"]),
            "--model-dir", gcs_mount(values["model_output_path"]),
            "--failure-file", gcs_mount(values["model_output_path"].rsplit("/", 1)[0] + "/failure"),
            "--backend", "vertex-pipeline",
        ]  # fmt: skip
        return self._run(job["name"], arguments)

    def _run(self, name: str, arguments: list[str]) -> str | None:
        self.gate.wait(timeout=60)
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            mapped = [argument.replace("/gcs/", f"{root}/", 1) for argument in arguments]
            flags = dict(zip(mapped[::2], mapped[1::2], strict=True))
            for flag in ("--job", "--train", "--validation"):
                self._fetch(root, Path(flags[flag]))
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
            done = subprocess.run(
                [sys.executable, "-m", "activities.container_entry", *mapped],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            self.runs.append(name)
            for flag in ("--model-dir", "--failure-file"):
                self._publish(root, Path(flags[flag]))
        if done.returncode != 0:
            # What Vertex says; the entrypoint's own error is in the failure file.
            return "The replica workerpool0-0 exited with a non-zero status of 1."
        return None

    def _fetch(self, root: Path, path: Path) -> None:
        bucket, _, name = str(path.relative_to(root)).partition("/")
        data = storage.get_object(self.state, bucket, name)
        assert data is not None, f"the container found no gs://{bucket}/{name}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def _publish(self, root: Path, path: Path) -> None:
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            bucket, _, name = str(file.relative_to(root)).partition("/")
            storage.put_object(self.state, bucket, name, file.read_bytes())


def fake_connections(fake: RunningFake, **changes: Any) -> Any:
    """The worker's `CloudConnections` to every API of the fake."""
    from activities.backends import CloudConnections

    return CloudConnections(
        **{
            "vertex_api_endpoint": fake.url,
            "gcs_endpoint": fake.url,
            "monitoring_endpoint": fake.url,
            "bigquery_endpoint": fake.url,
            "pubsub_endpoint": fake.url,
            "gcp_credentials": AnonymousCredentials(),  # type: ignore[no-untyped-call]
            "poll_seconds": 0.05,
            **changes,
        }
    )
