"""Google Cloud errors as activity errors: retry what can succeed later, stop on what cannot.

429 and 5xx are retryable (`GcpUnavailable`): the activity's Temporal retry policy backs off.
Permission, validation and not-found errors are non-retryable (`GcpRequestRejected`) and carry
the provider's message, so the loop ends `failed` saying exactly what Google said.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from google.api_core import exceptions as gexc
from google.auth.exceptions import DefaultCredentialsError
from temporalio.exceptions import ApplicationError

from workflows.common.errors import ErrorType

_RETRYABLE = (
    gexc.TooManyRequests,
    gexc.ServerError,
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.RetryError,
)


def translate(error: Exception, doing: str) -> ApplicationError:
    if isinstance(error, _RETRYABLE):
        return ApplicationError(f"{doing}: {error}", type=ErrorType.GCP_UNAVAILABLE)
    if isinstance(error, gexc.GoogleAPICallError | DefaultCredentialsError):
        return ApplicationError(
            f"{doing}: {error}", type=ErrorType.GCP_REQUEST_REJECTED, non_retryable=True
        )
    if isinstance(error, ConnectionError | TimeoutError):
        return ApplicationError(f"{doing}: {error}", type=ErrorType.GCP_UNAVAILABLE)
    raise TypeError(f"not a Google Cloud error: {error!r}")


@contextmanager
def gcp_call(doing: str) -> Iterator[None]:
    """Translate Google Cloud errors raised inside the block."""
    try:
        yield
    except (gexc.GoogleAPIError, DefaultCredentialsError, ConnectionError, TimeoutError) as error:
        raise translate(error, doing) from error
