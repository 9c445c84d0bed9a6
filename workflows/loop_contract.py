"""The contract between the coordinator and the RetrainingLoop child it starts.

The coordinator starts `RetrainingLoop` (id `retrain-<model>-<n>`) with a `RetrainingLoopInput`
and learns how it ended from its result, a `LoopResult`.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AwareDatetime, Field
from temporalio.exceptions import CancelledError, TerminatedError
from temporalio.exceptions import TimeoutError as TemporalTimeoutError

from workflows.triggers import DataArrival, DriftSignal, Severity, StrictModel, TriggerKind


class EventRef(StrictModel):
    """An accepted trigger event, as carried by batches, deferrals and loops."""

    event_id: str
    kind: TriggerKind
    priority: int
    source: str
    received_at: AwareDatetime


class TriggerContext(StrictModel):
    """Why a loop runs: every event it answers, merged (highest priority, union of the data)."""

    events: list[EventRef]
    priority: Annotated[int, Field(ge=1, le=5)]
    kinds: list[TriggerKind]
    data: list[DataArrival] = []
    drift: DriftSignal | None = None
    drift_severity: Severity | None = None
    alarms: list[str] = []
    requires_approval: bool = False
    approval_reasons: list[str] = []
    origin: str


class RetrainingLoopInput(StrictModel):
    model: str
    loop_number: int
    coordinator_id: str
    trigger: TriggerContext
    estimated_cost: float
    policy_version: int


class LoopStatus(StrEnum):
    PROMOTED = "promoted"
    REJECTED_BY_GATE = "rejected_by_gate"
    REJECTED_BY_REVIEWER = "rejected_by_reviewer"
    INSUFFICIENT_DATA = "insufficient_data"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"
    CANCELLED = "cancelled"


class LoopResult(StrictModel):
    loop_id: str
    status: LoopStatus
    summary: Annotated[str, Field(max_length=4000)] = ""
    # Actual cost when the backend knows it; the coordinator corrects the day's spend with it.
    actual_cost: Annotated[float, Field(ge=0)] | None = None
    finished_at: datetime | None = None
    # Reproducibility: the exact retrieval (query and listing) and every dataset's hash.
    retrieval_query: str = ""
    dataset_hashes: dict[str, str] = {}
    candidate_version: str | None = None
    audit_uri: str | None = None


def result_from_failure(loop_id: str, error: BaseException) -> LoopResult:
    """Map a closed-with-error loop to a LoopResult the coordinator can record."""
    cause = getattr(error, "cause", None) or error
    if isinstance(cause, CancelledError):
        status, summary = LoopStatus.CANCELLED, "loop was cancelled"
    elif isinstance(cause, TerminatedError):
        status, summary = LoopStatus.FAILED, f"loop was terminated: {cause.message}"
    elif isinstance(cause, TemporalTimeoutError):
        status, summary = LoopStatus.FAILED, "loop timed out"
    else:
        status, summary = LoopStatus.FAILED, f"loop failed: {cause}"
    return LoopResult(loop_id=loop_id, status=status, summary=summary[:4000])
