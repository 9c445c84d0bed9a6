"""The local backend's bundle (the embedded default; the registry names `build_backend`)."""

from __future__ import annotations

from pathlib import Path

from activities.backends import CloudConnections
from activities.local.canary import CaptureCanary
from activities.local.endpoint import LocalEndpoint
from activities.local.registry import MlflowRegistry
from activities.local.training import LocalTrainingBackend
from activities.ports import Backend
from workflows.spec.models import ModelSpec


def local_backend(home: Path) -> Backend:
    """Real files under the retrain home, scikit-learn in a subprocess, MLflow on SQLite, the
    local endpoint (`retrain serve`) and its capture."""
    endpoint = LocalEndpoint(home)
    return Backend(
        name="local",
        training=LocalTrainingBackend(home),
        registry=MlflowRegistry(home),
        serving=endpoint,
        canary=CaptureCanary(home, endpoint.flush_capture),
    )


def build_backend(spec: ModelSpec, home: Path, connections: CloudConnections) -> Backend:
    return local_backend(home)
