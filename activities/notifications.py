"""The one notification activity: every alert to every channel the model's spec configures.

Channels implement `NotificationChannel` (activities/ports.py). Each notification goes to the
log and the outbox (activities/local/notifications.py) always, to the spec's Slack-compatible
webhook (and, for escalations, its second webhook) when their environment variables are set,
and to the model's backend channels (SNS on SageMaker). A channel that fails fails the
activity, whose retry policy tries again later; the outbox rewrites the same file by key, so a
retry never duplicates it there.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.ports import NotificationChannel
from activities.slack import approval_message
from activities.specs import SpecStore
from workflows.common.errors import ErrorType
from workflows.common.names import ActivityName
from workflows.common.notify import Notification
from workflows.spec.models import NotificationSpec

log = logging.getLogger("retrain.notifications")
_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.ERROR}


def message_attributes(notification: Notification) -> dict[str, str]:
    """What a cloud channel's message carries beside its text, for subscribers to filter on."""
    attributes = {
        "model": notification.model,
        "level": notification.level,
        "audience": notification.audience,
        "key": notification.key,
    }
    if notification.loop_id is not None:
        attributes["loop_id"] = notification.loop_id
    return attributes


class LogChannel:
    def send(self, notification: Notification) -> str:
        where = notification.loop_id or notification.model
        log.log(
            _LEVELS[notification.level],
            "[%s] %s\n%s",
            where,
            notification.subject,
            notification.body,
        )
        return "log"


class WebhookChannel:
    """A Slack-compatible incoming webhook: POST {"text": ...}. With `approvals` (the spec maps
    Slack users to reviewers), a notification whose loop waits for its reviewers also carries
    Block Kit Approve / Reject buttons (activities/slack.py)."""

    def __init__(
        self, url: str, client: httpx.Client | None = None, *, approvals: bool = False
    ) -> None:
        self.url = url
        self.client = client or httpx.Client(timeout=10.0)
        self.approvals = approvals

    def payload(self, notification: Notification) -> dict[str, Any]:
        if self.approvals and notification.awaiting_review and notification.loop_id:
            return approval_message(notification)
        return {"text": f"*{notification.subject}*\n{notification.body}"}

    def send(self, notification: Notification) -> str:
        try:
            response = self.client.post(self.url, json=self.payload(notification))
        except httpx.HTTPError as err:
            # Retryable: the activity's retry policy tries again later.
            raise ApplicationError(f"webhook unreachable: {err}", type=ErrorType.WEBHOOK) from None
        if response.status_code >= 400:
            raise ApplicationError(
                f"webhook answered {response.status_code}: {response.text[:200]}",
                type=ErrorType.WEBHOOK,
                non_retryable=400 <= response.status_code < 500 and response.status_code != 429,
            )
        return f"webhook {httpx.URL(self.url).host}"


def webhook_urls(spec: NotificationSpec, escalation: bool, environ: Mapping[str, str]) -> list[str]:
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


class NotificationActivities:
    """`base` channels take every notification (log, outbox); `backend_channels(model)` are the
    model's backend's; webhooks come from the model's registered spec."""

    def __init__(
        self,
        specs: SpecStore,
        base: Sequence[NotificationChannel],
        backend_channels: Callable[[str], Sequence[NotificationChannel]] = lambda model: (),
        webhook: Callable[..., NotificationChannel] = WebhookChannel,
    ) -> None:
        self.specs = specs
        self.base = list(base)
        self.backend_channels = backend_channels
        self.webhook = webhook

    def channels(self, notification: Notification) -> list[NotificationChannel]:
        channels = list(self.base)
        spec = self.specs.get(notification.model)
        if spec is not None:
            escalation = notification.channel == "escalation"
            urls = webhook_urls(spec.notifications, escalation, os.environ)
            approvals = bool(spec.notifications.slack_reviewers)
            channels += [self.webhook(url, approvals=approvals) for url in urls]
        return channels + list(self.backend_channels(notification.model))

    @activity.defn(name=ActivityName.NOTIFY)
    def notify(self, notification: Notification) -> list[str]:
        delivered = [channel.send(notification) for channel in self.channels(notification)]
        activity.logger.info("notified %s: %s", ", ".join(delivered), notification.subject)
        return delivered

    @activity.defn(name=ActivityName.NOTIFY_REVIEWERS)
    def notify_reviewers(self, notification: Notification) -> list[str]:
        """The same delivery, under the name loops and rollouts started before the one
        pipeline still call (docs/patches.md: `one-notification-pipeline`)."""
        return self.notify(notification)
