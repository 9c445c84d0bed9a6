"""The registry of backends: every place that depends on a backend's name reads it here.

Adding a backend (docs/adding-a-backend.md) is: a folder under `activities/` whose `backend.py`
builds the `Backend` bundle (`activities/ports.py`), a settings model under `workflows/spec/`
with its field on `ModelSpec` named like the backend, one line in `BACKENDS`, and a harness for
the contract suite (`tests/backends/test_backend_contract.py`). Tests check that the three agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from workflows.spec.azure import AzureSettings
from workflows.spec.common import CloudSettings
from workflows.spec.sagemaker import SageMakerSettings
from workflows.spec.vertex import VertexSettings


@dataclass(frozen=True)
class BackendInfo:
    name: str
    # The `ModelSpec` field (named like the backend) holding its settings; None: it has none.
    settings: type[CloudSettings] | None
    # The scheme of the model's data only this backend reads (`s3://`); None: local paths.
    data_scheme: str | None
    # `module:function` that builds the activities' `Backend` bundle; imported by workers only,
    # so the spec (and the workflow sandbox) never loads a cloud SDK.
    builder: str
    # Whether its endpoints can mirror live traffic to a shadow variant.
    shadow_deployments: bool = True


BACKENDS: tuple[BackendInfo, ...] = (
    BackendInfo("local", None, None, "activities.local.backend:build_backend"),
    BackendInfo("sagemaker", SageMakerSettings, "s3://", "activities.aws.backend:build_backend"),
    BackendInfo(
        "vertex",
        VertexSettings,
        "gs://",
        "activities.gcp.backend:build_backend",
        shadow_deployments=False,
    ),
    # Managed online endpoints mirror live traffic to a deployment (`mirror_traffic`).
    BackendInfo("azure", AzureSettings, "az://", "activities.azure.backend:build_backend"),
)

BACKEND_NAMES = tuple(backend.name for backend in BACKENDS)
CLOUD_BACKENDS = tuple(backend for backend in BACKENDS if backend.settings is not None)
# Object-store URIs (`s3://...`): the data a cloud backend mirrors under the retrain home.
REMOTE_SCHEMES = tuple(backend.data_scheme for backend in BACKENDS if backend.data_scheme)


def backend_info(name: str) -> BackendInfo:
    for backend in BACKENDS:
        if backend.name == name:
            return backend
    raise ValueError(f"unknown backend {name!r}: expected one of {', '.join(BACKEND_NAMES)}")
