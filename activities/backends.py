"""Backends chosen per model by its spec's `backend`, from the registry of backends.

A `Backend` (activities/ports.py) bundles one implementation of each concern. `BackendResolver`
builds each model's bundle from its registered spec with the builder the registry names
(workflows/spec/backends.py), once per distinct settings, and the `Routed*` classes below
implement the same Protocols by looking up the model named in each call, so the activity classes
and workflows never know which cloud a model runs on.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from temporalio.exceptions import ApplicationError

from activities.ports import (
    Backend,
    BackendFactory,
    CaptureSync,
    ModelRegistry,
)
from activities.specs import SpecError, SpecStore
from workflows.common.errors import ErrorType
from workflows.loop.models import (
    ModelVersion,
    PromoteRequest,
    Promotion,
    RegisterRequest,
    RejectRequest,
    TrainingJob,
    TrainingResult,
)
from workflows.rollout.models import CanaryRequest, CanaryStatistics, EndpointState, TrafficChange
from workflows.spec.backends import CLOUD_BACKENDS, backend_info
from workflows.spec.models import ModelSpec


@dataclass(frozen=True)
class CloudConnections:
    """What is per worker rather than per model: where the clouds' APIs are reached (unset in
    production: the SDKs' defaults and `AWS_ENDPOINT_URL*`; tests: moto and the fakes on
    loopback) and, for tests only, explicit sessions/credentials. Credentials are otherwise the
    SDKs' default chains and never appear in a spec."""

    aws_endpoint_url: str | None = None
    # A boto3 Session (tests: fixed fake keys); None: boto3's default chain.
    aws_session: Any = None
    vertex_api_endpoint: str | None = None
    gcs_endpoint: str | None = None
    monitoring_endpoint: str | None = None
    bigquery_endpoint: str | None = None
    pubsub_endpoint: str | None = None
    # google.auth Credentials (tests: anonymous); None: Application Default Credentials.
    gcp_credentials: Any = None
    # An azure-core TokenCredential (tests: a static token); None: DefaultAzureCredential.
    azure_credential: Any = None
    # What makes an azure-core transport for each Azure client (tests: one that reaches the
    # local fake whatever Azure host a URL names); None: the SDKs' default transport.
    azure_transport: Callable[[], Any] | None = None
    # Polling of training jobs (tests poll fast). The interval grows to `max_poll_seconds`,
    # which stays below the train activity's 30 s heartbeat timeout: each poll heartbeats.
    poll_seconds: float = 5.0
    max_poll_seconds: float = 20.0


# What builds a backend's bundle (`activities/<backend>/backend.py`, named by the registry).
BackendBuilder = Callable[[ModelSpec, Path, CloudConnections], Backend]


def extra_of(backend: str) -> str:
    """The package extra that brings a backend's SDK: named like its folder under activities/
    (`activities.aws.backend` -> `aws`)."""
    return backend_info(backend).builder.split(":", 1)[0].split(".")[1]


def builder_of(backend: str) -> BackendBuilder:
    """The registry's builder of a backend, imported now (its cloud SDK with it). A worker
    installed without the backend's extra refuses its models for good, saying which extra."""
    module, _, name = backend_info(backend).builder.partition(":")
    try:
        imported = importlib.import_module(module)
    except ModuleNotFoundError as err:
        extra = extra_of(backend)
        raise ApplicationError(
            f"the {backend} backend is not installed on this worker ({err}): install "
            f"adaptive-retraining[{extra}], or build the image with the {extra} extra",
            type=ErrorType.BACKEND_NOT_INSTALLED,
            non_retryable=True,
        ) from None
    builder: BackendBuilder = getattr(imported, name)
    return builder


def missing_backend(backend: str) -> str | None:
    """Why this process could not serve `backend` (its extra missing), or None."""
    if backend_info(backend).settings is None:
        return None
    try:
        builder_of(backend)
    except ApplicationError as err:
        return str(err.message)
    return None


def registry_factories(home: Path, connections: CloudConnections) -> dict[str, BackendFactory]:
    """A factory per cloud backend of the registry; its module is imported on first use, so a
    worker serving only local models never loads a cloud SDK."""

    def factory(backend: str) -> BackendFactory:
        return lambda spec: builder_of(backend)(spec, home, connections)

    return {backend.name: factory(backend.name) for backend in CLOUD_BACKENDS}


class UnknownBackend(ValueError):
    pass


class BackendResolver:
    """Each model's `Backend`, from its registered spec.

    `local` serves models whose backend has no settings (and models with no spec); `factories`
    maps a cloud backend's name to what builds it from a spec (`registry_factories`). One bundle
    is built per distinct settings and reused, so clients (and their connection pools) are
    shared by every model with the same settings.
    """

    def __init__(
        self, specs: SpecStore, local: Backend, factories: dict[str, BackendFactory]
    ) -> None:
        self.specs = specs
        self.local = local
        self.factories = factories
        self._built: dict[str, Backend] = {}
        self._lock = threading.Lock()

    def for_spec(self, spec: ModelSpec) -> Backend:
        settings = spec.backend_settings
        if settings is None:
            return self.local
        key = f"{spec.backend}:{settings.model_dump_json()}"
        with self._lock:
            if key not in self._built:
                factory = self.factories.get(spec.backend)
                if factory is None:
                    raise UnknownBackend(f"this worker has no {spec.backend} backend configured")
                self._built[key] = factory(spec)
            return self._built[key]

    def for_model(self, model: str) -> Backend:
        """The model's backend; the local one for a model with no registered spec (what every
        model used before there was a choice)."""
        try:
            spec = self.specs.get(model)
        except SpecError as error:
            # The same refusal as the loop's own spec load: fixing the file is what helps.
            raise ApplicationError(
                str(error), type=ErrorType.INVALID_MODEL_SPEC, non_retryable=True
            ) from None
        return self.local if spec is None else self.for_spec(spec)


class RoutedTraining:
    def __init__(self, resolver: BackendResolver) -> None:
        self.resolver = resolver

    def train(self, job: TrainingJob, heartbeat: Callable[[str], None]) -> TrainingResult:
        return self.resolver.for_model(job.request.model).training.train(job, heartbeat)


class RoutedRegistry:
    def __init__(self, resolver: BackendResolver) -> None:
        self.resolver = resolver

    def _of(self, model: str) -> ModelRegistry:
        return self.resolver.for_model(model).registry

    def register(self, request: RegisterRequest) -> ModelVersion:
        return self._of(request.model).register(request)

    def champion(self, model: str) -> ModelVersion | None:
        return self._of(model).champion(model)

    def promote(self, request: PromoteRequest) -> Promotion:
        return self._of(request.model).promote(request)

    def reject(self, request: RejectRequest) -> ModelVersion:
        return self._of(request.model).reject(request)

    def versions(self, model: str) -> list[ModelVersion]:
        return self._of(model).versions(model)

    def load(self, version: ModelVersion) -> Any:
        return self._of(version.model).load(version)


class RoutedServing:
    def __init__(self, resolver: BackendResolver) -> None:
        self.resolver = resolver

    def set_traffic(self, change: TrafficChange) -> EndpointState:
        return self.resolver.for_model(change.model).serving.set_traffic(change)

    def read_traffic(self, model: str, endpoint_url: str) -> EndpointState:
        return self.resolver.for_model(model).serving.read_traffic(model, endpoint_url)

    def flush_capture(self, endpoint_url: str) -> None:
        # Only the local endpoint buffers capture; a cloud endpoint's capture is its own.
        self.resolver.local.serving.flush_capture(endpoint_url)


class RoutedCanary:
    def __init__(self, resolver: BackendResolver) -> None:
        self.resolver = resolver

    def analyse(self, request: CanaryRequest, heartbeat: Callable[[str], None]) -> CanaryStatistics:
        return self.resolver.for_model(request.model).canary.analyse(request, heartbeat)


class RoutedCapture:
    """Each model's cloud capture brought into its capture directory before a reader runs (the
    drift check, the performance monitor, the canary); a local model's endpoint writes the
    layout itself, so there is nothing to bring."""

    def __init__(self, resolver: BackendResolver) -> None:
        self.resolver = resolver

    def sync(
        self, spec: ModelSpec, start: datetime, end: datetime, heartbeat: Callable[[str], None]
    ) -> CaptureSync | None:
        source = self.resolver.for_spec(spec).capture
        return None if source is None else source.sync(spec, start, end, heartbeat)


def run_prefix(backend: Backend, model: str, loop_id: str) -> str:
    """Where one loop's data, training inputs and outputs go on the backend's store."""
    assert backend.store_root is not None
    return f"{backend.store_root}/runs/{model}/{loop_id}"
