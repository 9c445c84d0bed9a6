"""The azure backend's own behaviour, through the real Azure SDKs against the local Azure fake:
training faults (a failed job, throttling with Retry-After, auth failures, cancellation),
what the endpoint refuses, autoscale settings and the Event Grid channel. The shared behaviour
is in the contract suite (tests/backends/test_backend_contract.py).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azure.ai.ml")

from temporalio.exceptions import ApplicationError, CancelledError

from activities.azure.autoscale import ensure_autoscale, setting_name
from activities.azure.endpoint import AzureEndpoint, deployment_name
from activities.azure.errors import retry_after, translate
from activities.azure.notifications import EventGridChannel
from activities.azure.training import AzureTraining, job_name
from activities.ports import EndpointUnavailable, TrafficRefused
from tests.loop.test_training import DEFAULT, make_job, write_dataset
from tests.support.azure_fake import Fault, RunningFake
from tests.support.azure_fake.eventgrid import published
from tests.support.azure_fake.jobs import RUN_JOB
from tests.support.azure_harness import ContainerEmulator, fake_clients
from tests.support.cloud_data import azure_settings
from workflows.common.errors import ErrorType
from workflows.common.notify import Notification
from workflows.loop.models import TrainingJob
from workflows.rollout.models import TrafficChange
from workflows.spec.azure import AzureSettings

LOOP = "retrain-churn-1"
FAILING = "tests.support.training_entrypoints:failing"
TOPIC = "https://retrain-topic.westeurope-1.eventgrid.azure.net/api/events"


def settings(**changes: Any) -> AzureSettings:
    return AzureSettings.model_validate(azure_settings(tags={"team": "growth"}, **changes))


def quiet(progress: str) -> None:
    assert progress


@pytest.fixture
def job(tmp_path: Path) -> TrainingJob:
    made = make_job(write_dataset(tmp_path / "data"), DEFAULT)
    return made.model_copy(update={"tags": {"model": "churn", "loop-id": LOOP, "trigger": "drift"}})


def training(azure: RunningFake, tmp_path: Path, **changes: Any) -> AzureTraining:
    chosen = settings(**changes)
    return AzureTraining(
        fake_clients(azure, chosen),
        chosen,
        tmp_path / "home",
        poll_seconds=0.01,
        max_poll_seconds=0.1,
    )


def test_a_failed_job_fails_the_activity_with_the_entrypoints_error(
    azure: RunningFake, tmp_path: Path, job: TrainingJob
) -> None:
    ContainerEmulator(azure.state)
    failing = job.model_copy(update={"entrypoint": FAILING})

    with pytest.raises(ApplicationError) as raised:
        training(azure, tmp_path).train(failing, quiet)

    assert raised.value.type == ErrorType.TRAINING_ENTRYPOINT and raised.value.non_retryable
    assert "ended Failed" in raised.value.message
    # The entrypoint's failure file, not Azure ML's generic "exited with status code 1".
    assert "is all null in this window" in raised.value.message


def test_a_failed_job_without_a_failure_file_reports_run_historys_error(
    azure: RunningFake, tmp_path: Path, job: TrainingJob
) -> None:
    azure.state.hooks[RUN_JOB] = lambda _: "Disk quota exceeded on node 0"

    with pytest.raises(ApplicationError) as raised:
        training(azure, tmp_path).train(job, quiet)

    assert raised.value.non_retryable
    assert "Disk quota exceeded on node 0" in raised.value.message


class WorkerLost(Exception):
    """The worker died mid-attempt: the activity's next attempt runs elsewhere."""


def test_throttling_is_retryable_after_azures_delay_and_the_retry_adopts_the_job(
    azure: RunningFake, tmp_path: Path, job: TrainingJob
) -> None:
    emulator = ContainerEmulator(azure.state)
    emulator.gate.clear()
    backend = training(azure, tmp_path)
    name = job_name("churn", LOOP)

    def lost(progress: str) -> None:
        raise WorkerLost(progress)

    with pytest.raises(WorkerLost):  # attempt 1 submitted the job, then its worker died
        backend.train(job, lost)
    azure.state.faults.append(
        Fault(f"GET /subscriptions/{azure.state.subscription}/", 429, "TooManyRequests",
              "Rate limit exceeded", retry_after=7)
    )  # fmt: skip
    with pytest.raises(ApplicationError) as raised:  # attempt 2 is throttled
        backend.train(job, quiet)
    assert raised.value.type == ErrorType.AZURE_UNAVAILABLE and not raised.value.non_retryable
    assert raised.value.next_retry_delay == timedelta(seconds=7)
    assert "TooManyRequests" in raised.value.message

    emulator.gate.set()
    result = backend.train(job, quiet)  # attempt 3 adopts the job attempt 1 submitted

    assert result.reused and result.backend == "azure"
    assert list(azure.state.tables["jobs"]) == [name] and emulator.runs == [name]
    assert result.cost is not None and result.cost >= 0


def test_auth_failures_are_not_retried(
    azure: RunningFake, tmp_path: Path, job: TrainingJob
) -> None:
    backend = training(azure, tmp_path)
    azure.state.tokens.clear()  # as if the identity's token had been revoked
    with pytest.raises(ApplicationError) as revoked:
        backend.train(job, quiet)
    assert revoked.value.type == ErrorType.AZURE_REQUEST_REJECTED and revoked.value.non_retryable
    assert "InvalidAuthenticationToken" in revoked.value.message

    azure.state.tokens.add(fake_clients(azure, settings()).credential.token)
    azure.state.faults.append(
        Fault(
            "PUT /subscriptions/",
            403,
            "AuthorizationFailed",
            "The client does not have authorization to perform action "
            "'Microsoft.MachineLearningServices/workspaces/jobs/write'",
        )
    )
    with pytest.raises(ApplicationError) as denied:
        backend.train(job, quiet)
    assert denied.value.type == ErrorType.AZURE_REQUEST_REJECTED and denied.value.non_retryable
    assert "AuthorizationFailed" in denied.value.message and "jobs/write" in denied.value.message


def test_a_cancelled_activity_cancels_its_job(
    azure: RunningFake, tmp_path: Path, job: TrainingJob
) -> None:
    emulator = ContainerEmulator(azure.state)
    emulator.gate.clear()
    beats: list[str] = []

    def heartbeat(progress: str) -> None:
        beats.append(progress)
        if "Running" in progress:
            raise CancelledError("the activity was cancelled")

    try:
        with pytest.raises(CancelledError):
            training(azure, tmp_path).train(job, heartbeat)
    finally:
        emulator.gate.set()
    name = job_name("churn", LOOP)
    assert azure.state.calls("POST", f"/jobs/{name}/cancel")
    jobs = azure.state.tables["jobs"]
    assert jobs[name]["properties"]["status"] in ("CancelRequested", "Canceled")
    # The job carries its chargeback tags.
    assert {"team", "model", "loop-id", "trigger", "retrain.loop"} <= set(
        jobs[name]["properties"]["tags"]
    )


def test_retry_after_is_read_in_seconds_or_milliseconds() -> None:
    from azure.core.exceptions import HttpResponseError

    class Response:
        def __init__(self, headers: dict[str, str]) -> None:
            self.headers = headers
            self.status_code = 503
            self.reason = "Service Unavailable"
            self.request = None

        def text(self) -> str:
            return ""

    def error(headers: dict[str, str]) -> HttpResponseError:
        found = HttpResponseError(message="busy")
        found.response = Response(headers)
        found.status_code = 503
        return found

    assert retry_after(error({"Retry-After": "12"})) == timedelta(seconds=12)
    assert retry_after(error({"retry-after-ms": "250"})) == timedelta(milliseconds=250)
    assert retry_after(error({"Retry-After": "86400"})) == timedelta(minutes=10)
    assert retry_after(error({})) is None
    translated = translate(error({"Retry-After": "3"}), "reading")
    assert translated.type == ErrorType.AZURE_UNAVAILABLE
    assert translated.next_retry_delay == timedelta(seconds=3)


# ---- the endpoint, autoscale and Event Grid --------------------------------------------------


def test_deploying_a_version_that_is_not_registered_is_refused(
    azure: RunningFake, tmp_path: Path
) -> None:
    chosen = settings()
    endpoint = AzureEndpoint(fake_clients(azure, chosen), chosen)
    change = TrafficChange(model="churn", endpoint_url="", weights={"v7": 100}, change_id="r/1")
    with pytest.raises(EndpointUnavailable, match="not ready yet"):
        endpoint.set_traffic(change)  # the endpoint is created first
    with pytest.raises(TrafficRefused, match="was not found"):
        shifted(endpoint, change)  # retried while the endpoint is still being created
    # An endpoint of another model is never touched.
    other = change.model_copy(update={"model": "fraud"})
    with pytest.raises(TrafficRefused, match="tagged for model 'churn'"):
        endpoint.set_traffic(other)


def test_autoscale_is_written_once_with_the_scheduled_profiles(azure: RunningFake) -> None:
    from azure.ai.ml.entities import ManagedOnlineDeployment, ManagedOnlineEndpoint, Model

    chosen = settings(
        autoscale={
            "minimum": 1,
            "maximum": 4,
            "scheduled": [
                {"name": "sunday-retrain", "days": ["Sunday"], "hour": 1, "minute": 30,
                 "minimum": 2, "maximum": 6}
            ],
        }
    )  # fmt: skip
    clients = fake_clients(azure, chosen)
    clients.ml.models.create_or_update(
        Model(name="churn", version="1", path=chosen.datastore_uri("m/1/"), type="custom_model")
    )
    clients.ml.online_endpoints.begin_create_or_update(
        ManagedOnlineEndpoint(name=chosen.endpoint_name)
    ).result()
    clients.ml.online_deployments.begin_create_or_update(
        ManagedOnlineDeployment(
            name=deployment_name("v1"),
            endpoint_name=chosen.endpoint_name,
            model="azureml:churn:1",
            instance_type="Standard_DS3_v2",
            instance_count=1,
        )
    ).result()

    assert ensure_autoscale(clients, chosen, deployment_name("v1"), "westeurope")
    assert not ensure_autoscale(clients, chosen, deployment_name("v1"), "westeurope")

    stored = clients.monitor.autoscale_settings.get(
        chosen.resource_group, setting_name(chosen, deployment_name("v1"))
    )
    assert [(p.name, p.capacity.minimum, p.capacity.maximum) for p in stored.profiles] == [
        ("default", "1", "4"),
        ("sunday-retrain", "2", "6"),
    ]
    rules = stored.profiles[0].rules
    assert [(r.metric_trigger.operator, r.scale_action.direction) for r in rules] == [
        ("GreaterThan", "Increase"),
        ("LessThan", "Decrease"),
    ]
    assert stored.profiles[1].recurrence.schedule.days == ["Sunday"]
    assert stored.target_resource_uri.endswith(
        "/onlineEndpoints/credit-endpoint/deployments/retrain-v1"
    )


def test_event_grid_channel_publishes_one_cloud_event_per_notification(
    azure: RunningFake,
) -> None:
    chosen = settings(eventgrid_topic=TOPIC)
    channel = EventGridChannel(fake_clients(azure, chosen), TOPIC)
    notification = Notification(
        key="churn/rollout-3/rolled-back",
        model="churn",
        level="critical",
        subject="churn: v3 rolled back",
        body="canary failed at 5%",
        audience="reviewers",
        loop_id="retrain-churn-3",
    )

    where = channel.send(notification)

    events = published(azure.state, "retrain-topic.westeurope-1.eventgrid.azure.net")
    assert len(events) == 1 and "eventgrid" in where
    event = events[0]
    assert (event["type"], event["id"], event["specversion"]) == (
        "AdaptiveRetraining.Critical",
        "churn/rollout-3/rolled-back",
        "1.0",
    )
    assert event["source"] == "/adaptive-retraining/models/churn"
    assert event["data"]["loop_id"] == "retrain-churn-3"
    azure.state.faults.append(
        Fault("POST /api/events", 503, "ServiceUnavailable", host=".eventgrid.azure.net")
    )
    with pytest.raises(ApplicationError) as raised:
        channel.send(notification)
    assert raised.value.type == ErrorType.AZURE_UNAVAILABLE and not raised.value.non_retryable


def deployed_endpoint(azure: RunningFake, chosen: AzureSettings, versions: list[str]) -> None:
    """The model's versions registered, as the registry leaves them."""
    from azure.ai.ml.entities import Model

    clients = fake_clients(azure, chosen)
    for version in versions:
        clients.ml.models.create_or_update(
            Model(
                name="churn",
                version=version,
                path=chosen.datastore_uri(f"m/{version}/"),
                type="custom_model",
            )
        )


def shifted(endpoint: AzureEndpoint, change: TrafficChange) -> Any:
    """The shift as the activity's retries apply it (deployments take several attempts)."""
    for _ in range(10):
        try:
            return endpoint.set_traffic(change)
        except EndpointUnavailable:
            continue
    raise AssertionError(f"{change.change_id} never applied")


def test_the_shadow_stage_mirrors_traffic_and_its_canary_reads_the_deployments_metrics(
    azure: RunningFake,
) -> None:
    from datetime import UTC, datetime

    from activities.azure.canary import AzureMonitorCanary
    from tests.support.azure_fake.monitor import seed_metric
    from workflows.rollout.models import WindowRef

    chosen = settings(mirror_percentage=20)
    deployed_endpoint(azure, chosen, ["1", "2"])
    clients = fake_clients(azure, chosen)
    endpoint = AzureEndpoint(clients, chosen)
    first = TrafficChange(model="churn", endpoint_url="", weights={"v1": 100}, change_id="r/0")
    shifted(endpoint, first)
    shadow = TrafficChange(
        model="churn", endpoint_url="", weights={"v1": 100}, shadow="v2", change_id="r/shadow"
    )

    state = shifted(endpoint, shadow)

    assert (state.weights, state.shadow) == ({"v1": 100}, "v2")
    described = clients.ml.online_endpoints.get(chosen.endpoint_name)
    assert described.mirror_traffic == {"retrain-v2": 20}
    assert described.traffic == {"retrain-v1": 100}
    assert endpoint.set_traffic(shadow).generation == state.generation  # applied once
    # Mirrored requests are on the deployment's own metrics, not on the endpoint's.
    now = datetime.now(UTC)
    deployment = f"{clients.endpoint_id}/deployments/retrain-v2"
    for code, count in (("200", 57), ("500", 3)):
        seed_metric(azure.state, deployment, "RequestsPerMinute", now, count,
                    {"envoy_response_code": code})  # fmt: skip
    seed_metric(azure.state, deployment, "RequestLatency_P50", now, 31.0)
    seed_metric(azure.state, deployment, "RequestLatency_P99", now, 88.0)
    counts = AzureMonitorCanary(clients, chosen).counts(
        WindowRef(variant="v2", generation=state.generation, since=now, shadow=True), now
    )
    assert (counts.requests, counts.errors) == (60, 3)
    assert (counts.latency_p50_ms, counts.latency_p99_ms) == (31.0, 88.0)
    # Back to live traffic only: the mirror is removed, the rollback keeps v2 deployed.
    back = shifted(
        endpoint,
        TrafficChange(model="churn", endpoint_url="", weights={"v1": 100}, change_id="r/back"),
    )
    assert back.shadow is None
    assert clients.ml.online_endpoints.get(chosen.endpoint_name).mirror_traffic == {}
