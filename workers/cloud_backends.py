"""Builds the SageMaker and Vertex backends of a model from its spec.

`CloudConnections` holds what is per worker rather than per model: where the clouds' APIs are
reached (unset in production: the SDKs' defaults and `AWS_ENDPOINT_URL*`; tests: moto and the
Vertex fake on loopback) and, for tests only, explicit sessions/credentials. Credentials are
otherwise the SDKs' default chains and never appear in a spec.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from activities.ports import Backend, BackendFactory
from workflows.spec.models import ModelSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CloudConnections:
    aws_endpoint_url: str | None = None
    # A boto3 Session (tests: fixed fake keys); None: boto3's default chain.
    aws_session: Any = None
    vertex_api_endpoint: str | None = None
    gcs_endpoint: str | None = None
    monitoring_endpoint: str | None = None
    # google.auth Credentials (tests: anonymous); None: Application Default Credentials.
    gcp_credentials: Any = None
    # Polling of training jobs (tests poll fast). The interval grows to `max_poll_seconds`,
    # which stays below the train activity's 30 s heartbeat timeout: each poll heartbeats.
    poll_seconds: float = 5.0
    max_poll_seconds: float = 20.0


def sagemaker_factory(home: Path, connections: CloudConnections) -> BackendFactory:
    def build(spec: ModelSpec) -> Backend:
        # Imported on first use: a worker serving only local models never loads boto3.
        from activities.aws.autoscaling import VariantAutoscaling
        from activities.aws.canary import CloudWatchCanary
        from activities.aws.clients import AwsClients
        from activities.aws.endpoint import SageMakerEndpoint
        from activities.aws.notifications import SnsChannel
        from activities.aws.registry import SageMakerRegistry
        from activities.aws.s3_store import S3Store
        from activities.aws.training import SageMakerTraining

        settings = spec.sagemaker
        assert settings is not None
        clients = AwsClients(
            settings.region,
            endpoint_url=connections.aws_endpoint_url,
            session=connections.aws_session,
        )
        registry = SageMakerRegistry(clients, settings, home)
        autoscaling = (
            VariantAutoscaling(clients, settings.autoscaling, log.info)
            if settings.autoscaling is not None
            else None
        )
        notifications = (
            [SnsChannel(clients, settings.sns_topic_arn)] if settings.sns_topic_arn else []
        )
        return Backend(
            name="sagemaker",
            training=SageMakerTraining(
                clients,
                settings,
                home,
                poll_seconds=connections.poll_seconds,
                max_poll_seconds=connections.max_poll_seconds,
            ),
            registry=registry,
            serving=SageMakerEndpoint(clients, settings, autoscaling, registry.package_arn),
            canary=CloudWatchCanary(clients, settings),
            store=S3Store(clients),
            store_root=f"s3://{settings.bucket}/{settings.prefix}",
            notifications=notifications,
        )

    return build


def vertex_factory(home: Path, connections: CloudConnections) -> BackendFactory:
    def build(spec: ModelSpec) -> Backend:
        # Imported on first use: a worker serving only local models never loads the SDK.
        from activities.gcp.canary import CloudMonitoringCanary
        from activities.gcp.clients import GcpClients
        from activities.gcp.endpoint import VertexEndpoint
        from activities.gcp.gcs_store import GcsStore
        from activities.gcp.monitoring import ModelMonitoringSource
        from activities.gcp.registry import VertexRegistry
        from activities.gcp.training import VertexTraining

        settings = spec.vertex
        assert settings is not None
        clients = GcpClients(
            settings.project,
            settings.location,
            credentials=connections.gcp_credentials,
            api_endpoint=connections.vertex_api_endpoint,
            storage_endpoint=connections.gcs_endpoint,
            monitoring_endpoint=connections.monitoring_endpoint,
        )
        clients.init_vertex()
        registry = VertexRegistry(clients, settings, home)
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
            canary=CloudMonitoringCanary(clients, settings),
            store=GcsStore(clients),
            store_root=f"{settings.staging_bucket}/{settings.prefix}",
            drift_source=(
                ModelMonitoringSource(clients, settings) if settings.monitoring_job else None
            ),
        )

    return build


def cloud_factories(home: Path, connections: CloudConnections) -> dict[str, BackendFactory]:
    return {
        "sagemaker": sagemaker_factory(home, connections),
        "vertex": vertex_factory(home, connections),
    }
