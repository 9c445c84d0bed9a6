"""Cloud faults through whole loops (SageMaker on moto, time-skipping server).

- A training job that ends Failed: the loop ends `failed` with the job's FailureReason; the
  coordinator records it and starts the next loop for the next trigger.
- AccessDenied: non-retryable, one attempt, the loop ends `failed` with AWS's message.
- Throttling: retried by the activity's Temporal retry policy (visible as attempts), and the
  loop carries on.
- An endpoint that is not InService: the stage's shift waits (retried), then the rollout fails
  cleanly and, once the endpoint is back, the champion takes 100% again.

Errors are injected the way AWS returns them: a botocore `before-call` handler answering
with an error response, on the boto3 session the worker's clients come from.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.aws.registry import SageMakerRegistry
from activities.aws.s3_store import S3Store
from activities.backends import CloudConnections
from activities.specs import SpecStore
from tests.support.aws_harness import FAKE_ACCESS_KEY, FAKE_SECRET_KEY, REGION, Moto
from tests.support.cloud_data import BUCKET, ENDPOINT, upload_dataset
from tests.support.cloud_loops import BAKE, Callers, Traffic, approved_result, rollout_spec
from tests.support.cloud_traffic import SageMakerTraffic
from tests.support.helpers import CoordinatorProbe
from tests.support.loop_harness import start_loop, with_changes, write_dataset
from tests.support.moto_gaps import set_endpoint_status
from tests.support.sagemaker_container import ContainerEmulator
from workers.worker import build_worker
from workflows.common import names
from workflows.coordinator.triggers import TriggerEvent, TriggerKind
from workflows.loop.models import LoopStatus
from workflows.rollout.workflow import StagedRollout
from workflows.spec.models import ModelSpec

pytestmark = [
    pytest.mark.time_skipping_only,
    pytest.mark.own_server,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow.*"),
]


@dataclass
class _Response:
    """Enough of an HTTP response for botocore to raise the ClientError it describes."""

    status_code: int
    headers: dict[str, str]


class Faults:
    """Answers the first `times` calls of an operation with an AWS error."""

    def __init__(self) -> None:
        self.injected: dict[str, int] = {}

    def fail(
        self,
        session: boto3.Session,
        operation: str,
        code: str,
        message: str,
        *,
        times: int,
    ) -> None:
        remaining = [times]

        def answer(**_: Any) -> tuple[_Response, dict[str, Any]] | None:
            if remaining[0] == 0:
                return None
            remaining[0] -= 1
            self.injected[operation] = self.injected.get(operation, 0) + 1
            error = {"Error": {"Code": code, "Message": message}}
            return _Response(400, {}), {**error, "ResponseMetadata": {"HTTPStatusCode": 400}}

        session.events.register(f"before-call.sagemaker.{operation}", answer)


@dataclass
class Cloud:
    session: boto3.Session
    clients: Any
    spec: ModelSpec
    connections: CloudConnections
    faults: Faults


@pytest_asyncio.fixture
async def cloud(
    moto: Moto,
    moto_gaps: None,
    home: Path,
    model: str,
    tmp_path: Path,
    env: WorkflowEnvironment,
) -> AsyncIterator[Cloud]:
    session = boto3.Session(
        aws_access_key_id=FAKE_ACCESS_KEY, aws_secret_access_key=FAKE_SECRET_KEY, region_name=REGION
    )
    clients = moto.clients()
    clients.s3.create_bucket(Bucket=BUCKET)
    ContainerEmulator(s3=clients.s3).attach_session(session, clients.sagemaker)
    source = tmp_path / "source"
    today = (await env.get_current_time()).date()
    local = write_dataset(source, model, today)
    spec = rollout_spec(upload_dataset(S3Store(clients), source, local, "s3"))
    SpecStore(home).register(spec)
    connections = CloudConnections(
        aws_endpoint_url=moto.endpoint_url, aws_session=session, poll_seconds=0.05
    )
    yield Cloud(session, clients, spec, connections, Faults())


def manual(event_id: str) -> TriggerEvent:
    return TriggerEvent(kind=TriggerKind.MANUAL, source="test", event_id=event_id, priority=2)


async def test_a_failed_training_job_fails_the_loop_and_the_coordinator_moves_on(
    env: WorkflowEnvironment, client: Client, task_queue: str, home: Path, model: str, cloud: Cloud
) -> None:
    failing = with_changes(
        cloud.spec, {"training": {"entrypoint": "tests.support.training_entrypoints:failing"}}
    )
    SpecStore(home).register(failing)
    probe = CoordinatorProbe(client, task_queue, model)
    with env.auto_time_skipping_disabled():
        async with build_worker(client, home=home, task_queue=task_queue, cloud=cloud.connections):
            await probe.start()
            await probe.submit(manual("first"))
            status = await probe.wait_status(
                lambda s: s.last_outcome is not None, "the first loop's outcome", timeout=120
            )
            assert status.last_outcome is not None
            assert status.last_outcome.status is LoopStatus.FAILED
            assert "AlgorithmError" in status.last_outcome.summary
            assert "is all null in this window" in status.last_outcome.summary
            assert status.active_loop is None

            # The coordinator takes the next trigger: a second loop starts.
            SpecStore(home).register(cloud.spec)
            await env.sleep(BAKE)
            await probe.submit(manual("second"))
            await probe.wait_status(
                lambda s: s.loops_started == 2, "the second loop to start", timeout=60
            )
            await probe.handle.terminate("test over")
            await client.get_workflow_handle(names.retraining_loop_id(model, 2)).terminate()


async def test_access_denied_is_not_retried_and_ends_the_loop_with_aws_message(
    env: WorkflowEnvironment, client: Client, task_queue: str, home: Path, model: str, cloud: Cloud
) -> None:
    message = (
        "User: arn:aws:sts::123456789012:assumed-role/worker is not authorized to perform: "
        "sagemaker:CreateTrainingJob"
    )
    cloud.faults.fail(
        cloud.session, "CreateTrainingJob", "AccessDeniedException", message, times=99
    )
    with env.auto_time_skipping_disabled():
        async with build_worker(client, home=home, task_queue=task_queue, cloud=cloud.connections):
            result = await (await start_loop(client, task_queue, model, 1)).result()
    assert result.status is LoopStatus.FAILED
    assert "AccessDeniedException" in result.summary and message in result.summary
    assert cloud.faults.injected["CreateTrainingJob"] == 1


async def test_throttling_is_retried_by_the_activity_retry_policy(
    env: WorkflowEnvironment, client: Client, task_queue: str, home: Path, model: str, cloud: Cloud
) -> None:
    cloud.faults.fail(
        cloud.session, "CreateTrainingJob", "ThrottlingException", "Rate exceeded", times=2
    )
    with env.auto_time_skipping_disabled():
        async with build_worker(client, home=home, task_queue=task_queue, cloud=cloud.connections):
            handle = await start_loop(client, task_queue, model, 1)
            result = await approved_result(env, handle, "ana")
    assert result.status is LoopStatus.PROMOTED, result.summary
    assert cloud.faults.injected["CreateTrainingJob"] == 2
    history = await handle.fetch_history()
    attempts = [
        event.activity_task_started_event_attributes.attempt
        for event in history.events
        if event.HasField("activity_task_started_event_attributes")
    ]
    assert 3 in attempts  # the training activity's third attempt went through


async def test_an_endpoint_not_in_service_makes_the_stage_wait_then_fail_cleanly(
    env: WorkflowEnvironment, client: Client, task_queue: str, home: Path, model: str, cloud: Cloud
) -> None:
    assert cloud.spec.sagemaker is not None
    settings = cloud.spec.sagemaker
    registry = SageMakerRegistry(cloud.clients, settings, home / "reader")
    traffic = Traffic(Callers(SageMakerTraffic(cloud.clients, settings, cloud.spec, registry)).tick)
    with env.auto_time_skipping_disabled(), traffic:
        async with build_worker(client, home=home, task_queue=task_queue, cloud=cloud.connections):
            loop = await start_loop(client, task_queue, model, 1)
            first = await approved_result(env, loop, "ana")
            assert first.status is LoopStatus.PROMOTED, first.summary
            # Stuck in an update from elsewhere: the 5% shift waits through its retries.
            set_endpoint_status(ENDPOINT, "Updating")
            second = await start_loop(client, task_queue, model, 2)
            result = await approved_result(env, second, "bo")

    assert result.status is LoopStatus.FAILED, result.summary
    assert "credit-endpoint is Updating" in result.summary
    rollout = client.get_workflow_handle_for(StagedRollout.run, names.rollout_id(model, 2))
    shifts = [
        event.activity_task_started_event_attributes.attempt
        for event in (await rollout.fetch_history()).events
        if event.HasField("activity_task_started_event_attributes")
    ]
    assert max(shifts) == 20  # SHIFT_RETRY's attempts, then the rollout gave up
    # The candidate never took traffic: the champion still serves everything.
    described = cloud.clients.sagemaker.describe_endpoint(EndpointName=ENDPOINT)
    live = {v["VariantName"] for v in described["ProductionVariants"] if v.get("CurrentWeight")}
    assert live == {"v1"}
