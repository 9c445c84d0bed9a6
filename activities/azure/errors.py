"""Azure errors as activity errors: retry what can succeed later, stop on what cannot.

429 and 5xx (and connection failures) are retryable (`AzureUnavailable`), with Azure's
Retry-After as the next retry's delay, so Temporal waits as long as Azure asked. An
authentication failure (no or a revoked Entra token), a denied role assignment (403), a
validation error or a missing resource is non-retryable (`AzureRequestRejected`) with Azure's
error code and message, so the loop ends `failed` saying exactly what Azure said.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from temporalio.exceptions import ApplicationError

from workflows.common.errors import ErrorType

# The longest Retry-After honoured: past it, the activity's own policy decides.
MAX_RETRY_AFTER = timedelta(minutes=10)


def status_of(error: AzureError) -> int | None:
    return getattr(error, "status_code", None)


def retry_after(error: AzureError) -> timedelta | None:
    """Azure's Retry-After (whole seconds) or retry-after-ms of a refused request."""
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None) or {}
    for name, unit in (("retry-after-ms", 0.001), ("x-ms-retry-after-ms", 0.001)):
        if headers.get(name):
            try:
                return min(timedelta(seconds=float(headers[name]) * unit), MAX_RETRY_AFTER)
            except ValueError:
                pass
    value = headers.get("Retry-After")
    if value and value.strip().isdigit():
        return min(timedelta(seconds=int(value)), MAX_RETRY_AFTER)
    return None


def describe(error: AzureError) -> str:
    code = getattr(getattr(error, "error", None), "code", None)
    message = getattr(error, "message", None) or str(error)
    return f"{code}: {message}" if code else message


def translate(error: AzureError, doing: str) -> ApplicationError:
    status = status_of(error)
    text = f"{doing}: {describe(error)}"
    if isinstance(error, ClientAuthenticationError):
        return ApplicationError(text, type=ErrorType.AZURE_REQUEST_REJECTED, non_retryable=True)
    if isinstance(error, HttpResponseError) and status is not None:
        if status == 429 or status >= 500:
            return ApplicationError(
                text, type=ErrorType.AZURE_UNAVAILABLE, next_retry_delay=retry_after(error)
            )
        return ApplicationError(text, type=ErrorType.AZURE_REQUEST_REJECTED, non_retryable=True)
    if isinstance(error, ServiceRequestError | ServiceResponseError):
        return ApplicationError(text, type=ErrorType.AZURE_UNAVAILABLE)
    return ApplicationError(text, type=ErrorType.AZURE_REQUEST_REJECTED, non_retryable=True)


@contextmanager
def azure_call(doing: str) -> Iterator[None]:
    """Translate Azure errors raised inside the block."""
    try:
        yield
    except AzureError as error:
        raise translate(error, doing) from error
