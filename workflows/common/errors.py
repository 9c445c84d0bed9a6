"""The error types activities raise, and how workflows describe a failed activity to people.

`ErrorType` is the contract side of every `ApplicationError.type` our activities raise: retry
policies name them in `non_retryable_error_types`, activities import them to raise them, and a
test checks both ends agree (tests/common/test_contract.py).
"""

from __future__ import annotations

from typing import Final

from temporalio.exceptions import ActivityError, ApplicationError, FailureError


class ErrorType:
    """Every `ApplicationError.type` an activity (or a workflow) of ours raises."""

    # The request or the data are wrong: retrying cannot help.
    INVALID_REQUEST: Final = "InvalidRequest"
    INVALID_DATA: Final = "InvalidData"
    UNKNOWN_MODEL: Final = "UnknownModel"
    INVALID_MODEL_SPEC: Final = "InvalidModelSpec"
    # The model's backend needs an extra this worker was installed without (`[aws]`, `[gcp]`).
    BACKEND_NOT_INSTALLED: Final = "BackendNotInstalled"
    # Training (every backend).
    TRAINING_ENTRYPOINT: Final = "TrainingEntrypointError"
    TRAINING_TIMEOUT: Final = "TrainingTimeout"
    TRAINING_CRASHED: Final = "TrainingProcessCrashed"
    TRAINING_JOB_CONFLICT: Final = "TrainingJobConflict"
    INVALID_TRAINING_JOB: Final = "InvalidTrainingJob"
    TRAINING_STOPPED: Final = "TrainingStopped"
    TRAINING_OUTPUT_MISMATCH: Final = "TrainingOutputMismatch"
    TRAINING_SLOTS_FULL: Final = "TrainingSlotsFull"
    # Registry, evaluation and the golden set.
    REGISTRY: Final = "RegistryError"
    INVALID_EVALUATION_DATA: Final = "InvalidEvaluationData"
    INVALID_MODEL_OUTPUT: Final = "InvalidModelOutput"
    GOLDEN_SET_CHANGED: Final = "GoldenSetChanged"
    # Rollouts.
    TRAFFIC_REFUSED: Final = "TrafficRefused"
    TRAFFIC_MISMATCH: Final = "TrafficMismatch"
    INVALID_CAPTURE_DATA: Final = "InvalidCaptureData"
    # Drift monitoring and schedules.
    DRIFT_PROFILE: Final = "DriftProfileError"
    DRIFT_CHECK_FAILED: Final = "DriftCheckFailed"
    TRIGGER_REJECTED: Final = "TriggerRejected"
    # Notification channels and clouds: retryable unless raised non-retryable.
    WEBHOOK: Final = "WebhookError"
    AWS_UNAVAILABLE: Final = "AwsUnavailable"
    AWS_REQUEST_REJECTED: Final = "AwsRequestRejected"
    GCP_UNAVAILABLE: Final = "GcpUnavailable"
    GCP_REQUEST_REJECTED: Final = "GcpRequestRejected"
    AZURE_UNAVAILABLE: Final = "AzureUnavailable"
    AZURE_REQUEST_REJECTED: Final = "AzureRequestRejected"


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
