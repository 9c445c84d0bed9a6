"""One notification pipeline: the `Notification` message and how a workflow sends it.

Every alert of every workflow (a coordinator's human-review request, a schedule's missed runs, a
loop waiting for approval, a rollout rolled back) is one `Notification`, delivered by the one
`notify` activity (activities/notifications.py) to every channel the model's spec configures:
the log and the outbox always, the spec's Slack-compatible webhooks, and the backend's cloud
channel (SNS). Delivery is best effort: a channel being down must never decide an outcome.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import BeforeValidator
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

from workflows.common.models import StrictModel
from workflows.common.names import ActivityName
from workflows.common.retries import LIVENESS

Level = Literal["info", "warning", "critical"]
# Loops and rollouts used `notify_reviewers` before this pipeline; their histories replay it.
ONE_PIPELINE_PATCH = "one-notification-pipeline"
NOTIFY_TIMEOUT = timedelta(minutes=1)
NOTIFY_RETRY = RetryPolicy(maximum_attempts=5, maximum_interval=timedelta(minutes=1))
# A notification is a pointer (the decision, the loop, the audit record hold the numbers), so
# its text is bounded: one workflow task may schedule dozens, all under the 4 MB a task may send.
MAX_SUBJECT_CHARS = 300
MAX_BODY_CHARS = 4000


def _clip(limit: int) -> BeforeValidator:
    def clip(value: object) -> object:
        if isinstance(value, str) and len(value) > limit:
            return value[: limit - 40] + " ... (truncated; see the full record)"
        return value

    return BeforeValidator(clip)


class Notification(StrictModel):
    """A message for a model's people; `key` makes each delivery idempotent where the channel
    can be (the outbox, FIFO topics).

    `audience`: operators (coordinator and schedule alerts) or the reviewers of one loop (its
    approval gate and rollout). `channel`: escalation also reaches the spec's second webhook.
    """

    key: str
    model: str
    level: Level
    subject: Annotated[str, _clip(MAX_SUBJECT_CHARS)]
    body: Annotated[str, _clip(MAX_BODY_CHARS)]
    audience: Literal["operators", "reviewers"] = "operators"
    loop_id: str | None = None
    # The coordinator decision that raised it.
    decision_seq: int | None = None
    channel: Literal["primary", "escalation"] = "primary"
    # The loop waits for its reviewers: channels that can carry buttons (Slack, when the spec
    # maps Slack users to reviewers) offer Approve / Reject.
    awaiting_review: bool = False


async def notify(notification: Notification) -> bool:
    """Run the `notify` activity; False (and a log line) when it could not be delivered."""
    activity = ActivityName.NOTIFY
    if notification.audience == "reviewers" and not workflow.patched(ONE_PIPELINE_PATCH):
        activity = ActivityName.NOTIFY_REVIEWERS
    try:
        await workflow.execute_activity(
            activity,
            notification,
            start_to_close_timeout=NOTIFY_TIMEOUT,
            heartbeat_timeout=LIVENESS,
            retry_policy=NOTIFY_RETRY,
        )
    except ActivityError as err:
        workflow.logger.error("notification %s not delivered: %s", notification.key, err.cause)
        return False
    return True
