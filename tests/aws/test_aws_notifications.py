"""SNS notifications against moto: an SQS queue subscribed to the topic reads them back."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.stub import Stubber
from temporalio.exceptions import ApplicationError

from activities.aws.notifications import SnsChannel, deduplication_id, sns_subject
from tests.support.aws_harness import ACCOUNT, Moto
from workflows.common.errors import ErrorType
from workflows.common.notify import Notification


def subscribed(moto: Moto, fifo: bool = False) -> tuple[SnsChannel, Any, str]:
    clients = moto.clients()
    # Only the test reads SQS: the backend's clients are for its own services.
    sqs = clients.session.client("sqs", config=clients.config, endpoint_url=clients.endpoint_url)
    suffix = ".fifo" if fifo else ""
    fifo_attributes = {"FifoTopic": "true"} if fifo else {}
    topic = clients.sns.create_topic(Name=f"retrain{suffix}", Attributes=fifo_attributes)[
        "TopicArn"
    ]
    queue_attributes = {"FifoQueue": "true"} if fifo else {}
    queue = sqs.create_queue(QueueName=f"reviewers{suffix}", Attributes=queue_attributes)[
        "QueueUrl"
    ]
    queue_arn = f"arn:aws:sqs:us-east-1:{ACCOUNT}:reviewers{suffix}"
    clients.sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    return SnsChannel(clients, topic), sqs, queue


def received(sqs: Any, queue: str) -> list[dict[str, Any]]:
    found = sqs.receive_message(
        QueueUrl=queue, MaxNumberOfMessages=10, AttributeNames=["All"], WaitTimeSeconds=1
    )
    return [json.loads(message["Body"]) for message in found.get("Messages", [])]


def test_reviewer_notification_arrives_with_subject_and_attributes(moto: Moto) -> None:
    channel, sqs, queue = subscribed(moto)
    notification = Notification(
        audience="reviewers",
        key="retrain-churn-3-approval",
        model="churn",
        loop_id="retrain-churn-3",
        level="warning",
        subject="Approval needed: churn v3 — golden set accuracy \u22122.1%\nsecond line "
        + "x" * 120,
        body="The candidate of retrain-churn-3 waits for a reviewer.",
    )
    where = channel.send(notification)
    assert where.startswith(f"sns {channel.topic_arn} (")
    [envelope] = received(sqs, queue)
    assert envelope["Message"] == notification.body
    subject = envelope["Subject"]
    assert len(subject) <= 100 and subject.isascii() and "\n" not in subject
    assert subject.startswith("Approval needed: churn v3")
    attributes = {name: value["Value"] for name, value in envelope["MessageAttributes"].items()}
    assert attributes == {
        "model": "churn",
        "level": "warning",
        "audience": "reviewers",
        "key": "retrain-churn-3-approval",
        "loop_id": "retrain-churn-3",
    }


def test_coordinator_notification_arrives(moto: Moto) -> None:
    channel, sqs, queue = subscribed(moto)
    channel.send(
        Notification(
            key="coordinator-churn-17",
            model="churn",
            level="critical",
            subject="Critical drift on churn",
            body="Automation is blocked until a human reviews.",
            decision_seq=17,
        )
    )
    [envelope] = received(sqs, queue)
    assert envelope["Subject"] == "Critical drift on churn"
    assert envelope["MessageAttributes"]["level"]["Value"] == "critical"


def test_fifo_topics_deduplicate_by_key_and_group_by_model(moto: Moto) -> None:
    channel, _, _ = subscribed(moto, fifo=True)
    notification = Notification(
        key="coordinator-churn-1",
        model="churn",
        level="info",
        subject="s",
        body="b",
        decision_seq=1,
    )
    with Stubber(channel.clients.sns) as stub:
        stub.add_response(
            "publish",
            {"MessageId": "m-1"},
            {
                "TopicArn": channel.topic_arn,
                "Subject": "s",
                "Message": "b",
                "MessageAttributes": {
                    "model": {"DataType": "String", "StringValue": "churn"},
                    "level": {"DataType": "String", "StringValue": "info"},
                    "audience": {"DataType": "String", "StringValue": "operators"},
                    "key": {"DataType": "String", "StringValue": "coordinator-churn-1"},
                },
                "MessageDeduplicationId": "coordinator-churn-1",
                "MessageGroupId": "churn",
            },
        )
        assert channel.send(notification).endswith("(m-1)")
        stub.assert_no_pending_responses()
    # And moto accepts the same request for real.
    assert "sns" in channel.send(notification)


def test_a_missing_topic_is_non_retryable(moto: Moto) -> None:
    channel = SnsChannel(moto.clients(), f"arn:aws:sns:us-east-1:{ACCOUNT}:nope")
    notification = Notification(
        key="k", model="churn", level="info", subject="s", body="b", decision_seq=1
    )
    with pytest.raises(ApplicationError) as raised:
        channel.send(notification)
    assert raised.value.type == ErrorType.AWS_REQUEST_REJECTED and raised.value.non_retryable


def test_subject_and_deduplication_id_rules() -> None:
    assert sns_subject("") == "adaptive-retraining notification"
    assert sns_subject("é\t\r\nok") == "ok"
    assert len(sns_subject("a" * 500)) == 100
    assert deduplication_id("k-1") == "k-1"
    assert len(deduplication_id("k" * 300)) == 64
