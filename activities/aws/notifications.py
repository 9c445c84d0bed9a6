"""SNS as a notification channel, for every notification of a model on SageMaker.

One Publish per message: the subject (cut to SNS's 100 printable ASCII characters, no line
breaks), the body as Message, and `model`, `level`, `audience`, `key` (and `loop_id` when the
message is about one loop) as message attributes so subscriptions can filter on them. On a FIFO
topic (`.fifo`) the key is the MessageDeduplicationId and the model the MessageGroupId, so a
retried activity within SNS's five-minute deduplication window does not notify twice; a standard
topic has no deduplication, so subscribers should deduplicate on the `key` attribute.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from activities.aws.clients import AwsClients
from activities.aws.errors import aws_call
from activities.notifications import message_attributes
from workflows.common.notify import Notification

SUBJECT_LIMIT = 100
# SNS refuses messages over 256 KB; keep well inside it with the attributes.
MESSAGE_LIMIT = 200_000
DEDUPLICATION_ID_LIMIT = 128
_NOT_PRINTABLE_ASCII = re.compile(r"[^\x20-\x7e]+")


def sns_subject(text: str) -> str:
    """SNS's Subject rules: printable ASCII, no line breaks, at most 100 characters."""
    cleaned = " ".join(_NOT_PRINTABLE_ASCII.sub(" ", text).split())
    if len(cleaned) <= SUBJECT_LIMIT:
        return cleaned or "adaptive-retraining notification"
    return cleaned[: SUBJECT_LIMIT - 3].rstrip() + "..."


def deduplication_id(key: str) -> str:
    if len(key) <= DEDUPLICATION_ID_LIMIT and key.isascii() and key.isprintable():
        return key
    return hashlib.sha256(key.encode()).hexdigest()


class SnsChannel:
    def __init__(self, clients: AwsClients, topic_arn: str) -> None:
        self.clients = clients
        self.topic_arn = topic_arn

    def send(self, notification: Notification) -> str:
        attributes = message_attributes(notification)
        body = notification.body
        if len(body.encode()) > MESSAGE_LIMIT:
            body = body.encode()[:MESSAGE_LIMIT].decode(errors="ignore") + "\n...(cut)"
        request: dict[str, Any] = {
            "TopicArn": self.topic_arn,
            "Subject": sns_subject(notification.subject),
            "Message": body or notification.subject,
            "MessageAttributes": {
                name: {"DataType": "String", "StringValue": value}
                for name, value in attributes.items()
            },
        }
        if self.topic_arn.endswith(".fifo"):
            request["MessageDeduplicationId"] = deduplication_id(notification.key)
            request["MessageGroupId"] = notification.model
        with aws_call(f"Publish {self.topic_arn}"):
            published = self.clients.sns.publish(**request)
        return f"sns {self.topic_arn} ({published['MessageId']})"
