"""Whole lives of a model on each cloud backend, end to end on the time-skipping server.

Through the model's coordinator: a manual trigger -> data window (mirrored from the bucket) ->
training (a SageMaker training job / a Vertex CustomJob / an Azure ML command job, whose
container a test hook plays) -> registry -> evaluation -> approval -> 100% on the cloud
endpoint; then a feature drift in the endpoint's traffic, found by the drift monitor in the
cloud's own capture (SageMaker Data Capture on S3, Vertex request-response logging in BigQuery,
Azure ML's data collector on Blob Storage) -> a retraining -> 5/25/50/100%, each stage decided
by the canary from the captured answers joined with their ground truth plus the cloud's
metrics -> promotion; then a bad candidate rolled back by the same canary. The clouds are
moto's server, the Vertex fake and the Azure fake, on loopback. The test plays only the callers
and the labellers (tests/support/cloud_traffic.py): no test code joins feedback or publishes
quality.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import boto3
import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.aws.registry import SageMakerRegistry
from activities.aws.s3_store import S3Store
from activities.backends import CloudConnections
from activities.gcp.endpoint import deployed_variants, find_endpoint
from activities.gcp.gcs_store import GcsStore
from activities.gcp.registry import VertexRegistry
from activities.loop.audit import AuditStore
from activities.specs import SpecStore
from tests.support.aws_harness import FAKE_ACCESS_KEY, FAKE_SECRET_KEY, REGION, Moto
from tests.support.cloud_data import BUCKET, ENDPOINT, upload_dataset
from tests.support.cloud_loops import Callers, Traffic, drift_story, story_spec
from tests.support.cloud_traffic import SageMakerTraffic, VertexTraffic
from tests.support.loop_harness import write_dataset
from tests.support.sagemaker_container import ContainerEmulator
from tests.support.vertex_fake import storage as vertex_storage
from tests.support.vertex_fake.server import RunningFake
from tests.support.vertex_harness import ContainerEmulator as VertexContainer
from tests.support.vertex_harness import fake_clients, fake_connections
from workers.worker import build_worker
from workflows.common import names
from workflows.drift.models import ReportStatus
from workflows.loop.models import LoopResult, LoopStatus
from workflows.rollout.models import Outcome

pytestmark = [
    pytest.mark.time_skipping_only,
    pytest.mark.own_server,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow.*"),
]


async def history_text(client: Client, workflow_id: str) -> str:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return json.dumps(history.to_json_dict())


def verdicts(home: Path, model: str, number: int) -> str:
    """Every stage's verdicts of loop `number`, for a failure's message."""
    record = AuditStore(home).read(model, names.retraining_loop_id(model, number))
    if record is None or record.deployment is None or record.deployment.rollout is None:
        return "no rollout"
    return "\n".join(
        f"{stage.label}: {verdict.summary}"
        for stage in record.deployment.rollout.stages
        for verdict in stage.verdicts
    )


def assert_the_story(
    home: Path, model: str, results: tuple[LoopResult, LoopResult, LoopResult], drifted: list[str]
) -> None:
    first, second, third = results
    assert first.status is LoopStatus.PROMOTED, first.summary
    assert "age" in drifted
    assert second.status is LoopStatus.PROMOTED, verdicts(home, model, 2)
    assert third.status is LoopStatus.ROLLED_BACK, verdicts(home, model, 3)
    audit = AuditStore(home)
    record = audit.read(model, names.retraining_loop_id(model, 2))
    assert record is not None and record.deployment is not None
    assert [kind.value for kind in record.trigger.kinds] == ["drift"]
    rollout = record.deployment.rollout
    assert rollout is not None
    assert [stage.label for stage in rollout.stages] == ["5%", "25%", "50%", "100%"]
    for stage in rollout.stages:
        verdict = stage.verdicts[-1]
        assert verdict.outcome is Outcome.PASS
        # Quality came from the capture and its ground truth: labelled answers on both sides.
        assert verdict.statistics.challenger.labelled >= 50, verdict.summary
    assert record.deployment.reference_profile is not None
    assert record.deployment.reference_profile.startswith("v2-"), record.deployment
    # The training's real cost reached the loop's result and the audit record.
    assert second.actual_cost is not None and second.actual_cost > 0
    bad = audit.read(model, names.retraining_loop_id(model, 3))
    assert bad is not None and bad.deployment is not None and bad.deployment.rollout is not None
    failed = bad.deployment.rollout.verdict
    assert failed is not None and failed.outcome is Outcome.FAIL, failed
    assert {"error_rate", "log_loss"} & {
        c.name.value for c in failed.checks if c.outcome is Outcome.FAIL
    }


@pytest.mark.cloud_story
async def test_a_sagemaker_model_from_drift_to_promotion_and_a_bad_candidate_rolled_back(
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
    spec = story_spec(
        upload_dataset(S3Store(clients), source, write_dataset(source, model, today), "s3")
    )
    SpecStore(home).register(spec)
    assert spec.sagemaker is not None
    connections = CloudConnections(
        aws_endpoint_url=moto.endpoint_url, aws_session=session, poll_seconds=0.05
    )
    registry = SageMakerRegistry(clients, spec.sagemaker, tmp_path / "reader")
    callers = Callers(SageMakerTraffic(clients, spec.sagemaker, spec, registry))

    with env.auto_time_skipping_disabled(), Traffic(callers.tick):
        async with build_worker(client, home=home, task_queue=task_queue, cloud=connections):
            *results, report = await drift_story(env, client, task_queue, home, spec, callers)

    assert report.status is ReportStatus.DRIFT, report.summary
    assert_the_story(home, model, tuple(results), report.drifted)  # type: ignore[arg-type]
    # Three training jobs, tagged for chargeback; their containers really ran.
    jobs = clients.sagemaker.list_training_jobs()["TrainingJobSummaries"]
    assert len(jobs) == 3 and len(emulator.runs) == 3
    tags = clients.sagemaker.list_tags(ResourceArn=jobs[0]["TrainingJobArn"])["Tags"]
    assert {"model", "loop-id", "trigger"} <= {tag["Key"] for tag in tags}
    # v2 is champion; the endpoint serves it alone, and captures through every config.
    champion = registry.champion(model)
    assert champion is not None and champion.version == "2"
    described = clients.sagemaker.describe_endpoint(EndpointName=ENDPOINT)
    live = {v["VariantName"]: v["CurrentWeight"] for v in described["ProductionVariants"]}
    assert {name for name, weight in live.items() if weight} == {"v2"}
    assert described["DataCaptureConfig"]["EnableCapture"]
    # The audit record is in the bucket too, and the data window names the bucket's objects.
    audit_key = f"retrain/audit/{model}/{names.retraining_loop_id(model, 2)}.json"
    stored = json.loads(clients.s3.get_object(Bucket=BUCKET, Key=audit_key)["Body"].read())
    assert stored["loop_id"] == names.retraining_loop_id(model, 2)
    assert all(f["uri"].startswith(f"s3://{BUCKET}/") for f in stored["data_window"]["files"])
    # No credential ever reached workflow history.
    for workflow_id in (names.retraining_loop_id(model, 2), names.rollout_id(model, 2)):
        text = await history_text(client, workflow_id)
        assert FAKE_SECRET_KEY not in text and FAKE_ACCESS_KEY not in text


@pytest.mark.cloud_story
async def test_a_vertex_model_from_drift_to_promotion_and_a_bad_candidate_rolled_back(
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
    spec = story_spec(upload_dataset(GcsStore(clients), source, local, "gs"))
    SpecStore(home).register(spec)
    assert spec.vertex is not None
    registry = VertexRegistry(clients, spec.vertex, tmp_path / "reader")
    callers = Callers(VertexTraffic(vertex.state, clients, spec.vertex, spec, registry))

    with env.auto_time_skipping_disabled(), Traffic(callers.tick):
        async with build_worker(
            client, home=home, task_queue=task_queue, cloud=fake_connections(vertex)
        ):
            *results, report = await drift_story(env, client, task_queue, home, spec, callers)

    assert report.status is ReportStatus.DRIFT, report.summary
    assert_the_story(home, model, tuple(results), report.drifted)  # type: ignore[arg-type]
    assert len(emulator.runs) == 3
    champion = registry.champion(model)
    assert champion is not None and champion.version == "2"
    assert "champion" in champion.aliases
    endpoint = find_endpoint(clients.endpoints, spec.vertex)
    assert endpoint is not None
    variants = deployed_variants(endpoint)
    live = {deployed: weight for deployed, weight in endpoint.traffic_split.items() if weight}
    assert live == {variants["v2"]: 100}
    assert endpoint.predict_request_response_logging_config.enabled
    stored = GcsStore(clients).head(
        f"gs://{BUCKET}/retrain/audit/{model}/{names.retraining_loop_id(model, 2)}.json"
    )
    assert stored is not None


@pytest.mark.cloud_story
async def test_an_azure_model_from_drift_to_promotion_and_a_bad_candidate_rolled_back(
    env: WorkflowEnvironment,
    client: Client,
    task_queue: str,
    home: Path,
    model: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    from activities.azure.blob_store import BlobStore
    from activities.azure.endpoint import our_variants
    from activities.azure.registry import AzureRegistry
    from tests.support.azure_harness import ContainerEmulator as AzureContainer
    from tests.support.azure_harness import fake_clients as azure_clients
    from tests.support.azure_harness import fake_connections as azure_connections
    from tests.support.cloud_data import azure_settings
    from tests.support.cloud_traffic import AzureTraffic
    from workflows.spec.azure import AzureSettings

    azure = request.getfixturevalue("azure")
    today: date = (await env.get_current_time()).date()
    clients = azure_clients(azure, AzureSettings.model_validate(azure_settings()))
    emulator = AzureContainer(azure.state)
    source = tmp_path / "source"
    local = write_dataset(source, model, today)
    spec = story_spec(upload_dataset(BlobStore(clients), source, local, "az"))
    SpecStore(home).register(spec)
    assert spec.azure is not None
    registry = AzureRegistry(clients, spec.azure, tmp_path / "reader")
    callers = Callers(AzureTraffic(azure.state, clients, spec.azure, spec, registry))

    with env.auto_time_skipping_disabled(), Traffic(callers.tick):
        async with build_worker(
            client, home=home, task_queue=task_queue, cloud=azure_connections(azure)
        ):
            *results, report = await drift_story(env, client, task_queue, home, spec, callers)

    assert report.status is ReportStatus.DRIFT, report.summary
    assert_the_story(home, model, tuple(results), report.drifted)  # type: ignore[arg-type]
    # Three command jobs, tagged for chargeback; their commands really ran.
    jobs = list(clients.ml.jobs.list())
    assert len(jobs) == 3 and len(emulator.runs) == 3
    assert {"model", "loop-id", "trigger", "retrain.loop"} <= set(jobs[0].tags)
    champion = registry.champion(model)
    assert champion is not None and champion.version == "2"
    assert "champion" in champion.aliases
    # The endpoint serves v2 alone; the rolled-back v3 stays deployed at 0%.
    endpoint = clients.ml.online_endpoints.get(ENDPOINT)
    live = {v: w for v, w in our_variants(endpoint.traffic).items() if w}
    assert live == {"v2": 100}
    assert our_variants(endpoint.traffic).get("v3") == 0
    stored = BlobStore(clients).head(
        f"az://{BUCKET}/retrain/audit/{model}/{names.retraining_loop_id(model, 2)}.json"
    )
    assert stored is not None
