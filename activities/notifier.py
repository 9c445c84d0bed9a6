"""Reviewer notifications for loops, through the `Notifier` Protocol.

Every notification is logged and written to the local outbox (one file per key, so a retried
activity does not notify twice there); a Slack-compatible webhook receives it too when the
model's spec names the environment variable holding the URL. Escalations also go to the
second channel.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Protocol

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.local.notifications import OutboxChannel
from activities.specs import SpecStore
from workflows.loop.models import ReviewerNotification
from workflows.spec.models import NotificationSpec

log = logging.getLogger("retrain.notifications")


class Notifier(Protocol):
    def send(self, notification: ReviewerNotification) -> str:
        """Deliver; return a short description of where it went."""
        ...


class LogNotifier:
    def send(self, notification: ReviewerNotification) -> str:
        level = {"info": logging.INFO, "warning": logging.WARNING}.get(
            notification.level, logging.ERROR
        )
        log.log(level, "[%s] %s\n%s", notification.loop_id, notification.subject, notification.body)
        return "log"


class OutboxNotifier:
    def __init__(self, channel: OutboxChannel) -> None:
        self.channel = channel

    def send(self, notification: ReviewerNotification) -> str:
        return self.channel.write(notification.key, notification)


class WebhookNotifier:
    """A Slack-compatible incoming webhook: POST {"text": ...}."""

    def __init__(self, url: str, client: httpx.Client | None = None) -> None:
        self.url = url
        self.client = client or httpx.Client(timeout=10.0)

    def send(self, notification: ReviewerNotification) -> str:
        text = f"*{notification.subject}*\n{notification.body}"
        try:
            response = self.client.post(self.url, json={"text": text})
        except httpx.HTTPError as err:
            # Retryable: the activity's retry policy tries again later.
            raise ApplicationError(f"webhook unreachable: {err}", type="WebhookError") from None
        if response.status_code >= 400:
            raise ApplicationError(
                f"webhook answered {response.status_code}: {response.text[:200]}",
                type="WebhookError",
                non_retryable=400 <= response.status_code < 500 and response.status_code != 429,
            )
        host = httpx.URL(self.url).host
        return f"webhook {host}"


def webhook_urls(spec: NotificationSpec, escalation: bool, environ: dict[str, str]) -> list[str]:
    names = [spec.webhook_url_env]
    if escalation:
        names.append(spec.escalation_webhook_url_env)
    urls = []
    for name in names:
        if name is None:
            continue
        url = environ.get(name)
        if not url:
            log.warning("notification webhook variable %s is not set: skipped", name)
            continue
        urls.append(url)
    return urls


class LoopNotificationActivities:
    def __init__(
        self,
        specs: SpecStore,
        base: Sequence[Notifier],
        webhook: Callable[[str], Notifier] = WebhookNotifier,
    ) -> None:
        self.specs = specs
        self.base = list(base)
        self.webhook = webhook

    @activity.defn(name="notify_reviewers")
    def notify(self, notification: ReviewerNotification) -> list[str]:
        notifiers = list(self.base)
        spec = self.specs.get(notification.model)
        if spec is not None:
            escalation = notification.channel == "escalation"
            urls = webhook_urls(spec.notifications, escalation, dict(os.environ))
            notifiers += [self.webhook(url) for url in urls]
        return [notifier.send(notification) for notifier in notifiers]
