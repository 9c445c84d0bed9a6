"""The azure backend's bundle, built from a model's spec (the registry's builder)."""

from __future__ import annotations

from pathlib import Path

from activities.azure.blob_store import BlobStore
from activities.azure.canary import AzureMonitorCanary
from activities.azure.capture import BlobCaptureSource
from activities.azure.clients import AzureClients
from activities.azure.endpoint import AzureEndpoint
from activities.azure.notifications import EventGridChannel
from activities.azure.registry import AzureRegistry
from activities.azure.training import AzureTraining
from activities.backends import CloudConnections
from activities.ports import Backend
from workflows.spec.models import ModelSpec


def build_backend(spec: ModelSpec, home: Path, connections: CloudConnections) -> Backend:
    """Azure ML command jobs, model registry and managed online endpoints, Azure Monitor,
    Blob Storage and Event Grid."""
    settings = spec.azure
    assert settings is not None
    clients = AzureClients(
        settings, credential=connections.azure_credential, transport=connections.azure_transport
    )
    capture = (
        BlobCaptureSource(clients, settings, home)
        if settings.capture is not None and settings.capture.enabled
        else None
    )
    return Backend(
        name="azure",
        training=AzureTraining(
            clients,
            settings,
            home,
            poll_seconds=connections.poll_seconds,
            max_poll_seconds=connections.max_poll_seconds,
        ),
        registry=AzureRegistry(clients, settings, home),
        serving=AzureEndpoint(clients, settings),
        canary=AzureMonitorCanary(clients, settings, capture, home),
        store=BlobStore(clients),
        store_root=settings.store_root,
        capture=capture,
        notifications=[EventGridChannel(clients, settings.eventgrid_topic)]
        if settings.eventgrid_topic
        else [],
    )
