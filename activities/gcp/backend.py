"""The vertex backend's bundle, built from a model's spec (the registry's builder)."""

from __future__ import annotations

from pathlib import Path

from activities.backends import CloudConnections
from activities.gcp.canary import CloudMonitoringCanary
from activities.gcp.capture import BigQueryCaptureSource
from activities.gcp.clients import GcpClients
from activities.gcp.endpoint import VertexEndpoint
from activities.gcp.gcs_store import GcsStore
from activities.gcp.monitoring import ModelMonitoringSource
from activities.gcp.notifications import PubSubChannel
from activities.gcp.registry import VertexRegistry
from activities.gcp.training import VertexTraining
from activities.ports import Backend
from workflows.spec.models import ModelSpec


def build_backend(spec: ModelSpec, home: Path, connections: CloudConnections) -> Backend:
    """Vertex CustomJob/PipelineJob, Model Registry, endpoint traffic split, Monitoring, GCS."""
    settings = spec.vertex
    assert settings is not None
    clients = GcpClients(
        settings.project,
        settings.location,
        credentials=connections.gcp_credentials,
        api_endpoint=connections.vertex_api_endpoint,
        storage_endpoint=connections.gcs_endpoint,
        monitoring_endpoint=connections.monitoring_endpoint,
        bigquery_endpoint=connections.bigquery_endpoint,
        pubsub_endpoint=connections.pubsub_endpoint,
    )
    registry = VertexRegistry(clients, settings, home)
    capture = BigQueryCaptureSource(clients, settings, home) if settings.capture else None
    return Backend(
        name="vertex",
        training=VertexTraining(
            clients,
            settings,
            home,
            poll_seconds=connections.poll_seconds,
            max_poll_seconds=connections.max_poll_seconds,
        ),
        registry=registry,
        serving=VertexEndpoint(clients, settings, registry.resource_name),
        canary=CloudMonitoringCanary(clients, settings, capture, home),
        store=GcsStore(clients),
        store_root=f"{settings.staging_bucket}/{settings.prefix}",
        drift_source=(
            ModelMonitoringSource(clients, settings) if settings.monitoring_job else None
        ),
        capture=capture,
        notifications=[PubSubChannel(clients, settings.pubsub_topic)]
        if settings.pubsub_topic
        else [],
    )
