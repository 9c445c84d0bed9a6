"""How workflows describe a failed activity to people (summaries, notifications)."""

from __future__ import annotations

from temporalio.exceptions import ActivityError, ApplicationError, FailureError


def activity_failure(err: ActivityError) -> str:
    """What the activity raised (its ApplicationError), not the retry wrapper around it nor the
    library error it wraps."""
    cause: BaseException = err
    while (
        isinstance(cause, FailureError)
        and not isinstance(cause, ApplicationError)
        and cause.cause is not None
    ):
        cause = cause.cause
    if isinstance(cause, ApplicationError) and cause.type:
        return f"{cause.type}: {cause.message}"
    return str(cause)
