"""The audit record of one retraining loop: the whole story in one JSON document.

The loop builds it as it goes (its `status` query returns it as it stands) and writes it when
it ends, whatever the outcome: `retrain audit MODEL [N]` prints it.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from workflows.common.models import StateModel, StrictModel
from workflows.loop.models import (
    DataWindow,
    EvaluationReport,
    GateVerdict,
    GoldenSet,
    LoopResult,
    ModelVersion,
    Promotion,
    ReviewOrigin,
    TrainingResult,
    TriggerContext,
)
from workflows.rollout.models import RolloutResult, ScalingEvent
from workflows.slots.models import SlotWait


class LoopStage(StrEnum):
    """Where a loop is; also its `LoopStage` search attribute."""

    STARTED = "started"
    DATA_WINDOW = "data_window"
    WAITING_FOR_SLOT = "waiting_for_slot"
    TRAINING = "training"
    REGISTERING = "registering"
    EVALUATING = "evaluating"
    AWAITING_APPROVAL = "awaiting_approval"
    DEPLOYING = "deploying"
    DONE = "done"


class StageEntry(StrictModel):
    stage: LoopStage
    at: datetime


ReviewVerb = Literal["approve", "reject"]


class ReviewRecord(StrictModel):
    decision: ReviewVerb
    reviewer: str
    comment: str = ""
    at: datetime
    via: Literal["signal", "update"]
    # A review sent for a person by a bridge (Slack): who, there.
    origin: ReviewOrigin | None = None


class IgnoredReview(StrictModel):
    """An approve/reject signal that failed the checks: recorded, never applied."""

    decision: ReviewVerb
    reviewer: str | None
    at: datetime
    reason: str


class ApprovalRecord(StateModel):
    required: bool = False
    reasons: list[str] = []
    requested_at: datetime | None = None
    review: ReviewRecord | None = None
    ignored: list[IgnoredReview] = []
    reminders_sent: int = 0
    escalated_at: datetime | None = None
    timed_out_at: datetime | None = None


class DeploymentRecord(StateModel):
    mode: str
    promotion: Promotion | None = None
    verdict: str = ""
    # Staged: the StagedRollout child and how it ended (stages, verdicts, commands).
    rollout_id: str | None = None
    rollout: RolloutResult | None = None
    # The drift monitor's reference profile rebuilt for the new champion (or why not).
    reference_profile: str | None = None


class AuditRecord(StateModel):
    """Mutable: the loop fills it in as it goes."""

    loop_id: str
    loop_number: int
    model: str
    started_at: datetime
    # The coordinator's decision: the events it answers and why it started this loop.
    coordinator_id: str
    trigger: TriggerContext
    estimated_cost: float
    policy_version: int
    spec_hash: str | None = None
    data_window: DataWindow | None = None
    golden_set: GoldenSet | None = None
    # The wait for a slot under the global limit of concurrent trainings (none: no limit).
    training_slot: SlotWait | None = None
    training: TrainingResult | None = None
    champion: ModelVersion | None = None
    candidate: ModelVersion | None = None
    evaluation: EvaluationReport | None = None
    verdict: GateVerdict | None = None
    approval: ApprovalRecord = ApprovalRecord()
    deployment: DeploymentRecord | None = None
    stages: list[StageEntry] = []
    notifications: list[str] = []
    outcome: LoopResult | None = None
    # The endpoint's scaling activities while the loop ran (filled in when the record is
    # written, from the scaling log: the workflow never sets it).
    scaling_events: list[ScalingEvent] = []


class LoopView(StrictModel):
    """The `status` query: the stage, whether a human is needed, and the record so far."""

    stage: LoopStage
    awaiting_approval: bool
    record: AuditRecord
