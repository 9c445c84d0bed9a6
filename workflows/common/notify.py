"""Sending a reviewer notification from a workflow (loop or rollout), best effort."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from workflows.loop.models import ReviewerNotification


async def notify_reviewers(notification: ReviewerNotification) -> None:
    """Run the `notify_reviewers` activity; a channel being down must not decide an outcome."""
    try:
        await workflow.execute_activity(
            "notify_reviewers",
            notification,
            start_to_close_timeout=timedelta(minutes=1),
            retry_policy=RetryPolicy(maximum_attempts=5),
        )
    except ActivityError as err:
        workflow.logger.warning("notification %s not delivered: %s", notification.key, err.cause)
