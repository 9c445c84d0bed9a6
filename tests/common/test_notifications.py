"""The one notification pipeline: every alert kind, from the pure rule that raises it, through
the `notify` activity, reaches the log, the outbox and the spec's Slack-compatible webhook.

End to end (a real worker, the spec's webhook on loopback): the coordinator's drift alerts
(tests/coordinator/test_coordinator_workflow.py), a schedule's stale-data alert
(tests/schedule/test_schedules.py), a loop's approval and gate rejection
(tests/loop/test_retraining_loop.py), a rollout held and rolled back (tests/rollout).
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from temporalio.exceptions import ApplicationError

from activities.local.notifications import OutboxChannel
from activities.notifications import LogChannel, NotificationActivities, WebhookChannel
from activities.ports import NotificationChannel
from activities.specs import SpecStore
from starters.demo.synthetic import synthetic_spec
from workflows.common.notify import Notification
from workflows.coordinator.policy import TriggerPolicy
from workflows.coordinator.rules import CoordinatorRules, new_state
from workflows.coordinator.triggers import (
    AlarmCategory,
    AlarmSignal,
    DriftSignal,
    TriggerEvent,
    TriggerKind,
)
from workflows.schedule.models import Freshness, OverlapPolicy, ScheduleHealth
from workflows.schedule.rules import NewCounts, delivery_alert, schedule_alert, stale_alert
from workflows.spec.models import ModelSpec, NotificationSpec

MODEL = "credit"
NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)
Received = list[tuple[str, dict[str, str]]]


def reviewers(channel: str = "primary") -> Notification:
    return Notification.model_validate(
        {
            "key": "retrain-credit-1-1",
            "model": MODEL,
            "audience": "reviewers",
            "loop_id": "retrain-credit-1",
            "level": "warning",
            "subject": "credit: approval needed",
            "body": "| metric | candidate |",
            "channel": channel,
        }
    )


class Cloud:
    """The backend's channel (SNS on SageMaker): records what it was sent."""

    def __init__(self) -> None:
        self.sent: list[Notification] = []

    def send(self, notification: Notification) -> str:
        self.sent.append(notification)
        return "cloud"


def activities(
    home: Path,
    spec: ModelSpec,
    received: Received,
    status: int = 200,
    cloud: NotificationChannel | None = None,
) -> NotificationActivities:
    SpecStore(home).register(spec)

    def handler(request: httpx.Request) -> httpx.Response:
        received.append((request.url.host, json.loads(request.content)))
        return httpx.Response(status, text="ok" if status < 400 else "invalid_token")

    client = httpx.Client(transport=httpx.MockTransport(handler))
    return NotificationActivities(
        SpecStore(home),
        [LogChannel(), OutboxChannel(home / "notifications")],
        lambda model: [cloud] if cloud is not None else [],
        webhook=lambda url, **options: WebhookChannel(url, client, **options),
    )


def spec_with_webhooks() -> ModelSpec:
    return synthetic_spec(MODEL).model_copy(
        update={
            "notifications": NotificationSpec(
                webhook_url_env="TEAM_HOOK", escalation_webhook_url_env="ONCALL_HOOK"
            )
        }
    )


def test_log_and_outbox_without_webhooks(tmp_path: Path) -> None:
    received: Received = []
    where = activities(tmp_path, synthetic_spec(MODEL), received).notify(reviewers())
    assert where[0] == "log" and where[1].endswith("retrain-credit-1-1.json")
    assert received == []
    saved = json.loads((tmp_path / "notifications" / "retrain-credit-1-1.json").read_text())
    assert saved["subject"] == "credit: approval needed" and saved["audience"] == "reviewers"


def test_webhooks_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEAM_HOOK", "https://hooks.team.test/T1/B2/xyz")
    monkeypatch.setenv("ONCALL_HOOK", "https://hooks.oncall.test/T9")
    received: Received = []
    notifier = activities(tmp_path, spec_with_webhooks(), received)
    notifier.notify(reviewers())
    assert [host for host, _ in received] == ["hooks.team.test"]
    assert received[0][1] == {"text": "*credit: approval needed*\n| metric | candidate |"}
    notifier.notify(reviewers("escalation"))
    assert [host for host, _ in received[1:]] == ["hooks.team.test", "hooks.oncall.test"]


def test_unset_variable_is_skipped_and_client_errors_are_final(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEAM_HOOK", raising=False)
    received: Received = []
    assert len(activities(tmp_path, spec_with_webhooks(), received).notify(reviewers())) == 2
    monkeypatch.setenv("TEAM_HOOK", "https://hooks.team.test/revoked")
    with pytest.raises(ApplicationError) as refused:
        activities(tmp_path, spec_with_webhooks(), received, status=403).notify(reviewers())
    assert refused.value.non_retryable and "403" in str(refused.value)


def test_the_legacy_activity_name_delivers_the_same_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loops started before the one pipeline call `notify_reviewers`: same channels."""
    monkeypatch.setenv("TEAM_HOOK", "https://hooks.team.test/T1")
    received: Received = []
    cloud = Cloud()
    notifier = activities(tmp_path, spec_with_webhooks(), received, cloud=cloud)
    assert notifier.notify_reviewers(reviewers()) == notifier.notify(reviewers())
    assert len(received) == 2 and len(cloud.sent) == 2


# ---- every alert kind, as its rule raises it ------------------------------------------------


def coordinator_alerts() -> dict[str, Notification]:
    rules = CoordinatorRules(new_state(MODEL, TriggerPolicy(cooldown=timedelta(0))))

    def raised(event: TriggerEvent) -> Notification:
        [note] = rules.on_trigger(event, NOW).notifications
        return note

    drift = TriggerKind.DRIFT
    return {
        "data quality alarm": raised(
            TriggerEvent(
                kind=TriggerKind.ALARM,
                event_id="dq",
                alarm=AlarmSignal(name="nulls", category=AlarmCategory.DATA_QUALITY),
            )
        ),
        "high drift": raised(
            TriggerEvent(kind=drift, event_id="high", drift=DriftSignal(score=0.35))
        ),
        "critical drift": raised(
            TriggerEvent(kind=drift, event_id="crit", drift=DriftSignal(score=0.9))
        ),
    }


def schedule_alerts() -> dict[str, Notification]:
    health = ScheduleHealth(
        schedule_id=f"schedule-{MODEL}",
        exists=True,
        overlap=OverlapPolicy.SKIP,
        catchup_window=timedelta(minutes=1),
        missed_total=2,
        skipped_total=3,
    )
    missed = schedule_alert(MODEL, health, NewCounts(missed=2, skipped=3, since="start"), NOW)
    assert missed is not None
    freshness = Freshness(
        model=MODEL, known=True, newest_partition=date(2026, 2, 20), location="data/labelled"
    )
    return {
        "missed and skipped runs": missed,
        "stale data": stale_alert(MODEL, freshness, timedelta(days=2), NOW),
        "undelivered scheduled trigger": delivery_alert(MODEL, "scheduled-1", "unreachable"),
    }


ALERTS = {**coordinator_alerts(), **schedule_alerts()}


@pytest.mark.parametrize("kind", sorted(ALERTS))
def test_every_alert_kind_reaches_the_webhook_and_the_cloud_channel(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEAM_HOOK", "https://hooks.team.test/T1")
    received: Received = []
    cloud = Cloud()
    alert = ALERTS[kind]
    where = activities(tmp_path, spec_with_webhooks(), received, cloud=cloud).notify(alert)
    assert where[:2] == ["log", str(tmp_path / "notifications" / f"{alert.key}.json")]
    assert where[2:] == ["webhook hooks.team.test", "cloud"]
    [(_, posted)] = received
    assert posted["text"].startswith(f"*{alert.subject}*")
    assert cloud.sent == [alert]
