"""Pub/Sub notifications through google-cloud-pubsub's REST transport against the Vertex fake:
every alert of a Vertex model is one message with filterable attributes."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from activities.backends import builder_of
from activities.gcp.notifications import PubSubChannel
from activities.specs import SpecStore
from tests.support.cloud_data import vertex_settings
from tests.support.loop_harness import with_changes, write_dataset
from tests.support.vertex_fake import pubsub
from tests.support.vertex_fake.server import RunningFake
from tests.support.vertex_harness import fake_clients, fake_connections
from workflows.common.errors import ErrorType
from workflows.common.notify import Notification

TOPIC = "projects/retrain-tests/topics/ml-alerts"


def approval(key: str = "retrain-churn-3-approval") -> Notification:
    return Notification(
        audience="reviewers",
        key=key,
        model="churn",
        loop_id="retrain-churn-3",
        level="warning",
        subject="Approval needed: churn v3 — golden set accuracy \u22122.1%",
        body="The candidate of retrain-churn-3 waits for a reviewer.",
    )


def test_a_notification_is_one_message_with_its_attributes(vertex: RunningFake) -> None:
    pubsub.create_topic(vertex.state, TOPIC)
    channel = PubSubChannel(fake_clients(vertex), TOPIC)

    where = channel.send(approval())

    [message] = pubsub.messages(vertex.state, TOPIC)
    assert where == f"pubsub {TOPIC} ({message['messageId']})"
    assert message["data"] == "The candidate of retrain-churn-3 waits for a reviewer."
    assert message["attributes"] == {
        "model": "churn",
        "level": "warning",
        "audience": "reviewers",
        "key": "retrain-churn-3-approval",
        "subject": "Approval needed: churn v3 — golden set accuracy \u22122.1%",
        "loop_id": "retrain-churn-3",
    }


def test_a_long_subject_is_cut_to_pubsubs_attribute_limit(vertex: RunningFake) -> None:
    pubsub.create_topic(vertex.state, TOPIC)
    long = approval().model_copy(update={"subject": "é" * 2000})
    PubSubChannel(fake_clients(vertex), TOPIC).send(long)
    [message] = pubsub.messages(vertex.state, TOPIC)
    assert len(message["attributes"]["subject"].encode()) <= 1024


@pytest.mark.parametrize(
    ("status", "error_type", "retryable"),
    [(404, ErrorType.GCP_REQUEST_REJECTED, False), (503, ErrorType.GCP_UNAVAILABLE, True)],
)
def test_errors_are_translated(
    vertex: RunningFake, status: int, error_type: str, retryable: bool
) -> None:
    if status != 404:
        pubsub.create_topic(vertex.state, TOPIC)
        vertex.state.faults.append(("POST /v1/projects/retrain-tests/topics", status, "busy"))
    with pytest.raises(ApplicationError) as raised:
        PubSubChannel(fake_clients(vertex), TOPIC).send(approval())
    assert raised.value.type == error_type
    assert raised.value.non_retryable is not retryable


def test_the_vertex_backend_notifies_through_its_topic(vertex: RunningFake, tmp_path: Path) -> None:
    pubsub.create_topic(vertex.state, TOPIC)
    spec = with_changes(
        write_dataset(tmp_path / "home", "churn", date(2026, 3, 1)),
        {"backend": "vertex", "vertex": vertex_settings(pubsub_topic=TOPIC)},
    )
    SpecStore(tmp_path / "home").register(spec)
    backend = builder_of("vertex")(spec, tmp_path / "home", fake_connections(vertex))
    [channel] = backend.notifications
    channel.send(approval("k-2"))
    assert [m["attributes"]["key"] for m in pubsub.messages(vertex.state, TOPIC)] == ["k-2"]
