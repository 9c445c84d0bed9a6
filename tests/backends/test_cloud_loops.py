"""Whole loops on each cloud backend, end to end on the time-skipping server.

Trigger -> data window (mirrored from the bucket) -> training (a SageMaker training job / a
Vertex CustomJob, whose container a test hook plays) -> registry -> evaluation -> approval ->
5/25/50/100% on the cloud endpoint, each stage analysed from the cloud's metrics -> promotion
-> audit record in the bucket. The clouds are moto's server and the Vertex fake, on loopback.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from botocore.exceptions import ClientError
from google.auth.credentials import AnonymousCredentials
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.aws.canary import publish_quality
from activities.aws.clients import AwsClients
from activities.aws.registry import SageMakerRegistry
from activities.aws.s3_store import S3Store
from activities.backends import CloudConnections
from activities.gcp.canary import publish_quality as publish_vertex_quality
from activities.gcp.clients import GcpClients
from activities.gcp.endpoint import deployed_variants, endpoint_client, find_endpoint
from activities.gcp.gcs_store import GcsStore
from activities.gcp.registry import VertexRegistry
from activities.loop.audit import AuditStore
from activities.specs import SpecStore
from tests.support.aws_harness import FAKE_ACCESS_KEY, FAKE_SECRET_KEY, REGION, Moto
from tests.support.cloud_data import BUCKET, ENDPOINT, upload_dataset
from tests.support.cloud_loops import Traffic, rollout_spec, run_two_loops
from tests.support.loop_harness import write_dataset
from tests.support.sagemaker_container import ContainerEmulator
from tests.support.vertex_fake import monitoring as vertex_monitoring
from tests.support.vertex_fake import storage as vertex_storage
from tests.support.vertex_fake.server import RunningFake
from tests.support.vertex_harness import ContainerEmulator as VertexContainer
from tests.support.vertex_harness import fake_clients
from workers.worker import build_worker
from workflows.common import names
from workflows.loop.models import LoopStatus

pytestmark = [
    pytest.mark.time_skipping_only,
    pytest.mark.own_server,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow.*"),
]


def aws_traffic(clients: AwsClients, spec_settings: Any, seed: int = 0) -> Any:
    """One tick of callers on every live variant: what SageMaker publishes (invocations,
    errors, latency) and a feedback joiner's quality batch, both healthy."""
    rng = np.random.default_rng(seed)

    def tick() -> None:
        try:
            described = clients.sagemaker.describe_endpoint(EndpointName=ENDPOINT)
        except ClientError:
            return  # not created yet
        now = datetime.now(UTC)
        for variant in described["ProductionVariants"]:
            if not variant.get("CurrentWeight"):
                continue
            name = variant["VariantName"]
            dimensions = [
                {"Name": "EndpointName", "Value": ENDPOINT},
                {"Name": "VariantName", "Value": name},
            ]
            latencies = rng.gamma(4.0, 5_000.0, size=20)  # microseconds, ~20 ms
            data: list[dict[str, Any]] = [
                {"MetricName": "Invocations", "Value": 100.0},
                {"MetricName": "Invocation5XXErrors", "Value": 0.0},
                *({"MetricName": "ModelLatency", "Value": float(v)} for v in latencies),
            ]
            clients.cloudwatch.put_metric_data(
                Namespace="AWS/SageMaker",
                MetricData=[{**d, "Dimensions": dimensions, "Timestamp": now} for d in data],
            )
            truth = rng.random(100) < 0.5
            right = rng.random(100) < 0.85
            scores = np.clip(np.where(truth == right, 0.75, 0.25) + rng.normal(0, 0.05, 100), 0, 1)
            p = np.clip(scores, 1e-6, 1 - 1e-6)
            losses = -np.where(truth, np.log(p), np.log1p(-p))
            publish_quality(
                clients,
                spec_settings,
                ENDPOINT,
                name,
                labelled=100,
                correct=int(right.sum()),
                log_losses=[float(x) for x in losses],
                scores=[float(x) for x in scores],
                timestamp=now,
            )

    return tick


async def history_text(client: Client, workflow_id: str) -> str:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return json.dumps(history.to_json_dict())


async def test_a_full_loop_on_sagemaker(
    env: WorkflowEnvironment,
    client: Client,
    task_queue: str,
    home: Path,
    model: str,
    moto: Moto,
    moto_gaps: None,
    tmp_path: Path,
) -> None:
    today: date = (await env.get_current_time()).date()
    session = boto3.Session(
        aws_access_key_id=FAKE_ACCESS_KEY, aws_secret_access_key=FAKE_SECRET_KEY, region_name=REGION
    )
    clients = moto.clients()
    clients.s3.create_bucket(Bucket=BUCKET)
    emulator = ContainerEmulator(s3=clients.s3)
    emulator.attach_session(session, clients.sagemaker)
    source = tmp_path / "source"
    spec = rollout_spec(
        upload_dataset(S3Store(clients), source, write_dataset(source, model, today), "s3")
    )
    SpecStore(home).register(spec)
    assert spec.sagemaker is not None
    connections = CloudConnections(
        aws_endpoint_url=moto.endpoint_url, aws_session=session, poll_seconds=0.05
    )

    with env.auto_time_skipping_disabled(), Traffic(aws_traffic(clients, spec.sagemaker)):
        async with build_worker(client, home=home, task_queue=task_queue, cloud=connections):
            first, second = await run_two_loops(env, client, task_queue, model)

    assert first.status is LoopStatus.PROMOTED, first.summary
    assert second.status is LoopStatus.PROMOTED, second.summary
    # Two training jobs, one per loop, tagged for chargeback; their containers really ran.
    jobs = clients.sagemaker.list_training_jobs()["TrainingJobSummaries"]
    assert len(jobs) == 2 and len(emulator.runs) == 2
    tags = clients.sagemaker.list_tags(ResourceArn=jobs[0]["TrainingJobArn"])["Tags"]
    assert {"model", "loop-id", "trigger"} <= {tag["Key"] for tag in tags}
    # The registry: version 2 approved and champion; the endpoint serves it alone.
    registry = SageMakerRegistry(clients, spec.sagemaker, tmp_path / "reader")
    champion = registry.champion(model)
    assert champion is not None and champion.version == "2"
    described = clients.sagemaker.describe_endpoint(EndpointName=ENDPOINT)
    live = {v["VariantName"]: v["CurrentWeight"] for v in described["ProductionVariants"]}
    assert {name for name, weight in live.items() if weight} == {"v2"}
    # The rollout went through every stage, analysed from CloudWatch.
    record = AuditStore(home).read(model, names.retraining_loop_id(model, 2))
    assert record is not None and record.deployment is not None
    rollout = record.deployment.rollout
    assert rollout is not None
    assert [stage.label for stage in rollout.stages] == ["5%", "25%", "50%", "100%"]
    assert all(stage.verdicts[-1].outcome.value == "pass" for stage in rollout.stages)
    # The drift reference followed the promotion (the champion's training data).
    assert record.deployment.reference_profile is not None
    assert record.deployment.reference_profile.startswith("v2-"), record.deployment
    # The audit record is in the bucket too, and the data window names the bucket's objects.
    audit_key = f"retrain/audit/{model}/{names.retraining_loop_id(model, 2)}.json"
    stored = json.loads(clients.s3.get_object(Bucket=BUCKET, Key=audit_key)["Body"].read())
    assert stored["loop_id"] == names.retraining_loop_id(model, 2)
    assert all(f["uri"].startswith(f"s3://{BUCKET}/") for f in stored["data_window"]["files"])
    # No credential ever reached workflow history.
    for workflow_id in (
        names.retraining_loop_id(model, 1),
        names.retraining_loop_id(model, 2),
        names.rollout_id(model, 2),
    ):
        text = await history_text(client, workflow_id)
        assert FAKE_SECRET_KEY not in text and FAKE_ACCESS_KEY not in text


def vertex_traffic(fake: RunningFake, clients: GcpClients, settings: Any, seed: int = 1) -> Any:
    """One tick of callers on every live deployed model: Vertex's own prediction metrics and a
    feedback joiner's quality batch, both healthy."""
    rng = np.random.default_rng(seed)
    endpoints = endpoint_client(clients)

    def tick() -> None:
        endpoint = find_endpoint(endpoints, settings)
        if endpoint is None:
            return
        now = datetime.now(UTC)
        split = dict(endpoint.traffic_split)
        for variant, deployed_id in deployed_variants(endpoint).items():
            if not split.get(deployed_id):
                continue
            vertex_monitoring.seed_prediction_metrics(
                fake.state,
                endpoint.name.rsplit("/", 1)[-1],
                deployed_id,
                now,
                requests=100,
                errors=0,
                latencies_ms=list(rng.gamma(4.0, 5.0, size=100)),
            )
            truth = rng.random(100) < 0.5
            right = rng.random(100) < 0.85
            scores = np.clip(np.where(truth == right, 0.75, 0.25) + rng.normal(0, 0.05, 100), 0, 1)
            p = np.clip(scores, 1e-6, 1 - 1e-6)
            losses = -np.where(truth, np.log(p), np.log1p(-p))
            publish_vertex_quality(
                clients,
                settings,
                ENDPOINT,
                variant,
                labelled=100,
                correct=int(right.sum()),
                log_losses=[float(x) for x in losses],
                scores=[float(x) for x in scores],
                when=now,
            )

    return tick


async def test_a_full_loop_on_vertex(
    env: WorkflowEnvironment,
    client: Client,
    task_queue: str,
    home: Path,
    model: str,
    vertex: RunningFake,
    tmp_path: Path,
) -> None:
    today: date = (await env.get_current_time()).date()
    vertex_storage.create_bucket(vertex.state, BUCKET)
    clients = fake_clients(vertex)
    emulator = VertexContainer(vertex.state)
    source = tmp_path / "source"
    local = write_dataset(source, model, today)
    spec = rollout_spec(upload_dataset(GcsStore(clients), source, local, "gs"))
    SpecStore(home).register(spec)
    assert spec.vertex is not None
    connections = CloudConnections(
        vertex_api_endpoint=vertex.url,
        gcs_endpoint=vertex.url,
        monitoring_endpoint=vertex.url,
        gcp_credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        poll_seconds=0.05,
    )

    with env.auto_time_skipping_disabled(), Traffic(vertex_traffic(vertex, clients, spec.vertex)):
        async with build_worker(client, home=home, task_queue=task_queue, cloud=connections):
            first, second = await run_two_loops(env, client, task_queue, model)

    assert first.status is LoopStatus.PROMOTED, first.summary
    assert second.status is LoopStatus.PROMOTED, second.summary
    assert len(emulator.runs) == 2
    registry = VertexRegistry(clients, spec.vertex, tmp_path / "reader")
    champion = registry.champion(model)
    assert champion is not None and champion.version == "2"
    assert "champion" in champion.aliases
    endpoint = find_endpoint(endpoint_client(clients), spec.vertex)
    assert endpoint is not None
    variants = deployed_variants(endpoint)
    live = {deployed: weight for deployed, weight in endpoint.traffic_split.items() if weight}
    assert live == {variants["v2"]: 100}
    record = AuditStore(home).read(model, names.retraining_loop_id(model, 2))
    assert record is not None and record.deployment is not None
    rollout = record.deployment.rollout
    assert rollout is not None
    assert [stage.label for stage in rollout.stages] == ["5%", "25%", "50%", "100%"]
    assert record.deployment.reference_profile is not None
    assert record.deployment.reference_profile.startswith("v2-"), record.deployment
    stored = GcsStore(clients).head(
        f"gs://{BUCKET}/retrain/audit/{model}/{names.retraining_loop_id(model, 2)}.json"
    )
    assert stored is not None
