"""Reviewer notifications.

Channels implement `NotificationChannel`. The local default writes one JSON file per
notification into an outbox directory (`.retrain/notifications/`), named by the notification's
key, so a retried activity rewrites the same file instead of notifying twice. Cloud channels
(SNS, Pub/Sub) plug in behind the same Protocol.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel
from temporalio import activity

from workflows.coordinator_state import Notification


class NotificationChannel(Protocol):
    def send(self, notification: Notification) -> str:
        """Deliver idempotently by `notification.key`; return where it went."""
        ...


class OutboxChannel:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def send(self, notification: Notification) -> str:
        return self.write(notification.key, notification)

    def write(self, key: str, message: BaseModel) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.directory / f"{key}.json"
        # Write-then-rename: readers never see a half-written notification.
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w") as handle:
            json.dump(message.model_dump(mode="json"), handle, indent=2)
        os.replace(tmp, target)
        return str(target)


class NotificationActivities:
    def __init__(self, channel: NotificationChannel) -> None:
        self.channel = channel

    @activity.defn(name="notify")
    def notify(self, notification: Notification) -> str:
        where = self.channel.send(notification)
        activity.logger.info("notified %s: %s", where, notification.subject)
        return where
