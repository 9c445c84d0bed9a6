"""Slack approvals, the gateway side: `POST /v1/slack/actions`, the Request URL of the Slack
app's interactivity, turns an Approve / Reject click into the loop's validated update.

1. The request must be Slack's: `X-Slack-Signature` is the HMAC-SHA256 of `v0:<timestamp>:<body>`
   under the app's signing secret (`RETRAIN_GATEWAY_SLACK_SIGNING_SECRET` or `..._FILE`),
   compared in constant time by slack-sdk's `SignatureVerifier`, and `X-Slack-Request-Timestamp`
   must be within five minutes of now (a replayed click is refused). No secret: every request
   is refused (401), as for the event sources.
2. The button's value names the loop (`activities/slack.py`); the clicking Slack user must be
   mapped to a reviewer by the model's spec (`notifications.slack_reviewers`).
3. The loop's `approve` / `reject` update runs as that reviewer, with the Slack identity as the
   review's `origin` (kept in the audit record); the loop's validator still decides (allow-list,
   already decided, not waiting).
4. The outcome goes back to the message through the click's `response_url`: the buttons are
   replaced by the decision, or the clicking user alone sees why it was refused. Slack wants an
   answer within three seconds: a decision that takes longer is answered `pending` and posted
   when it comes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs

import httpx
from pydantic import ValidationError
from slack_sdk.signature import Clock, SignatureVerifier
from temporalio.client import WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.service import RPCError

from activities.slack import (
    VERBS,
    ButtonValue,
    decided_message,
    parse_button_value,
    refusal_message,
)
from activities.specs import SpecError, SpecStore
from starters.api.loops import Loops

# The same secret reading as the event sources' (value or `_FILE`, never empty).
from starters.gateway.auth import _secret
from starters.gateway.temporal import TemporalLink, TemporalUnavailable
from workflows.loop.models import ReviewDecision, ReviewOrigin

logger = logging.getLogger(__name__)

SIGNING_SECRET_VARIABLE = "RETRAIN_GATEWAY_SLACK_SIGNING_SECRET"
# Slack's advice: refuse requests whose timestamp is more than five minutes away from now.
TIMESTAMP_WINDOW_SECONDS = 300
# Slack shows an error to the user when the answer takes longer than three seconds.
ANSWER_WITHIN_SECONDS = 2.5


def load_signing_secret(environ: Mapping[str, str]) -> str | None:
    """The Slack app's signing secret, from the variable or the file its `_FILE` twin names."""
    secret = _secret(environ, SIGNING_SECRET_VARIABLE)
    return None if secret is None else secret.decode()


class SlackRefused(Exception):
    """A request answered with a 4xx: not Slack's, or not a click we know."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Click:
    verb: Literal["approve", "reject"]
    button: ButtonValue
    user_id: str
    user_name: str
    team_id: str | None
    response_url: str | None


def verify(
    secret: str | None, headers: Mapping[str, str], body: bytes, now: Callable[[], float]
) -> None:
    """SlackRefused(401) unless the request is signed by the app, within the time window."""
    if secret is None:
        raise SlackRefused(
            401, f"Slack approvals are not configured: set {SIGNING_SECRET_VARIABLE}"
        )
    stamp, signature = headers.get("x-slack-request-timestamp"), headers.get("x-slack-signature")
    if not stamp or not signature:
        raise SlackRefused(401, "missing X-Slack-Request-Timestamp or X-Slack-Signature")
    try:
        sent = int(stamp)
    except ValueError:
        raise SlackRefused(401, "X-Slack-Request-Timestamp is not a Unix time") from None
    if abs(now() - sent) > TIMESTAMP_WINDOW_SECONDS:
        raise SlackRefused(401, "request timestamp outside the five-minute window")

    class _At(Clock):
        def now(self) -> float:
            return float(sent)  # the window was checked above, with a reason of its own

    if not SignatureVerifier(secret, clock=_At()).is_valid(body, stamp, signature):
        raise SlackRefused(401, "invalid Slack signature")


def parse_click(body: bytes) -> Click:
    """The click of a `block_actions` payload (form field `payload`, JSON)."""
    try:
        fields = parse_qs(body.decode(), strict_parsing=True)
        payload: Any = json.loads(fields["payload"][0])
    except (UnicodeDecodeError, ValueError, KeyError) as err:
        raise SlackRefused(400, f"not a Slack interaction payload: {err}") from None
    if not isinstance(payload, dict) or payload.get("type") != "block_actions":
        kind = payload.get("type") if isinstance(payload, dict) else None
        raise SlackRefused(400, f"unsupported Slack interaction {kind!r}: expected block_actions")
    actions, user = payload.get("actions"), payload.get("user")
    if not isinstance(actions, list) or not actions or not isinstance(user, dict):
        raise SlackRefused(400, "block_actions without actions or user")
    action = actions[0]
    verb = VERBS.get(action.get("action_id", "")) if isinstance(action, dict) else None
    if verb is None or not isinstance(user.get("id"), str):
        raise SlackRefused(400, "not an Approve / Reject button of ours")
    try:
        button = parse_button_value(str(action.get("value", "")))
    except ValueError as err:
        raise SlackRefused(400, str(err)) from None
    team = payload.get("team")
    url = payload.get("response_url")
    return Click(
        verb=verb,
        button=button,
        user_id=user["id"],
        user_name=str(user.get("username") or user.get("name") or ""),
        team_id=team.get("id") if isinstance(team, dict) else None,
        response_url=url if isinstance(url, str) else None,
    )


def _is_slack_url(url: str) -> bool:
    # The response_url comes in a signed request; still, only Slack's own hosts are posted to.
    parsed = httpx.URL(url)
    return parsed.scheme == "https" and (
        parsed.host == "slack.com" or parsed.host.endswith(".slack.com")
    )


class SlackActions:
    """The `/v1/slack/actions` endpoint's logic; `http` posts outcomes to Slack."""

    def __init__(
        self,
        home: Path,
        secret: str | None,
        link: TemporalLink,
        http: httpx.AsyncClient | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.home = home
        self.secret = secret
        self.link = link
        self.http = http or httpx.AsyncClient(timeout=10.0)
        self.now = now
        self._background: set[asyncio.Task[None]] = set()

    async def handle(self, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        """The answer's JSON for a verified click (Slack ignores it; people and tests read
        it); SlackRefused for a request that is not one."""
        verify(self.secret, headers, body, self.now)
        click = parse_click(body)
        decision = asyncio.create_task(self._decide(click))
        done, _ = await asyncio.wait({decision}, timeout=ANSWER_WITHIN_SECONDS)
        if not done:  # the outcome is posted to Slack when it comes
            self._background.add(task := asyncio.create_task(self._post_later(decision, click)))
            task.add_done_callback(self._background.discard)
            return {"outcome": "pending", "loop_id": click.button.loop_id}
        outcome, text = decision.result()
        await self._post(click, outcome, text)
        return _answer(click, outcome, text)

    async def close(self) -> None:
        for task in list(self._background):
            await task
        await self.http.aclose()

    async def _post_later(self, decision: asyncio.Task[tuple[str, str]], click: Click) -> None:
        outcome, text = await decision
        await self._post(click, outcome, text)

    async def _decide(self, click: Click) -> tuple[str, str]:
        """(outcome, text): `approved` / `rejected`, or `refused` with the reason."""
        button = click.button
        try:
            spec = SpecStore(self.home).get(button.model)
        except (SpecError, ValueError) as err:
            return "refused", f"the spec of {button.model} does not load: {err}"
        if spec is None:
            return "refused", f"model {button.model!r} is not registered"
        reviewer = spec.notifications.slack_reviewers.get(click.user_id)
        if reviewer is None:
            return "refused", (
                f"<@{click.user_id}> is not a reviewer of {button.model}: map your Slack user "
                "to a reviewer in the spec's notifications.slack_reviewers"
            )
        origin = ReviewOrigin(
            channel="slack", user_id=click.user_id, user_name=click.user_name, team_id=click.team_id
        )
        name = f"@{click.user_name}" if click.user_name else click.user_id
        review = ReviewDecision(
            reviewer=reviewer, comment=f"{click.verb}d in Slack by {name}", origin=origin
        )
        try:
            client = (await self.link.coordinators()).client
            record = await Loops(client, self.home).review(
                button.model, click.verb, review, button.check()
            )
        except TemporalUnavailable as err:
            return "refused", f"Temporal is unreachable ({err}): try again, or `retrain approve`"
        except WorkflowUpdateFailedError as err:
            return "refused", str(getattr(err.cause, "message", err.cause))
        except WorkflowUpdateRPCTimeoutOrCancelledError:
            return "refused", "no worker answered in time: try again"
        except (LookupError, ValidationError) as err:
            return "refused", str(err)
        except RPCError as err:
            return "refused", f"Temporal error: {err.message}"
        verdict = "Approved" if record.decision == "approve" else "Rejected"
        return f"{record.decision}d", (
            f"*{verdict}* `{button.loop_id}` as {record.reviewer} ({name} in Slack)"
        )

    async def _post(self, click: Click, outcome: str, text: str) -> None:
        url = click.response_url
        if url is None or not _is_slack_url(url):
            logger.warning("slack: %s %s, but no Slack response_url to tell", outcome, text)
            return
        message = refusal_message(text) if outcome == "refused" else decided_message(text)
        try:
            answer = await self.http.post(url, json=message)
            if answer.status_code >= 400:
                logger.warning("slack: response_url answered %d", answer.status_code)
        except httpx.HTTPError as err:
            logger.warning("slack: could not post the outcome: %s", err)


def _answer(click: Click, outcome: str, text: str) -> dict[str, Any]:
    answer: dict[str, Any] = {"outcome": outcome, "loop_id": click.button.loop_id}
    answer["reason" if outcome == "refused" else "message"] = text
    return answer
