"""Azure's senders at the gateway: Event Grid's two validation handshakes and BlobCreated
deliveries, Azure Monitor's common-alert-schema webhook, each authenticated the way that
sender can (a secret in the subscription's URL, or a bearer delivery header) and routed to the
azure model whose data or endpoint it names."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from activities.specs import SpecStore
from tests.events.test_azure_events import ALERT, BLOB_CREATED, BLOB_CREATED_CLOUDEVENT, VALIDATION
from tests.support.cloud_data import azure_settings
from tests.support.gateway_harness import TOKEN, Gateway, gateway, stored, temporal_down
from workflows.coordinator.triggers import TriggerKind
from workflows.spec.models import ModelSpec


@pytest.fixture
async def offline(home: Path) -> AsyncIterator[Gateway]:
    async with gateway(home, temporal_down()) as running:
        yield running


def register_azure_model(home: Path) -> ModelSpec:
    container = "az://retrain-data/demand"
    spec = ModelSpec.model_validate(
        {
            "name": "demand",
            "backend": "azure",
            "azure": azure_settings(container="retrain-data", endpoint_name="demand-endpoint"),
            "features": [{"name": "basket_value"}, {"name": "visits"}],
            "label": "reordered",
            "data": {
                "labelled": f"{container}/labelled",
                "baseline_holdout": f"{container}/baseline.parquet",
                "golden_set": f"{container}/golden.parquet",
            },
        }
    )
    SpecStore(home).register(spec)
    return spec


async def test_event_grid_validation_handshakes_are_answered_when_authenticated(
    offline: Gateway,
) -> None:
    gw = offline
    # EventGridEvent schema: the validation event, answered with its code.
    answered = await gw.post("eventgrid", [VALIDATION], {}, {"token": TOKEN})
    assert answered.status_code == 200
    assert answered.json() == {"validationResponse": VALIDATION["data"]["validationCode"]}
    # CloudEvents schema: the OPTIONS handshake, allowed by echoing the origin.
    origin = {"WebHook-Request-Origin": "eventgrid.azure.net"}
    allowed = await gw.http.options("/v1/events/eventgrid", headers=origin, params={"token": TOKEN})
    assert allowed.status_code == 200
    assert allowed.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"
    # Without the subscription's secret neither is answered, so nobody can subscribe us.
    refused = await gw.post("eventgrid", [VALIDATION], {}, {"token": "wrong"})
    assert refused.status_code == 401 and "validationResponse" not in refused.text
    sneaky = await gw.http.options("/v1/events/eventgrid", headers=origin)
    assert sneaky.status_code == 401 and "WebHook-Allowed-Origin" not in sneaky.headers
    assert stored(gw.home) == ([], [])


async def test_blob_created_and_monitor_alerts_reach_the_azure_model(offline: Gateway) -> None:
    gw = offline
    register_azure_model(gw.home)
    grid = await gw.post("eventgrid", [BLOB_CREATED, BLOB_CREATED_CLOUDEVENT], {}, {"token": TOKEN})
    assert grid.status_code == 202, grid.text
    # The same blob write in two schemas: one event (Event Grid's ids differ, ours do not).
    answers = grid.json()["events"]
    assert {a["model"] for a in answers} == {"demand"}
    assert len({a["event_id"] for a in answers}) == 1
    # A delivery property can carry the secret as a bearer token instead.
    alert = await gw.post("azuremonitor", ALERT, {"Authorization": f"Bearer {TOKEN}"})
    assert alert.status_code == 202, alert.text
    assert alert.json()["events"][0]["model"] == "demand"
    waiting, dead = stored(gw.home)
    assert dead == []
    # Stored as sent; the coordinator takes an event id once.
    kinds = {json.loads(e.event)["kind"] for e in waiting}
    assert kinds == {TriggerKind.DATA_ARRIVED.value, TriggerKind.ALARM.value}
    unauthenticated = await gw.post("azuremonitor", ALERT, {})
    assert unauthenticated.status_code == 401


async def test_unknown_azure_shapes_are_400_with_the_reason(offline: Gateway) -> None:
    wrong = await offline.post(
        "azuremonitor", {"schemaId": "Microsoft.Insights/activityLogs"}, {}, {"token": TOKEN}
    )
    assert wrong.status_code == 400 and "common alert schema" in wrong.json()["error"]
    other = await offline.post(
        "eventgrid", [{**BLOB_CREATED, "eventType": "Microsoft.Resources.ResourceWriteSuccess"}],
        {}, {"token": TOKEN},
    )  # fmt: skip
    assert other.status_code == 400 and "not a Blob Storage event" in other.json()["error"]
