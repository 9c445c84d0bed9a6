"""Probe: the real Azure SDKs against the local Azure fake (tests/support/azure_fake).

These tests drive azure-ai-ml's `MLClient`, azure-mgmt-monitor, azure-storage-blob and
azure-eventgrid through `LoopbackTransport`, so they show that the fake answers what the SDKs
really send (paths, api-versions, long-running operations, XML) and that what Azure refuses,
the fake refuses too. Each test also checks that no request fell through to an unknown route.
They skip when the Azure SDKs are not installed (they are an optional extra).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

pytest.importorskip("azure.ai.ml")
pytest.importorskip("azure.mgmt.monitor")
pytest.importorskip("azure.storage.blob")
pytest.importorskip("azure.eventgrid")

from azure.ai.ml import Input, MLClient, Output, command
from azure.ai.ml.entities import (
    DataCollector,
    DeploymentCollection,
    ManagedOnlineDeployment,
    ManagedOnlineEndpoint,
    Model,
)
from azure.core import MatchConditions
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridEvent

# The sync EventGridPublisherClient drops its keyword arguments (transport, retries) for basic
# topics in azure-eventgrid 4.22; the class it wraps keeps them.
from azure.eventgrid._legacy import EventGridPublisherClient
from azure.mgmt.monitor import MonitorManagementClient
from azure.mgmt.monitor.models import (
    AutoscaleProfile,
    AutoscaleSettingResource,
    MetricTrigger,
    Recurrence,
    RecurrentSchedule,
    ScaleAction,
    ScaleCapacity,
    ScaleRule,
)
from azure.storage.blob import BlobServiceClient, LinearRetry

from tests.support.azure_fake import ALL_ROUTES, FakeState, Fault, RunningFake, serve
from tests.support.azure_fake.blob import get_blob, put_blob
from tests.support.azure_fake.client import LoopbackTransport, StaticTokenCredential
from tests.support.azure_fake.eventgrid import published
from tests.support.azure_fake.jobs import RUN_JOB
from tests.support.azure_fake.monitor import seed_metric

TOPIC = "retrain-topic.westeurope-1.eventgrid.azure.net"
ENDPOINT = "churn-ep"


@pytest.fixture
def fake() -> Iterator[RunningFake]:
    state = FakeState()
    for running in serve(state, ALL_ROUTES):
        yield running
        assert state.unhandled == [], "the SDK called routes the fake does not know"


@pytest.fixture
def ml(fake: RunningFake) -> MLClient:
    state = fake.state
    return MLClient(
        StaticTokenCredential(),
        state.subscription,
        state.resource_group,
        state.workspace,
        transport=LoopbackTransport(fake.url),
    )


@pytest.fixture
def monitor(fake: RunningFake) -> MonitorManagementClient:
    return MonitorManagementClient(
        StaticTokenCredential(), fake.state.subscription, transport=LoopbackTransport(fake.url)
    )


def _job(name: str, command_line: str = "python -m activities.container_entry") -> Any:
    data = "azureml://datastores/workspaceblobstore/paths/loops"
    return command(
        name=name,
        command=command_line + " --job ${{inputs.job}} --days ${{inputs.days}}",
        environment="azureml:retrain-train:1",
        compute="cpu-cluster",
        inputs={"job": Input(type="uri_file", path=f"{data}/{name}/job.json"), "days": 30},
        outputs={"model": Output(type="uri_folder", path=f"{data}/{name}/model/")},
        tags={"retrain.loop": name, "retrain.trigger": "drift"},
        experiment_name="retrain-churn",
    )


def _poll_status(ml: MLClient, name: str, wanted: str) -> list[str]:
    seen: list[str] = []
    for _ in range(200):
        seen.append(str(ml.jobs.get(name).status.value))  # a JobStatus (a str Enum)
        if seen[-1] == wanted:
            return seen
        time.sleep(0.01)
    raise AssertionError(f"job {name} never reached {wanted}: {seen}")


# --- jobs -----------------------------------------------------------------------------------


def test_command_job_is_idempotent_by_name_and_goes_queued_running_completed(
    fake: RunningFake, ml: MLClient
) -> None:
    gate = threading.Event()
    ran: list[dict[str, Any]] = []

    def work(job: dict[str, Any]) -> None:
        ran.append(job)
        gate.wait(10)

    fake.state.hooks[RUN_JOB] = work
    created = ml.jobs.create_or_update(_job("loop-1"))
    assert created.status == "NotStarted"
    assert created.tags == {"retrain.loop": "loop-1", "retrain.trigger": "drift"}
    # The same job again (a retried activity) is accepted and changes nothing.
    assert ml.jobs.create_or_update(_job("loop-1")).name == "loop-1"
    with pytest.raises(HttpResponseError, match="A job with this name already exists"):
        ml.jobs.create_or_update(_job("loop-1", "python -m something.else"))

    assert [ml.jobs.get("loop-1").status for _ in range(3)] == ["Queued", "Running", "Running"]
    gate.set()
    _poll_status(ml, "loop-1", "Completed")
    run = ml.jobs._runs_operations.get_run("loop-1")
    assert run.status == "Completed" and run.error is None
    assert run.start_time_utc is not None and run.end_time_utc is not None
    assert run.start_time_utc <= run.end_time_utc
    assert len(ran) == 1
    submitted = ran[0]["properties"]
    assert submitted["inputs"]["days"] == {"value": "30", "jobInputType": "literal"}
    assert submitted["computeId"].endswith("/computes/cpu-cluster")
    assert fake.state.calls("PUT", "/jobs/loop-1?api-version=2025-01-01-preview")


def test_failed_job_reports_the_failure_in_run_history(fake: RunningFake, ml: MLClient) -> None:
    fake.state.hooks[RUN_JOB] = lambda job: "ValueError: the training data window is empty"
    ml.jobs.create_or_update(_job("loop-2"))
    _poll_status(ml, "loop-2", "Failed")
    details = ml.jobs._runs_operations.get_run_details("loop-2")
    assert details.status == "Failed"
    assert details.error is not None and details.error.error is not None
    assert details.error.error.message == "ValueError: the training data window is empty"


def test_cancel_and_list_jobs(fake: RunningFake, ml: MLClient) -> None:
    gate = threading.Event()
    fake.state.hooks[RUN_JOB] = lambda job: gate.wait(10) and None
    ml.jobs.create_or_update(_job("loop-3"))
    ml.jobs.create_or_update(_job("loop-4"))
    ml.jobs.begin_cancel("loop-3").result()
    _poll_status(ml, "loop-3", "Canceled")
    assert sorted(job.name for job in ml.jobs.list()) == ["loop-3", "loop-4"]
    gate.set()
    with pytest.raises(ResourceNotFoundError):
        ml.jobs.get("never-submitted")


# --- model registry -------------------------------------------------------------------------


def test_model_versions_with_tags_as_aliases(fake: RunningFake, ml: MLClient) -> None:
    store = "azureml://datastores/workspaceblobstore/paths/loops"
    first = ml.models.create_or_update(
        Model(
            name="churn",
            version="1",
            path=f"{store}/loop-1/model/",
            type="mlflow_model",
            tags={"retrain.loop": "loop-1"},
            properties={"retrain.metric.auc": "0.91"},
        )
    )
    assert (first.version, first.properties) == ("1", {"retrain.metric.auc": "0.91"})
    # No version given: the SDK reads the latest and the service numbers the next one.
    second = ml.models.create_or_update(
        Model(name="churn", path=f"{store}/loop-2/model/", type="mlflow_model")
    )
    assert second.version == "2"

    champion = ml.models.get("churn", version="1")
    champion.tags["retrain.alias.champion"] = "true"
    ml.models.create_or_update(champion)
    assert ml.models.get("churn", version="1").tags == {
        "retrain.loop": "loop-1",
        "retrain.alias.champion": "true",
    }
    listed = {m.version: m.tags for m in ml.models.list(name="churn")}
    assert listed == {"1": {"retrain.loop": "loop-1", "retrain.alias.champion": "true"}, "2": {}}
    assert [(m.name, m.latest_version) for m in ml.models.list()] == [("churn", "2")]
    assert ml.models.get("churn", label="latest").version == "2"

    moved = ml.models.get("churn", version="2")
    moved.path = f"{store}/elsewhere/"
    with pytest.raises(HttpResponseError, match="modelUri cannot be changed"):
        ml.models.create_or_update(moved)


# --- online endpoints -----------------------------------------------------------------------


def _deploy(ml: MLClient, name: str, version: str, collect: bool = False) -> None:
    collector = (
        DataCollector(
            collections={
                "model_inputs": DeploymentCollection(enabled="true"),
                "model_outputs": DeploymentCollection(enabled="true"),
            }
        )
        if collect
        else None
    )
    ml.online_deployments.begin_create_or_update(
        ManagedOnlineDeployment(
            name=name,
            endpoint_name=ENDPOINT,
            model=f"azureml:churn:{version}",
            instance_type="Standard_DS3_v2",
            instance_count=1,
            data_collector=collector,
        )
    ).result()


def _set_traffic(ml: MLClient, traffic: dict[str, int], mirror: dict[str, int]) -> Any:
    endpoint = ml.online_endpoints.get(ENDPOINT)
    endpoint.traffic = traffic
    endpoint.mirror_traffic = mirror
    return ml.online_endpoints.begin_create_or_update(endpoint).result()


def test_blue_green_deployments_with_traffic_and_mirror(fake: RunningFake, ml: MLClient) -> None:
    for version in ("1", "2"):
        ml.models.create_or_update(
            Model(
                name="churn",
                version=version,
                path=f"azureml://datastores/workspaceblobstore/paths/m{version}/",
                type="mlflow_model",
            )
        )
    created = ml.online_endpoints.begin_create_or_update(
        ManagedOnlineEndpoint(name=ENDPOINT, auth_mode="key", tags={"retrain.model": "churn"})
    ).result()
    assert created.provisioning_state == "Succeeded"
    assert created.scoring_uri == f"https://{ENDPOINT}.westeurope.inference.ml.azure.com/score"
    _deploy(ml, "blue", "1", collect=True)
    _deploy(ml, "green", "2")
    # The data collector registered one data asset per collection.
    assert fake.state.calls("PUT", f"/data/{ENDPOINT}-blue-model_inputs/versions/1")

    assert _set_traffic(ml, {"blue": 100, "green": 0}, {"green": 20}).mirror_traffic == {
        "green": 20
    }
    live = _set_traffic(ml, {"blue": 90, "green": 10}, {})
    assert (live.traffic, live.mirror_traffic) == ({"blue": 90, "green": 10}, {})
    with pytest.raises(HttpResponseError, match="need to sum to 100"):
        _set_traffic(ml, {"blue": 50, "green": 10}, {})
    with pytest.raises(HttpResponseError, match="both live and mirrored"):
        _set_traffic(ml, {"blue": 90, "green": 10}, {"green": 10})
    with pytest.raises(HttpResponseError, match="utmost 50"):
        _set_traffic(ml, {"blue": 100, "green": 0}, {"green": 60})
    assert ml.online_endpoints.get(ENDPOINT).traffic == {"blue": 90, "green": 10}

    with pytest.raises(HttpResponseError, match="set its traffic to 0"):
        ml.online_deployments.begin_delete("green", endpoint_name=ENDPOINT).result()
    _set_traffic(ml, {"blue": 100, "green": 0}, {})
    ml.online_deployments.begin_delete("green", endpoint_name=ENDPOINT).result()
    assert [d.name for d in ml.online_deployments.list(ENDPOINT)] == ["blue"]
    assert ml.online_deployments.get("blue", endpoint_name=ENDPOINT).model.endswith(
        "/models/churn/versions/1"
    )
    assert ml.online_endpoints.get_keys(ENDPOINT).primary_key == f"{ENDPOINT}-primary"
    # Every change was a long-running operation polled through its Azure-AsyncOperation URL.
    assert len(fake.state.calls("GET", "/mfeOperationsStatus/")) >= 2 * 6


def test_deploying_a_model_version_that_does_not_exist_fails(ml: MLClient) -> None:
    ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name=ENDPOINT)).result()
    with pytest.raises(HttpResponseError, match="was not found"):
        _deploy(ml, "blue", "7")


# --- Azure Monitor --------------------------------------------------------------------------


def test_endpoint_metrics_per_deployment(
    fake: RunningFake, monitor: MonitorManagementClient
) -> None:
    endpoint_id = f"{fake.state.workspace_id}/onlineEndpoints/{ENDPOINT}"
    start = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    for minute in range(10):
        when = start + timedelta(minutes=minute)
        ok = {
            "deployment": "blue",
            "statusCode": "200",
            "statusCodeClass": "2xx",
            "modelStatusCode": "200",
        }
        failed = {
            "deployment": "green",
            "statusCode": "500",
            "statusCodeClass": "5xx",
            "modelStatusCode": "500",
        }
        seed_metric(fake.state, endpoint_id, "RequestsPerMinute", when, 100, ok)
        seed_metric(fake.state, endpoint_id, "RequestsPerMinute", when, 3, failed)
        seed_metric(
            fake.state,
            endpoint_id,
            "RequestLatency_P99",
            when,
            40 + minute,
            {"deployment": "green"},
        )
    span = f"{start.isoformat()}/{(start + timedelta(minutes=10)).isoformat()}"

    requests = monitor.metrics.list(
        endpoint_id,
        timespan=span,
        interval="PT5M",
        metricnames="RequestsPerMinute",
        aggregation="Total",
        filter="deployment eq '*' and statusCodeClass eq '*'",
    )
    assert requests.value is not None and requests.value[0].timeseries is not None
    totals = {
        tuple(m.value for m in series.metadatavalues or []): [p.total for p in series.data or []]
        for series in requests.value[0].timeseries
    }
    assert totals == {("blue", "2xx"): [500.0, 500.0], ("green", "5xx"): [15.0, 15.0]}
    assert requests.value[0].unit == "Count"

    latency = monitor.metrics.list(
        endpoint_id,
        timespan=span,
        interval="PT5M",
        metricnames="RequestLatency_P99",
        aggregation="Maximum",
        filter="deployment eq 'green'",
    )
    assert latency.value is not None and latency.value[0].timeseries is not None
    assert [p.maximum for p in latency.value[0].timeseries[0].data or []] == [44.0, 49.0]
    with pytest.raises(HttpResponseError, match="Failed to find metric configuration"):
        monitor.metrics.list(endpoint_id, timespan=span, metricnames="NoSuchMetric")
    # azure-mgmt-monitor sends a timedelta interval as "0:05:00", which Azure refuses too.
    with pytest.raises(HttpResponseError, match="ISO 8601"):
        wrong: dict[str, Any] = {"interval": timedelta(minutes=5)}
        monitor.metrics.list(endpoint_id, timespan=span, metricnames="RequestsPerMinute", **wrong)


def test_autoscale_settings_with_a_scheduled_prescale_profile(
    fake: RunningFake, ml: MLClient, monitor: MonitorManagementClient
) -> None:
    target = f"{fake.state.workspace_id}/onlineEndpoints/{ENDPOINT}/deployments/blue"
    rule = ScaleRule(
        metric_trigger=MetricTrigger(
            metric_name="CpuUtilizationPercentage",
            metric_resource_uri=target,
            time_grain=timedelta(minutes=1),
            statistic="Average",
            time_window=timedelta(minutes=5),
            time_aggregation="Average",
            operator="GreaterThan",
            threshold=70,
        ),
        scale_action=ScaleAction(
            direction="Increase", type="ChangeCount", value="1", cooldown=timedelta(minutes=5)
        ),
    )
    setting = AutoscaleSettingResource(
        location="westeurope",
        target_resource_uri=target,
        enabled=True,
        profiles=[
            AutoscaleProfile(
                name="default",
                capacity=ScaleCapacity(minimum="1", maximum="5", default="1"),
                rules=[rule],
            ),
            AutoscaleProfile(
                name="sunday-prescale",
                capacity=ScaleCapacity(minimum="3", maximum="6", default="3"),
                rules=[],
                recurrence=Recurrence(
                    frequency="Week",
                    schedule=RecurrentSchedule(
                        time_zone="UTC", days=["Sunday"], hours=[1], minutes=[30]
                    ),
                ),
            ),
        ],
    )
    group = fake.state.resource_group
    with pytest.raises(HttpResponseError, match="was not found"):
        monitor.autoscale_settings.create_or_update(group, "churn-blue", setting)

    ml.models.create_or_update(
        Model(
            name="churn",
            version="1",
            path="azureml://datastores/workspaceblobstore/paths/m1/",
            type="mlflow_model",
        )
    )
    ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name=ENDPOINT)).result()
    _deploy(ml, "blue", "1")
    monitor.autoscale_settings.create_or_update(group, "churn-blue", setting)
    read = monitor.autoscale_settings.get(group, "churn-blue")
    assert [(p.name, p.capacity.default) for p in read.profiles] == [
        ("default", "1"),
        ("sunday-prescale", "3"),
    ]
    recurrence = read.profiles[1].recurrence
    assert recurrence is not None and recurrence.schedule.days == ["Sunday"]
    assert read.profiles[0].rules[0].metric_trigger.time_window == timedelta(minutes=5)

    setting.profiles[0].capacity.default = "9"
    with pytest.raises(HttpResponseError, match="minimum <= default <= maximum"):
        monitor.autoscale_settings.create_or_update(group, "churn-blue", setting)
    assert [s.name for s in monitor.autoscale_settings.list_by_resource_group(group)] == [
        "churn-blue"
    ]


# --- Blob Storage and Event Grid ------------------------------------------------------------


def test_blob_store_lists_reads_and_writes_with_etags(fake: RunningFake) -> None:
    service = BlobServiceClient(
        f"https://{fake.state.storage_account}.blob.core.windows.net",
        credential=StaticTokenCredential(),
        transport=LoopbackTransport(fake.url),
    )
    container = service.get_container_client("labels")
    container.create_container()
    blob = container.get_blob_client("2026/01/labels.csv")
    written = blob.upload_blob(b"id,label\n1,0\n", metadata={"loop": "loop-1"})
    with pytest.raises(ResourceExistsError):
        blob.upload_blob(b"other", overwrite=False)
    properties = blob.get_blob_properties()
    assert (properties.etag, properties.size, properties.metadata) == (
        written["etag"],
        13,
        {"loop": "loop-1"},
    )
    assert blob.download_blob().readall() == b"id,label\n1,0\n"
    with pytest.raises(ResourceModifiedError):
        blob.upload_blob(
            b"stale", overwrite=True, etag='"0x1"', match_condition=MatchConditions.IfNotModified
        )
    blob.upload_blob(
        b"fresh",
        overwrite=True,
        etag=written["etag"],
        match_condition=MatchConditions.IfNotModified,
    )
    assert (
        get_blob(fake.state, fake.state.storage_account, "labels", "2026/01/labels.csv") == b"fresh"
    )

    for day in range(5):  # written by someone else, e.g. the data collector
        put_blob(
            fake.state,
            fake.state.storage_account,
            "labels",
            f"2026/02/{day:02d}.jsonl",
            b"{}\n" * day,
        )
    pages = container.list_blobs(name_starts_with="2026/02/", results_per_page=2)
    assert [b.name for b in pages] == [f"2026/02/{day:02d}.jsonl" for day in range(5)]
    assert fake.state.calls("GET", "marker=2026%2F02%2F04.jsonl")  # the third page
    with pytest.raises(ResourceNotFoundError):
        container.get_blob_client("2026/03/missing.csv").download_blob()
    assert container.get_blob_client("2026/02/00.jsonl").download_blob().readall() == b""


def test_event_grid_topic_publishing(fake: RunningFake) -> None:
    endpoint = f"https://{TOPIC}/api/events"
    by_key = EventGridPublisherClient(
        endpoint, AzureKeyCredential("fake-topic-key"), transport=LoopbackTransport(fake.url)
    )
    by_key.send(
        [
            EventGridEvent(
                subject="models/churn",
                event_type="Retrain.Promoted",
                data={"version": "3"},
                data_version="1.0",
            )
        ]
    )
    by_token = EventGridPublisherClient(
        endpoint, StaticTokenCredential(), transport=LoopbackTransport(fake.url)
    )
    by_token.send(
        [CloudEvent(source="/retrain/churn", type="Retrain.RolledBack", data={"version": "4"})]
    )
    events = published(fake.state, TOPIC)
    assert [(e.get("eventType") or e.get("type")) for e in events] == [
        "Retrain.Promoted",
        "Retrain.RolledBack",
    ]
    assert events[1]["specversion"] == "1.0" and events[0]["data"] == {"version": "3"}
    wrong = EventGridPublisherClient(
        endpoint, AzureKeyCredential("wrong-key"), transport=LoopbackTransport(fake.url)
    )
    with pytest.raises(ClientAuthenticationError):
        wrong.send([EventGridEvent(subject="s", event_type="t", data={}, data_version="1")])


# --- faults ---------------------------------------------------------------------------------


def test_throttling_is_retried_after_the_servers_delay(fake: RunningFake, ml: MLClient) -> None:
    ml.models.create_or_update(
        Model(
            name="churn",
            version="1",
            path="azureml://datastores/workspaceblobstore/paths/m1/",
            type="mlflow_model",
        )
    )
    fake.state.faults.append(
        Fault("GET /subscriptions/", 429, "TooManyRequests", "Rate limit exceeded", retry_after=1)
    )
    assert ml.models.get("churn", version="1").version == "1"
    assert fake.state.faults == []  # the 429 was answered, and the SDK retried
    assert len(fake.state.calls("GET", "/models/churn/versions/1?")) == 2


def test_auth_failures(fake: RunningFake, ml: MLClient) -> None:
    fake.state.tokens.clear()  # as if Entra ID's token had been revoked
    with pytest.raises(ClientAuthenticationError, match="InvalidAuthenticationToken"):
        ml.models.get("churn", version="1")
    fake.state.tokens.add(StaticTokenCredential().token)
    fake.state.faults.append(
        Fault(
            "PUT /subscriptions/",
            403,
            "AuthorizationFailed",
            "The client does not have authorization to perform action "
            "'Microsoft.MachineLearningServices/workspaces/jobs/write'",
        )
    )
    with pytest.raises(HttpResponseError) as refused:
        ml.jobs.create_or_update(_job("loop-5"))
    assert refused.value.status_code == 403
    assert refused.value.error is not None and refused.value.error.code == "AuthorizationFailed"


def test_blob_server_busy_is_retried(fake: RunningFake) -> None:
    put_blob(fake.state, fake.state.storage_account, "labels", "a.csv", b"1")
    fake.state.faults.append(
        Fault(
            "GET /labels/a.csv",
            503,
            "ServerBusy",
            "The server is busy.",
            retry_after=1,
            host=".blob.core.windows.net",
        )
    )
    service = BlobServiceClient(
        f"https://{fake.state.storage_account}.blob.core.windows.net",
        credential=StaticTokenCredential(),
        transport=LoopbackTransport(fake.url),
        # Blob Storage's own back-off (15 s + 3^n, with jitter) ignores Retry-After: shortened
        # here; the backend turns SDK retries off altogether.
        retry_policy=LinearRetry(backoff=0, random_jitter_range=0),
    )
    assert service.get_blob_client("labels", "a.csv").download_blob().readall() == b"1"
    assert fake.state.faults == []


# --- the hooks that do not reach the fake ---------------------------------------------------


def test_a_custom_http_cloud_does_not_reach_the_fake_for_every_call(
    fake: RunningFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other hook: MLClient(cloud=..., cloud_metadata=...) with an http resource manager.
    Jobs work (the SDK passes enforce_https=False), but the model operations' bearer-token
    policy refuses a non-TLS URL before sending anything."""
    url = fake.url + "/"
    metadata = {
        "azure_portal": url,
        "resource_manager": url,
        "active_directory": url,
        "aml_resource_id": url,
        "storage_endpoint": "core.windows.net",
        "registry_discovery_endpoint": url,
    }
    state = fake.state
    # MLClient(cloud=...) makes that cloud the process's current one (AZUREML_CURRENT_CLOUD):
    # restored after the test, or every later client in this process would use it.
    cloud_variable = "AZUREML_CURRENT_CLOUD"  # azure.ai.ml._azure_environments's name for it
    monkeypatch.setenv(cloud_variable, os.environ.get(cloud_variable, ""))
    if not os.environ[cloud_variable]:
        monkeypatch.delenv(cloud_variable)
    client = MLClient(
        StaticTokenCredential(),
        state.subscription,
        state.resource_group,
        state.workspace,
        cloud="RetrainFakeHttp",
        cloud_metadata=metadata,
    )
    with pytest.raises(ServiceRequestError, match="non-TLS"):
        client.models.get("churn", version="1")
    state.unhandled.clear()  # the fake routes by Azure host; this client sent 127.0.0.1
