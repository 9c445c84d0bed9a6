"""Reviewer notifications.

Channels implement `NotificationChannel`. The local default writes one JSON file per
notification into an outbox directory (`.retrain/notifications/`), named by the notification's
key, so a retried activity rewrites the same file instead of notifying twice. Cloud channels
(SNS, Pub/Sub) plug in behind the same Protocol.
"""

from __future__ import annotations

from temporalio import activity

from activities.ports import NotificationChannel
from workflows.coordinator.models import Notification


class NotificationActivities:
    def __init__(self, channel: NotificationChannel) -> None:
        self.channel = channel

    @activity.defn(name="notify")
    def notify(self, notification: Notification) -> str:
        where = self.channel.send(notification)
        activity.logger.info("notified %s: %s", where, notification.subject)
        return where
