"""ModelSpec: everything about one model, described once and validated before anything runs.

A spec is a TOML or JSON file checked by `ModelSpec` (`retrain models validate|register`). The
registered copy lives at `<home>/models/<name>.json`; each loop loads it once at its start and
records its content hash, so a loop always runs under one spec version.

Paths in `data` are relative to the retrain home (`$RETRAIN_HOME`, default `.retrain`) unless
absolute.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, Field, model_validator

from workflows.common.models import Duration, StrictModel
from workflows.common.names import validate_model_name
from workflows.coordinator.policy import TriggerPolicy
from workflows.drift.models import DriftPolicy
from workflows.drift.performance_models import PerformancePolicy
from workflows.rollout.models import DeploymentPolicy
from workflows.spec.azure import AzureSettings
from workflows.spec.backends import BACKEND_NAMES, CLOUD_BACKENDS, backend_info
from workflows.spec.common import CloudSettings
from workflows.spec.metrics import Metric as Metric
from workflows.spec.metrics import Task as Task
from workflows.spec.sagemaker import SageMakerSettings
from workflows.spec.vertex import VertexSettings

ColumnName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z_][\w.-]*$")]
HyperparameterValue = str | int | float | bool


class FeatureKind(StrEnum):
    NUMERIC = "numeric"
    CATEGORICAL = "categorical"


class Feature(StrictModel):
    name: ColumnName
    kind: FeatureKind = FeatureKind.NUMERIC


class DataSources(StrictModel):
    """Where the model's data lives (local backend: files under the retrain home).

    `labelled` is a directory of daily partitions `date=YYYY-MM-DD/*.parquet`; the baseline
    holdout and the golden set are single Parquet files that never change once registered.
    """

    labelled: str
    baseline_holdout: str
    golden_set: str
    timestamp_column: ColumnName = "event_time"
    # The endpoint's data capture (requests and feedback); default: `captured` beside
    # `labelled` (see activities/local/capture.py).
    captured: str | None = None

    @property
    def capture_location(self) -> str:
        if self.captured:
            return self.captured
        if "://" in self.labelled:  # a bucket uri: PurePosixPath would fold its `//`
            return f"{self.labelled.rstrip('/').rsplit('/', 1)[0]}/captured"
        return str(PurePosixPath(self.labelled).parent / "captured")


class DataWindowPolicy(StrictModel):
    days: Annotated[int, Field(ge=1, le=3650)] = 30
    min_rows: Annotated[int, Field(ge=1)] = 500
    # Share of the window's days that must have data.
    min_days_fraction: Annotated[float, Field(ge=0, le=1)] = 0.8
    # Label balance bounds (classification): every class's share must lie within them.
    min_class_share: Annotated[float, Field(ge=0, le=1)] = 0.02
    max_class_share: Annotated[float, Field(ge=0, le=1)] = 0.98
    # Share of rows in the window whose label has arrived.
    min_label_coverage: Annotated[float, Field(ge=0, le=1)] = 0.9
    # Feedback-loop prevention: production rows vs immutable baseline rows in the training set.
    production_share: Annotated[float, Field(gt=0, le=1)] = 0.7
    # Share of the production window held out (by a stable hash of the row) for evaluation.
    holdout_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2
    # After a regime change (a change point from the performance or drift monitor) the window
    # starts at the change and the baseline rows are this share of the new-regime production
    # rows: a floor against feedback loops, not a majority of old-regime rows.
    regime_baseline_share: Annotated[float, Field(ge=0, le=1)] = 0.1
    # The newest share of the holdout (by timestamp) is also evaluated apart: the most recent
    # labelled data, never trained on.
    recent_share: Annotated[float, Field(gt=0, le=1)] = 0.25
    # Captured live traffic whose labels arrived in the last `replay_days` (since the regime
    # change, if later) is replayed through both models: at most `replay_max_rows` rows, and
    # only with at least `replay_min_rows`.
    replay_days: Annotated[int, Field(ge=0, le=365)] = 7
    replay_max_rows: Annotated[int, Field(ge=1)] = 20_000
    replay_min_rows: Annotated[int, Field(ge=1)] = 50

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if self.min_class_share >= self.max_class_share:
            raise ValueError("min_class_share must be below max_class_share")
        return self


class TrainingSpec(StrictModel):
    # `module:function`, like SageMaker script mode; receives a TrainingRequest.
    entrypoint: Annotated[str, Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")] = (
        "activities.default_training:train"
    )
    hyperparameters: dict[str, HyperparameterValue] = {}
    timeout: Duration = timedelta(hours=2)


class EvaluationPolicy(StrictModel):
    # The candidate must not be worse than the champion on each of these (on the holdout).
    metrics: Annotated[list[Metric], Field(min_length=1)] = [Metric.ROC_AUC, Metric.LOG_LOSS]
    # Minimum improvement, in the metric's own units, oriented so that positive is better.
    min_improvement: float = 0.0
    # Also require the bootstrap interval of the delta to lie above min_improvement.
    require_significant: bool = False
    bootstrap_samples: Annotated[int, Field(ge=100, le=20_000)] = 1000
    confidence: Annotated[float, Field(gt=0.5, lt=1)] = 0.95


class GuardrailPolicy(StrictModel):
    golden_metric: Metric = Metric.ACCURACY
    golden_floor: float = 0.0
    # |candidate - champion| on the baseline evaluation slice, for baseline_metric.
    baseline_metric: Metric = Metric.ACCURACY
    max_baseline_drift: Annotated[float, Field(ge=0)] = 0.05
    # KL divergence of the candidate's prediction distribution from the champion's.
    max_prediction_kl: Annotated[float, Field(ge=0)] = 0.25
    # Largest share of the candidate's errors that may fall in one segment.
    max_error_concentration: Annotated[float, Field(gt=0, le=1)] = 0.7
    # A passed check within this fraction of its limit is a near miss (may require approval).
    near_miss_margin: Annotated[float, Field(ge=0, le=1)] = 0.1


class ApprovalPolicy(StrictModel):
    always: bool = False
    first_deployment: bool = True
    on_high_drift: bool = True
    on_near_miss: bool = True
    # Who may approve or reject; empty means anyone (Temporal's own auth still applies).
    reviewers: list[Annotated[str, Field(min_length=1, max_length=200)]] = []
    reminder_every: Duration = timedelta(hours=4)
    escalate_after: Duration = timedelta(hours=24)
    timeout: Duration = timedelta(hours=72)
    on_timeout: Literal["reject", "keep_waiting"] = "reject"


EnvVarName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)]
# A Slack member id (U...) or an Enterprise Grid one (W...).
SlackUserId = Annotated[str, Field(pattern=r"^[UW][A-Z0-9]{2,20}$")]


class NotificationSpec(StrictModel):
    """Reviewer channels besides the log (always on) and the local outbox.

    Webhook URLs are secrets, so the spec names the environment variables that hold them (read
    by the worker when it sends) and they never enter workflow history. A Slack-compatible
    incoming webhook receives `{"text": ...}`.
    """

    webhook_url_env: EnvVarName | None = None
    # The second channel for escalations (an approval left waiting too long).
    escalation_webhook_url_env: EnvVarName | None = None
    # Slack approvals: Slack user ids (U0123ABCD) and the reviewer each one is. When set, a loop
    # waiting for approval posts Block Kit Approve / Reject buttons to the webhooks above (an
    # incoming webhook of a Slack app with interactivity on, pointed at the gateway's
    # /v1/slack/actions); a click becomes the same validated `approve` / `reject` update, as
    # that reviewer. A Slack user not listed here cannot decide.
    slack_reviewers: dict[SlackUserId, Annotated[str, Field(min_length=1, max_length=200)]] = {}


class LoopPolicy(StrictModel):
    window: DataWindowPolicy = DataWindowPolicy()
    evaluation: EvaluationPolicy = EvaluationPolicy()
    guardrails: GuardrailPolicy = GuardrailPolicy()
    approval: ApprovalPolicy = ApprovalPolicy()
    deployment: DeploymentPolicy = DeploymentPolicy()


def _known_backend(name: str) -> str:
    return backend_info(name).name


# One of the registry's names (workflows/spec/backends.py).
BackendName = Annotated[
    str,
    Field(json_schema_extra={"enum": list(BACKEND_NAMES)}),
    AfterValidator(_known_backend),
]


class ModelSpec(StrictModel):
    name: str
    backend: BackendName = "local"
    # The chosen cloud backend's settings, in the field named like it (required for it, refused
    # for the others): one per cloud backend of the registry.
    sagemaker: SageMakerSettings | None = None
    vertex: VertexSettings | None = None
    azure: AzureSettings | None = None
    task: Task = Task.CLASSIFICATION
    features: Annotated[list[Feature], Field(min_length=1, max_length=2000)]
    label: ColumnName
    # Column that names each row's segment, for the systematic-error guardrail.
    segment_column: ColumnName | None = None
    data: DataSources
    training: TrainingSpec = TrainingSpec()
    trigger_policy: TriggerPolicy = TriggerPolicy()
    loop: LoopPolicy = LoopPolicy()
    drift: DriftPolicy = DriftPolicy()
    # Quality on labelled traffic (captured answers joined with their feedback), checked by the
    # drift monitor beside drift.
    performance: PerformancePolicy = PerformancePolicy()
    notifications: NotificationSpec = NotificationSpec()

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        validate_model_name(self.name)
        names = [feature.name for feature in self.features]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"duplicate feature names: {', '.join(duplicates)}")
        reserved = {self.label, self.data.timestamp_column}
        if clashes := reserved.intersection(names):
            raise ValueError(f"features cannot include the label or timestamp: {sorted(clashes)}")
        if self.segment_column == self.label:
            raise ValueError("segment_column cannot be the label")
        metrics = [
            *self.loop.evaluation.metrics,
            self.loop.guardrails.golden_metric,
            self.loop.guardrails.baseline_metric,
            *self.performance.metrics,
        ]
        self._check_backend()
        allowed = self.loop.approval.reviewers
        slack = self.notifications.slack_reviewers
        if allowed and (outside := sorted(set(slack.values()).difference(allowed))):
            raise ValueError(
                f"notifications.slack_reviewers maps Slack users to {outside}, who are not on "
                "loop.approval.reviewers"
            )
        if unknown := sorted(set(self.drift.features).difference(names)):
            raise ValueError(f"drift.features names unknown features: {unknown}")
        wrong = sorted({m.value for m in metrics if m.task is not self.task})
        if wrong:
            raise ValueError(f"metrics {wrong} do not apply to a {self.task.value} model")
        if self.trigger_policy.mode == "adaptive" and not self.performance.enabled:
            raise ValueError(
                'trigger_policy.mode "adaptive" learns from the performance monitor\'s labelled '
                'traffic: performance.enabled must be true (or use mode "rules")'
            )
        return self

    def _check_backend(self) -> None:
        for cloud in CLOUD_BACKENDS:
            given = getattr(self, cloud.name) is not None
            if cloud.name == self.backend and not given:
                raise ValueError(f"backend {cloud.name} needs its settings in '{cloud.name}'")
            if cloud.name != self.backend and given:
                raise ValueError(
                    f"'{cloud.name}' settings given, but the backend is {self.backend}"
                )
        backend = backend_info(self.backend)
        if not backend.shadow_deployments and self.loop.deployment.shadow is not None:
            raise ValueError(
                f"{backend.name} endpoints have no shadow deployments: "
                "remove loop.deployment.shadow"
            )
        # Data on a cloud store is read through that cloud's backend only.
        wanted = backend.data_scheme
        for field, uri in self.data.model_dump(exclude_none=True).items():
            scheme = uri.split("://", 1)[0] + "://" if "://" in str(uri) else None
            if scheme is not None and scheme != wanted:
                raise ValueError(
                    f"data.{field} {uri!r} cannot be read by the {self.backend} backend"
                )

    @property
    def backend_settings(self) -> CloudSettings | None:
        """The settings of the model's backend; None for the local one."""
        settings: CloudSettings | None = getattr(self, self.backend, None)
        return settings

    @property
    def feature_names(self) -> list[str]:
        return [feature.name for feature in self.features]

    def content_hash(self) -> str:
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()
