"""Event Grid as a notification channel, for every notification of a model on Azure (like SNS
on SageMaker and Pub/Sub on Vertex).

One CloudEvents 1.0 event per notification on the settings' custom topic, authenticated with
the worker's Entra token (role "EventGrid Data Sender" on the topic; no access key to keep):
`type` `AdaptiveRetraining.<Level>`, `source` `/adaptive-retraining/models/<model>`, `subject`
the notification's subject, `id` its key, and the notification as `data`. Event Grid delivers
at least once and a retried activity publishes again with the same `id`: subscribers
deduplicate on it. Event subscriptions can filter on the type (`AdaptiveRetraining.Critical`)
or on `data.audience`.
"""

from __future__ import annotations

from azure.core.messaging import CloudEvent

from activities.azure.clients import AzureClients
from activities.azure.errors import azure_call
from workflows.common.notify import Notification


class EventGridChannel:
    def __init__(self, clients: AzureClients, topic: str) -> None:
        self.clients = clients
        self.topic = topic

    def send(self, notification: Notification) -> str:
        event = CloudEvent(
            source=f"/adaptive-retraining/models/{notification.model}",
            type=f"AdaptiveRetraining.{notification.level.capitalize()}",
            subject=notification.subject[:1024],
            id=notification.key,
            data={
                "model": notification.model,
                "level": notification.level,
                "audience": notification.audience,
                "subject": notification.subject,
                "body": notification.body,
                "loop_id": notification.loop_id,
            },
        )
        with azure_call(f"publishing to {self.topic}"):
            self.clients.eventgrid.send([event])
        return f"eventgrid {self.topic} ({notification.key})"
