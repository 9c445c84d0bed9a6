"""Retry policies shared by several workflows (the ones only one workflow uses live beside it)."""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

from workflows.common.errors import ErrorType

# Every activity heartbeats while its worker lives (workers/liveness.py beats for it), so a
# worker killed mid-activity is noticed within this and the activity retried on another one:
# every step recovers in well under 30 s once a worker is back, whatever its own timeout.
LIVENESS = timedelta(seconds=15)

# Registry and record keeping: retried a few times, quickly.
QUICK_RETRY = RetryPolicy(maximum_attempts=10, maximum_interval=timedelta(minutes=1))
# Reading a model's registered spec: an unknown model or a broken spec needs a person.
SPEC_RETRY = RetryPolicy(
    maximum_attempts=3,
    maximum_interval=timedelta(seconds=30),
    non_retryable_error_types=[ErrorType.UNKNOWN_MODEL, ErrorType.INVALID_MODEL_SPEC],
)
