"""Slack approvals, the message side: Block Kit Approve / Reject buttons on a notification whose
loop waits for its reviewers, and what a button carries back to the gateway.

A click is posted by Slack to the gateway (`starters/gateway/slack.py`), signed with the Slack
app's signing secret; the button's value names the loop, the Slack user is mapped to a reviewer
by the model's spec (`notifications.slack_reviewers`), and the click becomes the loop's validated
`approve` / `reject` update. Blocks are built with slack-sdk's Block Kit models.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ValidationError
from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    ContextBlock,
    HeaderBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)

from workflows.common.models import StrictModel
from workflows.common.names import loop_number, retraining_loop_id, validate_model_name
from workflows.common.notify import Notification

APPROVE_ACTION = "retrain.approve"
REJECT_ACTION = "retrain.reject"
VERBS: dict[str, Literal["approve", "reject"]] = {
    APPROVE_ACTION: "approve",
    REJECT_ACTION: "reject",
}
# Slack's limits: a section's text, a header's text, a button's value.
SECTION_CHARS = 3000
HEADER_CHARS = 150
VALUE_CHARS = 2000


class ButtonValue(StrictModel):
    """What an Approve / Reject button carries: the loop it decides."""

    model: str
    loop_id: str

    def check(self) -> int:
        """The loop's number; ValueError unless `loop_id` is a loop of `model`."""
        validate_model_name(self.model)
        number = loop_number(self.loop_id)
        if retraining_loop_id(self.model, number) != self.loop_id:
            raise ValueError(f"{self.loop_id!r} is not a retraining loop of {self.model!r}")
        return number


def parse_button_value(value: str) -> ButtonValue:
    try:
        button = ButtonValue.model_validate_json(value)
        button.check()
    except (ValidationError, ValueError) as err:
        raise ValueError(f"not a retrain button: {err}") from None
    return button


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def approval_message(notification: Notification) -> dict[str, Any]:
    """The webhook payload of a notification asking the loop's reviewers to decide: the text
    (what Slack shows in notifications and clients without blocks) and the blocks, with the
    Approve / Reject buttons."""
    if notification.loop_id is None:
        raise ValueError("an approval message needs the loop it is about")
    value = ButtonValue(model=notification.model, loop_id=notification.loop_id).model_dump_json()
    if len(value) > VALUE_CHARS:
        raise ValueError("button value over Slack's 2,000 characters")
    blocks = [
        HeaderBlock(text=PlainTextObject(text=_cut(notification.subject, HEADER_CHARS))),
        SectionBlock(text=MarkdownTextObject(text=_cut(notification.body, SECTION_CHARS))),
        ActionsBlock(
            block_id="retrain-review",
            elements=[
                ButtonElement(
                    text="Approve", action_id=APPROVE_ACTION, value=value, style="primary"
                ),
                ButtonElement(text="Reject", action_id=REJECT_ACTION, value=value, style="danger"),
            ],
        ),
        ContextBlock(
            elements=[
                MarkdownTextObject(
                    text=f"`{notification.loop_id}` · or `retrain approve {notification.model}"
                    f" --loop {loop_number(notification.loop_id)} --reviewer YOU`"
                )
            ]
        ),
    ]
    return {
        "text": f"*{notification.subject}*\n{notification.body}",
        "blocks": [block.to_dict() for block in blocks],
    }


def decided_message(text: str) -> dict[str, Any]:
    """What replaces the buttons once a reviewer decided (posted to the click's response_url)."""
    section = SectionBlock(text=MarkdownTextObject(text=_cut(text, SECTION_CHARS)))
    return {"replace_original": True, "text": text, "blocks": [section.to_dict()]}


def refusal_message(text: str) -> dict[str, Any]:
    """A refusal only the clicking user sees; the buttons stay for someone else."""
    return {"replace_original": False, "response_type": "ephemeral", "text": text}
