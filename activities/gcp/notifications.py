"""Pub/Sub as a notification channel, for every notification of a model on Vertex (like SNS on
SageMaker).

One `publish` per notification on the settings' topic, through google-cloud-pubsub's REST
transport (the worker speaks REST to Google everywhere): the body as the message data (UTF-8),
and `model`, `level`, `audience`, `key`, `subject` (and `loop_id` when it is about one loop) as
attributes, so subscriptions can filter on them (`attributes.level = "critical"`). Pub/Sub
delivers at least once and a retried activity publishes again: subscribers deduplicate on the
`key` attribute (or use a subscription with exactly-once delivery keyed the same way).
"""

from __future__ import annotations

from google.pubsub_v1 import PubsubMessage

from activities.gcp.clients import GcpClients
from activities.gcp.errors import gcp_call
from activities.notifications import message_attributes
from workflows.common.notify import Notification

# Pub/Sub's limit for one attribute value.
ATTRIBUTE_LIMIT = 1024


def _attribute(text: str) -> str:
    data = text.encode()
    if len(data) <= ATTRIBUTE_LIMIT:
        return text
    return data[: ATTRIBUTE_LIMIT - 3].decode(errors="ignore") + "..."


class PubSubChannel:
    def __init__(self, clients: GcpClients, topic: str) -> None:
        self.clients = clients
        self.topic = topic

    def send(self, notification: Notification) -> str:
        attributes = message_attributes(notification) | {"subject": notification.subject}
        message = PubsubMessage(
            data=(notification.body or notification.subject).encode(),
            attributes={name: _attribute(value) for name, value in attributes.items()},
        )
        with gcp_call(f"publishing to {self.topic}"):
            # No SDK retry: the activity's Temporal retry policy backs off, visibly.
            published = self.clients.publisher.publish(
                topic=self.topic, messages=[message], retry=None, timeout=30
            )
        return f"pubsub {self.topic} ({', '.join(published.message_ids)})"
