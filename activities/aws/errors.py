"""AWS errors as activity errors: retry what can succeed later, stop on what cannot.

Throttling and server-side failures are retryable (`AwsUnavailable`): the activity's Temporal
retry policy backs off. Everything the caller got wrong (AccessDenied, validation, a missing
role, bucket or resource) is non-retryable (`AwsRequestRejected`) and carries the provider's
code and message, so the loop ends `failed` saying exactly what AWS said.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from temporalio.exceptions import ApplicationError

from workflows.common.errors import ErrorType

THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "ProvisionedThroughputExceededException",
        "SlowDown",
        "LimitExceededException",
        "ServiceUnavailable",
        "InternalFailure",
        "InternalError",
        "InternalServerError",
        # Application Auto Scaling: another change to the same target is in progress.
        "ConcurrentUpdateException",
    }
)

_T = TypeVar("_T")


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", "Unknown"))


def is_retryable(error: ClientError) -> bool:
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return error_code(error) in THROTTLING_CODES or status >= 500 or status == 429


def translate(error: Exception, doing: str) -> ApplicationError:
    """The activity error for a failed AWS call made while `doing` (e.g. "CreateTrainingJob")."""
    if isinstance(error, ClientError):
        message = error.response.get("Error", {}).get("Message", str(error))
        text = f"{doing}: {error_code(error)}: {message}"
        if is_retryable(error):
            return ApplicationError(text, type=ErrorType.AWS_UNAVAILABLE)
        return ApplicationError(text, type=ErrorType.AWS_REQUEST_REJECTED, non_retryable=True)
    if isinstance(error, NoCredentialsError):
        return ApplicationError(
            f"{doing}: no AWS credentials found",
            type=ErrorType.AWS_REQUEST_REJECTED,
            non_retryable=True,
        )
    if isinstance(error, EndpointConnectionError | ConnectionError | ReadTimeoutError):
        return ApplicationError(f"{doing}: {error}", type=ErrorType.AWS_UNAVAILABLE)
    if isinstance(error, BotoCoreError):
        # Parameter validation and the like: the request itself is wrong.
        return ApplicationError(
            f"{doing}: {error}", type=ErrorType.AWS_REQUEST_REJECTED, non_retryable=True
        )
    raise TypeError(f"not an AWS error: {error!r}")


@contextmanager
def aws_call(doing: str) -> Iterator[None]:
    """Translate AWS errors raised inside the block."""
    try:
        yield
    except (ClientError, BotoCoreError) as error:
        raise translate(error, doing) from error


def call(doing: str, function: Callable[..., _T], **kwargs: object) -> _T:
    with aws_call(doing):
        return function(**kwargs)
