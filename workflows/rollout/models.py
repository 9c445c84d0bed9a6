"""The staged rollout: its policy (part of the model spec) and its messages.

`StagedRollout` (`rollout-<model>-<n>`, child of the RetrainingLoop) moves live traffic from the
champion to the challenger in stages on a serving endpoint, runs a canary analysis after each
stage's bake, and rolls back automatically when the challenger misbehaves. The endpoint's
variants are named after registry versions (`v3`, `v4`); every traffic change carries a
`change_id` derived from the rollout id, so a retried activity never applies a change twice,
and a `generation` the endpoint stamps on every request it serves under that change, so the
analysis reads exactly the traffic of one stage (no clocks involved).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from itertools import pairwise
from typing import Annotated, Literal, Self

from pydantic import AwareDatetime, Field, model_validator

from workflows.common.models import Duration, StateModel, StrictModel

VariantName = Annotated[str, Field(pattern=r"^v[1-9][0-9]{0,8}$")]
Weight = Annotated[int, Field(ge=0, le=100)]


def variant_name(version: str) -> str:
    """The endpoint variant serving a registry version: `3` -> `v3`."""
    return f"v{version}"


# ---- policy ----------------------------------------------------------------------------------


class CanaryPolicy(StrictModel):
    """What the canary analysis compares, and how much worse the challenger may be.

    Each check fails only when the challenger is worse by more than its tolerance *and* the
    difference is statistically significant: `alpha` is the family-wise false-fail rate, split
    over the checks that ran (Bonferroni), so identical variants fail at most that often.
    """

    alpha: Annotated[float, Field(gt=0, lt=0.5)] = 0.01
    # Absolute increase of the error rate (model errors, 5xx) tolerated.
    max_error_rate_increase: Annotated[float, Field(ge=0, le=1)] = 0.01
    # Challenger / champion latency ratio tolerated at p50 and at p99.
    max_latency_ratio: Annotated[float, Field(ge=1)] = 1.5
    # Quality on labelled feedback, when at least `min_labelled` labels per variant arrived.
    min_labelled: Annotated[int, Field(ge=1)] = 100
    max_accuracy_drop: Annotated[float, Field(ge=0, le=1)] = 0.03
    max_log_loss_increase: Annotated[float, Field(ge=0)] = 0.1
    # Without enough labels the verdict is inconclusive instead of passing on the rest.
    require_labels: bool = False
    # Jensen-Shannon distance (base 2, 0..1) between the variants' prediction distributions.
    # A shift above it fails unless labelled quality shows the challenger is not worse (a
    # retrained model is expected to predict differently after a concept change).
    max_prediction_shift: Annotated[float, Field(ge=0, le=1)] = 0.1


class StagePlan(StrictModel):
    # The challenger's share of live traffic.
    weight: Annotated[int, Field(ge=1, le=100)]
    bake: Duration = timedelta(minutes=10)
    # Requests per variant the stage's window needs before the analysis can pass.
    min_requests: Annotated[int, Field(ge=1)] = 200


def default_stages() -> list[StagePlan]:
    return [StagePlan(weight=weight) for weight in (5, 25, 50, 100)]


class DeploymentPolicy(StrictModel):
    """How a candidate that passed the gates reaches production.

    staged: shadow (optional), then the stages, each baked and analysed, then promotion in the
    registry and a post-promotion watch with fast rollback. all_at_once: the candidate becomes
    champion in one step (SageMaker's all-at-once), no endpoint involved.
    """

    mode: Literal["staged", "all_at_once"] = "staged"
    # The local endpoint's address (`retrain serve MODEL` listens there).
    endpoint_url: Annotated[str, Field(pattern=r"^https?://[^\s/]+(/[^\s]*)?$")] = (
        "http://127.0.0.1:8081"
    )
    # Shadow stage: the challenger answers mirrored traffic for this long, 0% live.
    shadow: Duration | None = None
    shadow_min_requests: Annotated[int, Field(ge=1)] = 200
    stages: Annotated[list[StagePlan], Field(min_length=1, max_length=20)] = Field(
        default_factory=default_stages
    )
    canary: CanaryPolicy = CanaryPolicy()
    # inconclusive -> bake again (same stage, more samples) up to this many times, then ask a
    # human: approve (continue), promote (skip to 100%) or abort (roll back).
    max_extensions: Annotated[int, Field(ge=0, le=50)] = 3
    # How long a held rollout waits for that human before rolling back (the safe default).
    human_timeout: Duration = timedelta(hours=24)
    # After promotion: the new champion is watched against the previous one's last window.
    watch: Duration | None = timedelta(minutes=30)
    watch_min_requests: Annotated[int, Field(ge=1)] = 200

    @model_validator(mode="after")
    def _stages_grow_to_100(self) -> Self:
        weights = [stage.weight for stage in self.stages]
        if any(later <= earlier for earlier, later in pairwise(weights)):
            raise ValueError(f"stage weights must increase, got {weights}")
        if weights[-1] != 100:
            raise ValueError(f"the last stage must send 100% to the challenger, got {weights}")
        if self.mode == "staged" and self.shadow is None and weights == [100]:
            raise ValueError(
                "a single 100% stage leaves no champion traffic to compare the challenger "
                "with: add a partial stage or a shadow stage, or use mode all_at_once"
            )
        return self


# ---- the endpoint's traffic ----------------------------------------------------------------


class TrafficChange(StrictModel):
    """Set an endpoint's live weights (summing to 100) and shadow variant, idempotently."""

    model: str
    endpoint_url: str
    weights: dict[VariantName, Weight]
    shadow: VariantName | None = None
    # `<rollout id>/<step>`: applying the same change again is a no-op.
    change_id: Annotated[str, Field(min_length=1, max_length=300)]

    @model_validator(mode="after")
    def _valid_split(self) -> Self:
        if sum(self.weights.values()) != 100:
            raise ValueError(f"weights must sum to 100, got {self.weights}")
        if self.shadow is not None and self.weights.get(self.shadow, 0) > 0:
            raise ValueError(f"shadow variant {self.shadow} cannot also take live traffic")
        return self


class EndpointState(StrictModel):
    """What the endpoint reports (GET/PUT /admin/weights)."""

    model: str
    weights: dict[str, int]
    shadow: str | None = None
    # Incremented by every applied change; every captured request carries it.
    generation: int
    change_id: str | None = None
    # Endpoint clock when the generation started (capture partitions to read from).
    updated_at: AwareDatetime
    # Variant -> registry version of every loaded variant.
    variants: dict[str, str] = {}


# ---- scaling -------------------------------------------------------------------------------


class ScalingEvent(StrictModel):
    """One scaling activity of a model's endpoint, as recorded (`<home>/scaling/<model>.jsonl`,
    the loop's audit record, the `retrain_scaling_events_total` metric), so incidents and
    capacity planning can be correlated with it."""

    # The platform's id (SageMaker's ActivityId) or ours (scheduled pre-scaling): dedup key.
    event_id: str
    model: str
    backend: str
    endpoint: str
    variant: str
    at: AwareDatetime
    # `policy`: the platform's autoscaling policy; `scheduled`: a scheduled action (theirs or
    # our pre-scaling).
    kind: Literal["policy", "scheduled"]
    status: str
    description: str
    desired: int | None = None


# ---- canary analysis -----------------------------------------------------------------------


class WindowRef(StrictModel):
    """One variant's requests: those served under `generation` (since `since`, endpoint clock)."""

    variant: VariantName
    generation: int
    since: AwareDatetime
    # Mirrored (shadow) answers rather than live ones.
    shadow: bool = False


class CanaryRequest(StrictModel):
    model: str
    endpoint_url: str
    # The model's capture directory (requests/ and feedback/ partitions), resolved by the worker.
    capture_dir: str
    champion: WindowRef
    challenger: WindowRef
    policy: CanaryPolicy
    seed: int


class VariantSummary(StrictModel):
    variant: str
    requests: int
    errors: int
    error_rate: float
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    labelled: int = 0
    accuracy: float | None = None
    log_loss: float | None = None
    # Mean predicted score (positive-class probability, or the prediction for regressors).
    mean_prediction: float | None = None


class CheckName(StrEnum):
    SAMPLE_SIZE = "sample_size"
    ERROR_RATE = "error_rate"
    LATENCY_P50 = "latency_p50"
    LATENCY_P99 = "latency_p99"
    ACCURACY = "accuracy"
    LOG_LOSS = "log_loss"
    PREDICTION_SHIFT = "prediction_shift"


class CheckStatistic(StrictModel):
    """One comparison's numbers, as measured (the verdict applies the policy to them).

    `difference` is challenger minus champion oriented so that positive means worse (error
    rate, log loss, accuracy drop; latency: the ratio challenger/champion); `p_value` is the
    one-sided test that the challenger is worse; None when the check could not run.
    """

    name: CheckName
    champion: float | None = None
    challenger: float | None = None
    difference: float | None = None
    p_value: float | None = None
    # One-sided p-value that the challenger is *better* (quality checks); what a rollout
    # answering degraded quality needs below alpha.
    p_better: float | None = None
    samples: int = 0
    detail: str = ""


class CanaryStatistics(StrictModel):
    champion: VariantSummary
    challenger: VariantSummary
    checks: list[CheckStatistic]
    shadow: bool = False


class Outcome(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


class CheckResult(StrictModel):
    name: CheckName
    outcome: Outcome
    value: float | None = None
    threshold: float | None = None
    p_value: float | None = None
    alpha: float | None = None
    reason: str


class CanaryVerdict(StrictModel):
    outcome: Outcome
    checks: list[CheckResult]
    statistics: CanaryStatistics
    summary: str


# ---- the workflow's messages ---------------------------------------------------------------


class QualityImprovement(StrictModel):
    """The rollout answers degraded quality: each canary's labelled `check` (accuracy or log
    loss) must show the challenger significantly better than the champion, not merely not
    worse; until enough labels show it the verdict is inconclusive (bake again)."""

    check: Literal["accuracy", "log_loss"]


def canary_improvement(metric: str | None, has_champion: bool) -> QualityImprovement | None:
    """The canary's requirement for a loop answering a degraded `metric` (an evaluation metric
    name): log loss is checked as log loss, any other classification metric as accuracy (the
    canary's labelled checks); regression metrics have no canary check."""
    if metric is None or not has_champion:
        return None
    if metric == "log_loss":
        return QualityImprovement(check="log_loss")
    if metric in ("accuracy", "precision", "recall", "roc_auc"):
        return QualityImprovement(check="accuracy")
    return None


class RolloutInput(StrictModel):
    model: str
    loop_id: str
    rollout_number: int
    candidate_version: str
    champion_version: str | None
    policy: DeploymentPolicy
    capture_dir: str
    improvement: QualityImprovement | None = None
    # The backend can mirror traffic to a shadow variant: at 100% and during the watch the
    # champion answers mirrored traffic, so the canary compares both in the same period.
    mirror_champion: bool = False


class RolloutStatus(StrEnum):
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


class RolloutStep(StrEnum):
    """Where a rollout is; also its `LoopStage` search attribute (`rollout:<step>`)."""

    STARTING = "starting"
    SHADOW = "shadow"
    CANARY = "canary"
    HELD = "held_for_human"
    PROMOTING = "promoting"
    WATCH = "watch"
    ROLLING_BACK = "rolling_back"
    DONE = "done"


RolloutVerb = Literal["pause", "resume", "approve", "promote", "abort"]


class RolloutCommand(StrictModel):
    """pause / resume / approve (continue a held stage) / promote (skip to 100%) / abort."""

    operator: Annotated[str, Field(min_length=1, max_length=200)]
    reason: Annotated[str, Field(max_length=2000)] = ""


class CommandRecord(StrictModel):
    verb: RolloutVerb
    operator: str
    reason: str
    at: datetime
    via: Literal["signal", "update"]
    # Why it was refused (malformed, or meaningless now); None when applied.
    refused: str | None = None


class StageRecord(StateModel):
    """Mutable: the rollout adds bakes and verdicts as they happen."""

    label: str  # "shadow", "5%", ..., "watch"
    weights: dict[str, int]
    shadow: str | None = None
    generation: int | None = None
    started_at: datetime
    bakes: int = 0
    verdicts: list[CanaryVerdict] = []
    ended_at: datetime | None = None


class RolloutResult(StrictModel):
    rollout_id: str
    status: RolloutStatus
    summary: Annotated[str, Field(max_length=4000)]
    champion_version: str | None
    # The verdict that decided (the failing or last passing one).
    verdict: CanaryVerdict | None = None
    stages: list[StageRecord] = []
    commands: list[CommandRecord] = []
    finished_at: datetime | None = None


class RolloutView(StrictModel):
    """The `status` query."""

    rollout_id: str
    step: RolloutStep
    paused: bool
    held: bool
    weights: dict[str, int]
    shadow: str | None
    stages: list[StageRecord]
    commands: list[CommandRecord]
    result: RolloutResult | None = None


def duration_text(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 3600 == 0 and seconds >= 3600:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0 and seconds >= 60:
        return f"{seconds // 60}m"
    return f"{seconds}s"
