"""Reviewer notifications: log and outbox always, a Slack-compatible webhook when configured."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from temporalio.exceptions import ApplicationError

from activities.local.notifications import OutboxChannel
from activities.notifier import (
    LogNotifier,
    LoopNotificationActivities,
    OutboxNotifier,
    WebhookNotifier,
)
from activities.specs import SpecStore
from starters.demo.synthetic import synthetic_spec
from workflows.loop.models import ReviewerNotification
from workflows.spec.models import ModelSpec, NotificationSpec


def notification(channel: str = "primary") -> ReviewerNotification:
    return ReviewerNotification.model_validate(
        {
            "key": "retrain-credit-1-1",
            "model": "credit",
            "loop_id": "retrain-credit-1",
            "level": "warning",
            "subject": "credit: approval needed",
            "body": "| metric | candidate |",
            "channel": channel,
        }
    )


def activities(
    home: Path, spec: ModelSpec, received: list[tuple[str, dict[str, str]]], status: int = 200
) -> LoopNotificationActivities:
    SpecStore(home).register(spec)

    def handler(request: httpx.Request) -> httpx.Response:
        received.append((request.url.host, json.loads(request.content)))
        return httpx.Response(status, text="ok" if status < 400 else "invalid_token")

    client = httpx.Client(transport=httpx.MockTransport(handler))
    return LoopNotificationActivities(
        SpecStore(home),
        [LogNotifier(), OutboxNotifier(OutboxChannel(home / "notifications"))],
        webhook=lambda url: WebhookNotifier(url, client),
    )


def spec_with_webhooks() -> ModelSpec:
    return synthetic_spec("credit").model_copy(
        update={
            "notifications": NotificationSpec(
                webhook_url_env="TEAM_HOOK", escalation_webhook_url_env="ONCALL_HOOK"
            )
        }
    )


def test_log_and_outbox_without_webhooks(tmp_path: Path) -> None:
    received: list[tuple[str, dict[str, str]]] = []
    where = activities(tmp_path, synthetic_spec("credit"), received).notify(notification())
    assert where[0] == "log" and where[1].endswith("retrain-credit-1-1.json")
    assert received == []
    saved = json.loads((tmp_path / "notifications" / "retrain-credit-1-1.json").read_text())
    assert saved["subject"] == "credit: approval needed"


def test_webhooks_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEAM_HOOK", "https://hooks.team.test/T1/B2/xyz")
    monkeypatch.setenv("ONCALL_HOOK", "https://hooks.oncall.test/T9")
    received: list[tuple[str, dict[str, str]]] = []
    notifier = activities(tmp_path, spec_with_webhooks(), received)
    notifier.notify(notification())
    assert [host for host, _ in received] == ["hooks.team.test"]
    assert received[0][1] == {"text": "*credit: approval needed*\n| metric | candidate |"}
    notifier.notify(notification("escalation"))
    assert [host for host, _ in received[1:]] == ["hooks.team.test", "hooks.oncall.test"]


def test_unset_variable_is_skipped_and_client_errors_are_final(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEAM_HOOK", raising=False)
    received: list[tuple[str, dict[str, str]]] = []
    assert len(activities(tmp_path, spec_with_webhooks(), received).notify(notification())) == 2
    monkeypatch.setenv("TEAM_HOOK", "https://hooks.team.test/revoked")
    with pytest.raises(ApplicationError) as refused:
        activities(tmp_path, spec_with_webhooks(), received, status=403).notify(notification())
    assert refused.value.non_retryable and "403" in str(refused.value)
