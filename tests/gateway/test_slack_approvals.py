"""Slack approvals: Block Kit buttons on a waiting loop's notification, and the gateway's
signed-request handler turning a click into the loop's validated update as the mapped reviewer,
with the Slack identity in the audit record.

Slack itself is played by the tests: requests signed with the app's signing secret exactly as
Slack signs them (`v0:<timestamp>:<body>`, HMAC-SHA256), and the click's `response_url` answered
by an httpx MockTransport (nothing leaves the machine).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.loop.audit import AuditStore
from activities.notifications import WebhookChannel
from activities.slack import APPROVE_ACTION, REJECT_ACTION, approval_message
from starters.gateway.slack import load_signing_secret
from tests.support.gateway_harness import Gateway, gateway, temporal_at, temporal_down
from tests.support.helpers import eventually
from tests.support.loop_harness import (
    awaiting_approval,
    register,
    start_loop,
    with_changes,
    write_dataset,
)
from tests.support.webhook import WebhookReceiver, with_webhook
from workers.worker import build_worker
from workflows.common.notify import Notification
from workflows.loop.models import LoopStatus

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
RESPONSE_URL = "https://hooks.slack.com/actions/T0TEAM/1234/abcdef"
SLACK_REVIEWERS = {"U0ANA": "ana"}


def signed_click(
    action_id: str,
    value: str,
    user: str = "U0ANA",
    name: str = "ana.s",
    secret: str = SECRET,
    at: float | None = None,
    response_url: str = RESPONSE_URL,
) -> tuple[bytes, dict[str, str]]:
    """A `block_actions` request as Slack sends it: form-encoded JSON payload, signed."""
    payload = {
        "type": "block_actions",
        "user": {"id": user, "username": name, "name": name, "team_id": "T0TEAM"},
        "team": {"id": "T0TEAM", "domain": "acme"},
        "api_app_id": "A0APP",
        "response_url": response_url,
        "actions": [
            {"action_id": action_id, "block_id": "retrain-review", "value": value, "type": "button"}
        ],
    }
    body = urlencode({"payload": json.dumps(payload)}).encode()
    stamp = str(int(time.time() if at is None else at))
    digest = hmac.new(secret.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256)
    return body, {
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": f"v0={digest.hexdigest()}",
        "Content-Type": "application/x-www-form-urlencoded",
    }


class SlackSide:
    """The messages the gateway posts back to clicks' response_url."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self.http = httpx.AsyncClient(transport=httpx.MockTransport(self._answer))

    def _answer(self, request: httpx.Request) -> httpx.Response:
        self.posts.append((str(request.url), json.loads(request.content)))
        return httpx.Response(200, text="ok")


def waiting_notification(model: str = "churn", number: int = 3) -> Notification:
    return Notification(
        key=f"retrain-{model}-{number}-1",
        model=model,
        level="warning",
        subject=f"{model}: approval needed (retrain-{model}-{number})",
        body="Why: first deployment\n\n*candidate* v1",
        audience="reviewers",
        loop_id=f"retrain-{model}-{number}",
        awaiting_review=True,
    )


def button_value(model: str = "churn", number: int = 3) -> str:
    return json.dumps({"model": model, "loop_id": f"retrain-{model}-{number}"})


@pytest_asyncio.fixture
async def offline(home: Path) -> AsyncIterator[tuple[Gateway, SlackSide]]:
    slack = SlackSide()
    async with gateway(home, temporal_down(), slack_secret=SECRET, slack_http=slack.http) as gw:
        yield gw, slack


def test_a_waiting_loop_gets_block_kit_buttons_other_notifications_stay_text():
    message = approval_message(waiting_notification())
    assert message["text"].startswith("*churn: approval needed (retrain-churn-3)*")
    header, section, actions, context = message["blocks"]
    assert header["type"] == "header" and section["text"]["type"] == "mrkdwn"
    approve, reject = actions["elements"]
    assert (approve["action_id"], approve["style"], approve["text"]["text"]) == (
        APPROVE_ACTION,
        "primary",
        "Approve",
    )
    assert (reject["action_id"], reject["style"]) == (REJECT_ACTION, "danger")
    assert json.loads(approve["value"]) == {"model": "churn", "loop_id": "retrain-churn-3"}
    assert "retrain approve churn --loop 3" in context["elements"][0]["text"]

    channel = WebhookChannel("https://hooks.example.test/x", approvals=True)
    assert "blocks" in channel.payload(waiting_notification())
    plain = waiting_notification().model_copy(update={"awaiting_review": False})
    assert channel.payload(plain) == {"text": f"*{plain.subject}*\n{plain.body}"}
    # Without Slack reviewers in the spec, no buttons (a click would reach nobody).
    assert WebhookChannel("https://x.test", approvals=False).payload(waiting_notification()) == {
        "text": f"*{plain.subject}*\n{plain.body}"
    }


def test_the_signing_secret_comes_from_the_environment_or_a_file(tmp_path: Path):
    assert load_signing_secret({}) is None
    assert load_signing_secret({"RETRAIN_GATEWAY_SLACK_SIGNING_SECRET": " s3cret \n"}) == "s3cret"
    (tmp_path / "slack").write_text("from-file\n")
    variable = "RETRAIN_GATEWAY_SLACK_SIGNING_SECRET_FILE"
    assert load_signing_secret({variable: str(tmp_path / "slack")}) == "from-file"


async def test_only_slack_signed_fresh_requests_are_heard(offline):
    gw, slack = offline
    body, headers = signed_click(APPROVE_ACTION, button_value())

    async def post(content: bytes, with_headers: dict[str, str]) -> httpx.Response:
        answer: httpx.Response = await gw.http.post(
            "/v1/slack/actions", content=content, headers=with_headers
        )
        return answer

    wrong_key = signed_click(APPROVE_ACTION, button_value(), secret="not-the-secret")[1]
    stale = signed_click(APPROVE_ACTION, button_value(), at=time.time() - 301)[1]
    future = signed_click(APPROVE_ACTION, button_value(), at=time.time() + 301)[1]
    cases = {
        "no headers": (body, {"Content-Type": headers["Content-Type"]}, "missing"),
        "wrong key": (body, wrong_key, "invalid Slack signature"),
        "tampered body": (body + b"&x=1", headers, "invalid Slack signature"),
        "replayed later": (body, stale, "outside the five-minute window"),
        "from the future": (body, future, "outside the five-minute window"),
        "not a time": (body, {**headers, "X-Slack-Request-Timestamp": "soon"}, "Unix time"),
    }
    for what, (content, with_headers, reason) in cases.items():
        answer = await post(content, with_headers)
        assert answer.status_code == 401, what
        assert reason in answer.json()["error"], (what, answer.json())
    assert slack.posts == []
    metrics = (await gw.http.get("/metrics")).text
    assert gw.metric(metrics, "retrain_gateway_requests_total", source="slack", status="401") == 6


async def test_unconfigured_slack_refuses_every_click(home: Path):
    async with gateway(home, temporal_down()) as gw:
        body, headers = signed_click(APPROVE_ACTION, button_value())
        answer = await gw.http.post("/v1/slack/actions", content=body, headers=headers)
    assert answer.status_code == 401
    assert "RETRAIN_GATEWAY_SLACK_SIGNING_SECRET" in answer.json()["error"]


async def test_clicks_that_are_not_our_buttons_are_400(offline):
    gw, _ = offline
    for what, (action, value, reason) in {
        "another app's button": ("other.action", button_value(), "not an Approve / Reject"),
        "garbled value": (APPROVE_ACTION, "{not json", "not a retrain button"),
        "loop of another model": (
            APPROVE_ACTION,
            json.dumps({"model": "churn", "loop_id": "retrain-fraud-3"}),
            "is not a retraining loop of 'churn'",
        ),
    }.items():
        body, headers = signed_click(action, value)
        answer = await gw.http.post("/v1/slack/actions", content=body, headers=headers)
        assert answer.status_code == 400, what
        assert reason in answer.json()["error"], (what, answer.json())
    view = urlencode({"payload": json.dumps({"type": "view_submission"})}).encode()
    stamp = str(int(time.time()))
    digest = hmac.new(SECRET.encode(), f"v0:{stamp}:".encode() + view, hashlib.sha256)
    answer = await gw.http.post(
        "/v1/slack/actions",
        content=view,
        headers={
            "X-Slack-Request-Timestamp": stamp,
            "X-Slack-Signature": f"v0={digest.hexdigest()}",
        },
    )
    assert answer.status_code == 400 and "view_submission" in answer.json()["error"]


async def test_a_slack_user_who_is_no_reviewer_is_told_so_privately(offline, today_spec):
    gw, slack = offline
    register(gw.home, today_spec)
    value = button_value(today_spec.name, 1)
    body, headers = signed_click(APPROVE_ACTION, value, user="U0EVE", name="eve")
    answer = await gw.http.post("/v1/slack/actions", content=body, headers=headers)
    assert answer.status_code == 200
    assert answer.json()["outcome"] == "refused"
    assert "<@U0EVE> is not a reviewer of" in answer.json()["reason"]
    [(url, message)] = slack.posts
    assert url == RESPONSE_URL
    assert message["response_type"] == "ephemeral" and message["replace_original"] is False
    # A model nobody registered: refused the same way, nothing else happens.
    body, headers = signed_click(APPROVE_ACTION, button_value("nosuch", 1))
    unknown = (await gw.http.post("/v1/slack/actions", content=body, headers=headers)).json()
    assert unknown == {
        "outcome": "refused",
        "loop_id": "retrain-nosuch-1",
        "reason": "model 'nosuch' is not registered",
    }


@pytest.fixture
def today_spec(home: Path, model: str):
    spec = write_dataset(home, model, date.today())
    return with_changes(
        with_webhook(spec),
        {
            "loop": {"approval": {"reviewers": ["ana", "li"]}},
            "notifications": {"slack_reviewers": SLACK_REVIEWERS},
        },
    )


@pytest.mark.time_skipping_only
async def test_a_click_approves_the_waiting_loop_as_the_mapped_reviewer(
    env: WorkflowEnvironment,
    client: Client,
    home: Path,
    model: str,
    task_queue: str,
    webhook: WebhookReceiver,
):
    today = (await env.get_current_time()).date()
    spec = with_changes(
        with_webhook(write_dataset(home, model, today)),
        {
            "loop": {"approval": {"reviewers": ["ana", "li"]}},
            "notifications": {"slack_reviewers": SLACK_REVIEWERS},
        },
    )
    register(home, spec)
    slack = SlackSide()
    async with (
        build_worker(client, home=home, task_queue=task_queue),
        gateway(
            home, temporal_at(client), task_queue, slack_secret=SECRET, slack_http=slack.http
        ) as gw,
    ):
        handle = await start_loop(client, task_queue, model)
        await eventually(lambda: awaiting_approval(handle), timeout=120, what="approval")
        await webhook.wait_for(1)
        [message] = webhook.posts
        approve = message["blocks"][2]["elements"][0]
        assert approve["action_id"] == APPROVE_ACTION

        # Slack sends the click of the button the message carried.
        body, headers = signed_click(approve["action_id"], approve["value"])
        answer = await gw.http.post("/v1/slack/actions", content=body, headers=headers)
        assert answer.status_code == 200
        assert answer.json() == {
            "outcome": "approved",
            "loop_id": handle.id,
            "message": f"*Approved* `{handle.id}` as ana (@ana.s in Slack)",
        }
        result = await handle.result()
        # The buttons are replaced by the decision for everyone in the channel.
        [(url, decided)] = slack.posts
        assert url == RESPONSE_URL and decided["replace_original"] is True
        assert "Approved" in decided["text"]
        # A later click (a colleague, a double click) decides nothing: the loop has ended.
        again = await gw.http.post("/v1/slack/actions", content=body, headers=headers)
        assert again.json()["outcome"] == "refused"
        assert again.json()["reason"] == f"no running loop {handle.id}"
        assert slack.posts[-1][1]["response_type"] == "ephemeral"

    assert result.status is LoopStatus.PROMOTED, result.summary
    audit = AuditStore(home).read(model, handle.id)
    assert audit is not None and audit.approval.review is not None
    review = audit.approval.review
    assert (review.decision, review.reviewer, review.via) == ("approve", "ana", "update")
    assert review.comment == "approved in Slack by @ana.s"
    assert review.origin is not None
    assert review.origin.model_dump() == {
        "channel": "slack",
        "user_id": "U0ANA",
        "user_name": "ana.s",
        "team_id": "T0TEAM",
    }


def test_the_spec_maps_slack_users_only_to_allowed_reviewers(home: Path, model: str):
    spec = write_dataset(home, model, date.today())
    with pytest.raises(ValueError, match=r"maps Slack users to \['eve'\]"):
        with_changes(
            spec,
            {
                "loop": {"approval": {"reviewers": ["ana"]}},
                "notifications": {"slack_reviewers": {"U0ANA": "ana", "U0EVE": "eve"}},
            },
        )
    with pytest.raises(ValueError, match="slack_reviewers"):
        with_changes(spec, {"notifications": {"slack_reviewers": {"ana": "ana"}}})
