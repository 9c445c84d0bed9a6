"""Every Protocol a backend implements, and the `Backend` bundle that holds one of each.

Adding a backend: docs/adding-a-backend.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from workflows.common.notify import Notification
from workflows.coordinator.triggers import DriftSignal
from workflows.loop.models import (
    ModelVersion,
    PromoteRequest,
    Promotion,
    RegisterRequest,
    RejectRequest,
    TrainingJob,
    TrainingResult,
)
from workflows.rollout.models import (
    CanaryRequest,
    CanaryStatistics,
    EndpointState,
    TrafficChange,
)
from workflows.spec.models import ModelSpec


@dataclass
class CaptureSync:
    """What one capture sync read into the model's capture directory."""

    directory: Path
    sources_read: int = 0
    answers: int = 0
    labels: int = 0
    # Partitions already read completely before: skipped.
    partitions_skipped: int = 0
    problems: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class CaptureSource(Protocol):
    """A cloud endpoint's captured answers and their ground truth (SageMaker Data Capture and
    Model Monitor ground truth on S3, Vertex request-response logging in BigQuery), read into
    the model's capture directory in the capture layout (`activities/local/capture.py`), so the
    drift check, the performance monitor and the canary read them like the local endpoint's.
    """

    name: str

    def sync(
        self,
        spec: ModelSpec,
        start: datetime,
        end: datetime,
        heartbeat: Callable[[str], None],
    ) -> CaptureSync:
        """Read what was captured, and the ground truth received, in [start, end) that the
        directory does not hold yet: partition by partition, never the window at once."""
        ...


class CanarySource(Protocol):
    def analyse(self, request: CanaryRequest, heartbeat: Callable[[str], None]) -> CanaryStatistics:
        """Both variants' numbers since their window started (`request.champion.since`...)."""
        ...


@dataclass(frozen=True)
class Backend:
    name: str
    training: TrainingBackend
    registry: ModelRegistry
    serving: ServingBackend
    canary: CanarySource
    # None for the local backend (its data are plain files under the retrain home).
    store: ObjectStore | None = None
    # Where loop artifacts and audit records go on the store: `s3://bucket/prefix`.
    store_root: str | None = None
    notifications: Sequence[NotificationChannel] = field(default_factory=tuple)
    # Drift the platform measures itself (Vertex Model Monitoring), instead of our checks.
    drift_source: DriftSignalSource | None = None
    # Where a cloud endpoint's capture is read from; None: the local endpoint writes the
    # capture layout itself.
    capture: CaptureSource | None = None


BackendFactory = Callable[[ModelSpec], Backend]


@dataclass(frozen=True)
class MetricSource:
    """How a backend's metrics are named in the checks' details."""

    store: str  # the metrics store: "CloudWatch"
    latency: str  # its latency metric: "ModelLatency"
    requests: str = "requests"  # what the store calls a request: "invocations"
    errors: str = "errors"  # what it counts as a failed request: "5XX"


class EndpointUnavailable(Exception):
    """The endpoint could not be reached or answered 5xx: worth retrying."""


class TrafficRefused(Exception):
    """The endpoint refused the change (4xx): retrying the same change cannot help."""


class ServingBackend(Protocol):
    def set_traffic(self, change: TrafficChange) -> EndpointState:
        """Apply the change (idempotent by change_id) and return what the endpoint reports."""
        ...

    def read_traffic(self, model: str, endpoint_url: str) -> EndpointState: ...

    def flush_capture(self, endpoint_url: str) -> None:
        """Make the endpoint write its buffered capture, so a window read next is complete."""
        ...


class DriftSignalSource(Protocol):
    name: str

    def latest(self, model: str, since: datetime) -> DriftSignal | None:
        """What the platform found since `since`; None when it has no statistics yet."""
        ...


@dataclass(frozen=True)
class StoredObject:
    uri: str  # s3://bucket/key or gs://bucket/key
    size: int
    # The store's content fingerprint: the S3 ETag, the GCS md5 (base64) or crc32c.
    etag: str
    updated: datetime


class ObjectStore(Protocol):
    """A cloud object store (S3, GCS). URIs are full `s3://` / `gs://` URIs."""

    def list(self, prefix_uri: str) -> list[StoredObject]:
        """Every object whose key starts with the prefix, sorted by uri."""
        ...

    def head(self, uri: str) -> StoredObject | None: ...

    def download(self, uri: str, target: Path) -> StoredObject:
        """Write the object to `target` (atomically) and return what was read."""
        ...

    def upload(
        self, source: Path, uri: str, tags: dict[str, str] | None = None
    ) -> StoredObject: ...

    def put_text(self, uri: str, text: str, content_type: str = "application/json") -> str: ...


CHAMPION = "champion"


CHALLENGER = "challenger"


PREVIOUS_CHAMPION = "previous-champion"


class RegistryError(Exception):
    """A request the registry can never satisfy: retrying it would not help."""


class ModelRegistry(Protocol):
    def register(self, request: RegisterRequest) -> ModelVersion:
        """Register the candidate (idempotent by loop id) and point `challenger` at it."""
        ...

    def champion(self, model: str) -> ModelVersion | None: ...

    def promote(self, request: PromoteRequest) -> Promotion:
        """Move `champion` to the version (idempotent); the old one keeps `previous-champion`."""
        ...

    def reject(self, request: RejectRequest) -> ModelVersion:
        """Mark the candidate rejected (idempotent): it is no longer the `challenger`."""
        ...

    def versions(self, model: str) -> list[ModelVersion]: ...

    def load(self, version: ModelVersion) -> Any:
        """The fitted estimator of a registered version."""
        ...


class TrainingBackend(Protocol):
    def train(self, job: TrainingJob, heartbeat: Callable[[str], None]) -> TrainingResult:
        """Train once per `job.request.loop_id`; call `heartbeat` with progress while waiting.

        Raises ApplicationError: non-retryable for the entrypoint's own failures and timeouts,
        retryable when the training process crashed.
        """
        ...


class NotificationChannel(Protocol):
    """Where notifications go: the log, the outbox, a webhook, a cloud topic (SNS, Pub/Sub)."""

    def send(self, notification: Notification) -> str:
        """Deliver (idempotently by `notification.key` where the channel can); return where it
        went. Raise ApplicationError: retryable when trying again later can help."""
        ...
