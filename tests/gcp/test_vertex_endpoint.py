"""VertexEndpoint against the fake's endpoints (real SDK, REST transport, anonymous credentials):
a rollout's changes read back, idempotency by change id, and Google's errors translated."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials
from google.protobuf import field_mask_pb2
from temporalio.exceptions import ApplicationError

from activities.gcp.clients import GcpClients
from activities.gcp.endpoint import VertexEndpoint, find_endpoint
from activities.ports import EndpointUnavailable, TrafficRefused
from tests.support.vertex_fake import endpoints, monitoring
from tests.support.vertex_fake.server import FakeState, RunningFake, serve
from workflows.common.errors import ErrorType
from workflows.rollout.models import TrafficChange
from workflows.spec.vertex import VertexSettings

MODEL = "churn"


@pytest.fixture
def fake() -> Iterator[RunningFake]:
    yield from serve(FakeState(), [endpoints.routes, monitoring.routes])


def settings_for(fake: RunningFake) -> VertexSettings:
    return VertexSettings(
        project=fake.state.project,
        location=fake.state.location,
        staging_bucket="gs://retrain-staging",
        training_image="us-docker.pkg.dev/retrain/train:1",
        endpoint_name="churn-endpoint",
        serving_image="us-docker.pkg.dev/retrain/serve:1",
        serving_machine_type="n1-standard-4",
        min_replicas=1,
        max_replicas=3,
        labels={"team": "growth"},
    )


def clients_for(fake: RunningFake) -> GcpClients:
    return GcpClients(
        fake.state.project,
        fake.state.location,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        api_endpoint=fake.url,
        monitoring_endpoint=fake.url,
    )


def model_resource(settings: VertexSettings) -> str:
    return f"projects/{settings.project}/locations/{settings.location}/models/4242"


@pytest.fixture
def endpoint(fake: RunningFake) -> VertexEndpoint:
    settings = settings_for(fake)
    return VertexEndpoint(
        clients_for(fake), settings, lambda model, version: f"{model_resource(settings)}@{version}"
    )


def change(weights: dict[str, int], step: str, shadow: str | None = None) -> TrafficChange:
    return TrafficChange(
        model=MODEL,
        endpoint_url="http://unused",
        weights=weights,
        shadow=shadow,
        change_id=f"rollout-{MODEL}-1/{step}",
    )


def stored(fake: RunningFake) -> dict[str, Any]:
    (only,) = fake.state.table(endpoints.ENDPOINTS).values()
    assert isinstance(only, dict)
    return only


def test_a_rollout_reads_back_every_stage_and_the_rollback(
    fake: RunningFake, endpoint: VertexEndpoint
) -> None:
    first = endpoint.set_traffic(change({"v1": 100}, "initial"))
    assert first.weights == {"v1": 100}
    assert first.variants == {"v1": "1"}
    assert first.generation == 1

    raw = stored(fake)
    assert raw["displayName"] == "churn-endpoint"
    assert raw["labels"]["team"] == "growth"
    (deployed,) = raw["deployedModels"]
    assert deployed["model"] == f"{model_resource(endpoint._settings)}@1"
    assert deployed["displayName"] == "v1"
    resources = deployed["dedicatedResources"]
    assert resources["machineSpec"]["machineType"] == "n1-standard-4"
    assert (resources["minReplicaCount"], resources["maxReplicaCount"]) == (1, 3)

    previous = first
    for step, weight in enumerate((0, 5, 25, 50, 100), start=1):
        applied = endpoint.set_traffic(change({"v1": 100 - weight, "v2": weight}, f"stage-{step}"))
        read = endpoint.read_traffic(MODEL, "http://unused")
        assert read == applied
        assert read.weights == {"v1": 100 - weight, "v2": weight}
        assert read.variants == {"v1": "1", "v2": "2"}
        assert read.generation == previous.generation + 1
        assert read.updated_at >= previous.updated_at
        previous = read

    rolled_back = endpoint.set_traffic(change({"v1": 100, "v2": 0}, "rollback"))
    assert rolled_back.weights == {"v1": 100, "v2": 0}
    assert endpoint.read_traffic(MODEL, "http://unused").weights == {"v1": 100, "v2": 0}
    # The loser stays deployed: a later rollback needs it.
    assert len(stored(fake)["deployedModels"]) == 2


def test_the_same_change_twice_changes_nothing(fake: RunningFake, endpoint: VertexEndpoint) -> None:
    endpoint.set_traffic(change({"v1": 100}, "initial"))
    once = endpoint.set_traffic(change({"v1": 75, "v2": 25}, "stage-1"))
    etag = stored(fake)["etag"]
    again = endpoint.set_traffic(change({"v1": 75, "v2": 25}, "stage-1"))
    assert again == once
    assert stored(fake)["etag"] == etag  # not even a write
    assert once.change_id is not None and once.change_id.startswith("rollout-churn-1-stage-1-")


def test_a_split_not_summing_to_100_is_refused_by_the_fake(
    fake: RunningFake, endpoint: VertexEndpoint
) -> None:
    endpoint.set_traffic(change({"v1": 100}, "initial"))
    client = clients_for(fake).endpoints
    found = find_endpoint(client, settings_for(fake))
    assert found is not None
    (deployed_id,) = found.traffic_split.keys()
    found.traffic_split[deployed_id] = 90
    with pytest.raises(gexc.BadRequest, match="must be 100"):
        client.update_endpoint(
            endpoint=found, update_mask=field_mask_pb2.FieldMask(paths=["traffic_split"])
        )


def test_shadow_is_refused(endpoint: VertexEndpoint) -> None:
    endpoint.set_traffic(change({"v1": 100}, "initial"))
    with pytest.raises(TrafficRefused, match="no shadow variants"):
        endpoint.set_traffic(change({"v1": 100}, "shadow", shadow="v2"))


def test_an_endpoint_of_another_model_is_refused(endpoint: VertexEndpoint) -> None:
    endpoint.set_traffic(change({"v1": 100}, "initial"))
    with pytest.raises(TrafficRefused, match="labelled for model"):
        endpoint.read_traffic("fraud", "http://unused")


def test_retire_undeploys_a_variant_without_traffic(
    fake: RunningFake, endpoint: VertexEndpoint
) -> None:
    endpoint.set_traffic(change({"v1": 100}, "initial"))
    endpoint.set_traffic(change({"v1": 0, "v2": 100}, "stage-1"))
    with pytest.raises(TrafficRefused, match="still takes traffic"):
        endpoint.retire(MODEL, "v2")
    endpoint.retire(MODEL, "v1")
    state = endpoint.read_traffic(MODEL, "http://unused")
    assert state.weights == {"v2": 100}


def test_forbidden_is_not_retryable(fake: RunningFake, endpoint: VertexEndpoint) -> None:
    fake.state.faults.append(
        ("GET /v1/projects/", 403, "Permission 'aiplatform.endpoints.list' denied")
    )
    with pytest.raises(ApplicationError) as caught:
        endpoint.set_traffic(change({"v1": 100}, "initial"))
    assert caught.value.type == ErrorType.GCP_REQUEST_REJECTED
    assert caught.value.non_retryable
    assert "aiplatform.endpoints.list" in str(caught.value)


def test_throttling_is_retryable(fake: RunningFake, endpoint: VertexEndpoint) -> None:
    fake.state.faults.append(("GET /v1/projects/", 429, "Quota exceeded"))
    with pytest.raises(ApplicationError) as caught:
        endpoint.set_traffic(change({"v1": 100}, "initial"))
    assert caught.value.type == ErrorType.GCP_UNAVAILABLE
    assert not caught.value.non_retryable
    # The retry goes through.
    assert endpoint.set_traffic(change({"v1": 100}, "initial")).weights == {"v1": 100}


@pytest.mark.parametrize("status", [409, 503])
def test_a_busy_endpoint_is_unavailable_then_the_retry_applies_once(
    fake: RunningFake, endpoint: VertexEndpoint, status: int
) -> None:
    endpoint.set_traffic(change({"v1": 100}, "initial"))
    fake.state.faults.append(("POST /v1/projects/", status, "an operation is in progress"))
    with pytest.raises(EndpointUnavailable, match="in progress"):
        endpoint.set_traffic(change({"v1": 95, "v2": 5}, "stage-1"))
    state = endpoint.set_traffic(change({"v1": 95, "v2": 5}, "stage-1"))
    assert state.weights == {"v1": 95, "v2": 5}
    assert state.generation == 2
    assert len(stored(fake)["deployedModels"]) == 2


def test_a_deployment_in_progress_is_waited_for_not_repeated(
    fake: RunningFake, endpoint: VertexEndpoint
) -> None:
    endpoint.set_traffic(change({"v1": 100}, "initial"))
    fake.state.hooks[endpoints.SLOW_DEPLOYS] = lambda: True
    with pytest.raises(EndpointUnavailable, match="not ready yet"):
        endpoint.set_traffic(change({"v1": 95, "v2": 5}, "stage-1"))
    # The retry asks again for the same deployed model id: Vertex answers 409, still deploying.
    with pytest.raises(EndpointUnavailable, match="being deployed"):
        endpoint.set_traffic(change({"v1": 95, "v2": 5}, "stage-1"))
    endpoints.finish_deployments(fake.state)
    state = endpoint.set_traffic(change({"v1": 95, "v2": 5}, "stage-1"))
    assert state.weights == {"v1": 95, "v2": 5}
    assert len(stored(fake)["deployedModels"]) == 2
