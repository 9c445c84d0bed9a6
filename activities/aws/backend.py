"""The sagemaker backend's bundle, built from a model's spec (the registry's builder)."""

from __future__ import annotations

import logging
from pathlib import Path

from activities.aws.autoscaling import VariantAutoscaling
from activities.aws.canary import CloudWatchCanary
from activities.aws.capture import S3CaptureSource
from activities.aws.clients import AwsClients
from activities.aws.endpoint import SageMakerEndpoint
from activities.aws.notifications import SnsChannel
from activities.aws.registry import SageMakerRegistry
from activities.aws.s3_store import S3Store
from activities.aws.training import SageMakerTraining
from activities.backends import CloudConnections
from activities.ports import Backend
from activities.scaling import ScalingLog
from workflows.spec.models import ModelSpec

log = logging.getLogger(__name__)


def build_backend(spec: ModelSpec, home: Path, connections: CloudConnections) -> Backend:
    """SageMaker training jobs, Model Registry, endpoint variants, CloudWatch, S3, SNS."""
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
    notifications = [SnsChannel(clients, settings.sns_topic_arn)] if settings.sns_topic_arn else []
    capture = S3CaptureSource(clients, settings, home) if settings.capture else None
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
        serving=SageMakerEndpoint(
            clients, settings, autoscaling, registry.package_arn, ScalingLog(home)
        ),
        canary=CloudWatchCanary(clients, settings, capture, home),
        store=S3Store(clients),
        store_root=f"s3://{settings.bucket}/{settings.prefix}",
        notifications=notifications,
        capture=capture,
    )
