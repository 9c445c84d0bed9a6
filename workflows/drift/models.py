"""Drift monitoring messages: the policy in the model spec, the report, the monitor's contract.

Field names are the public JSON contract (`retrain drift report --json`, the `status` query of
`drift-<model>`, the report files beside the HTML page).
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import AwareDatetime, Field, model_validator

from workflows.common.models import Duration, StateModel, StrictModel
from workflows.coordinator.triggers import Severity
from workflows.drift.performance_models import (
    PerformancePolicy,
    PerformanceReport,
    PerformanceStatus,
    PerformanceVerdict,
    VolumeDecision,
)

Probability = Annotated[float, Field(ge=0, le=1)]


class DriftStatistic(StrEnum):
    """The per-column effect size that thresholds, weights and the overall score use.

    Both are defined for numeric and categorical columns: PSI on the reference's quantile bins
    (or categories), Jensen-Shannon distance (base 2, in [0, 1]) on the same bins.
    """

    PSI = "psi"
    JS = "js"


class ColumnRule(StrictModel):
    """Per-column overrides: a column drifts when its score reaches `threshold` (and its shift is
    significant); its contribution to the overall score is `weight` x score."""

    threshold: Annotated[float, Field(gt=0)] | None = None
    weight: Annotated[float, Field(ge=0, le=100)] = 1.0


class DriftPolicy(StrictModel):
    enabled: bool = True
    # How often `drift-<model>` checks, and how much captured traffic each check reads.
    interval: Duration = timedelta(hours=1)
    window: Duration = timedelta(hours=24)
    # Fewer current rows than this: the report says insufficient data and nothing is sent.
    min_rows: Annotated[int, Field(ge=10)] = 500
    # Labels arrive late and sparse: label drift is assessed from this many labels up.
    min_labels: Annotated[int, Field(ge=10)] = 100
    statistic: DriftStatistic = DriftStatistic.PSI
    # Default per-column threshold on `statistic` (PSI 0.1: the conventional "moderate shift").
    threshold: Annotated[float, Field(gt=0)] = 0.1
    # A column's shift must also be significant (KS / chi-square), at alpha split over the
    # columns tested (Bonferroni): with a million rows any difference is "significant", with a
    # hundred a large PSI can be noise; both must agree.
    alpha: Annotated[float, Field(gt=0, lt=1)] = 0.01
    # Reference quantile bins for numeric PSI / KL / JS.
    bins: Annotated[int, Field(ge=2, le=100)] = 10
    # Absolute increase of a column's missing-value rate that is a data-quality problem.
    max_missing_increase: Annotated[float, Field(gt=0, le=1)] = 0.1
    features: dict[str, ColumnRule] = {}
    prediction: ColumnRule = ColumnRule()
    label: ColumnRule = ColumnRule()

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if self.interval < timedelta(minutes=1):
            raise ValueError("drift interval must be at least 1 minute")
        if self.window < timedelta(minutes=1):
            raise ValueError("drift window must be at least 1 minute")
        return self

    def rule(self, role: ColumnRole, name: str) -> ColumnRule:
        if role is ColumnRole.PREDICTION:
            return self.prediction
        if role is ColumnRole.LABEL:
            return self.label
        return self.features.get(name, ColumnRule())


class ColumnRole(StrEnum):
    FEATURE = "feature"
    PREDICTION = "prediction"
    LABEL = "label"


class ColumnKind(StrEnum):
    NUMERIC = "numeric"
    CATEGORICAL = "categorical"


class ColumnStatus(StrEnum):
    OK = "ok"
    DRIFTED = "drifted"
    DATA_QUALITY = "data_quality"
    INSUFFICIENT_DATA = "insufficient_data"


class ColumnDrift(StrictModel):
    """One column's statistics, reference vs current. Statistics that do not apply are None."""

    name: str
    role: ColumnRole
    kind: ColumnKind
    status: ColumnStatus
    n_reference: int
    n_current: int
    missing_reference: Probability
    missing_current: Probability
    # Two-proportion test of the missing rates (reference vs current).
    missing_pvalue: Probability | None = None
    # Both kinds, on reference quantile bins (numeric) or categories (categorical).
    psi: float | None = None
    kl: float | None = None
    js: float | None = None
    # Numeric.
    ks_statistic: float | None = None
    ks_pvalue: float | None = None
    wasserstein: float | None = None
    # Categorical: a contingency test of the two samples, with a bucket for unseen categories.
    chi2: float | None = None
    chi2_pvalue: float | None = None
    chi2_dof: int | None = None
    cramers_v: float | None = None
    unseen_share: Probability | None = None
    # The policy's view: score = the configured statistic, pvalue = KS or chi-square.
    score: float | None = None
    pvalue: float | None = None
    threshold: float
    weight: float
    significant: bool = False
    issues: list[str] = []


class Histogram(StrictModel):
    """A column's distribution for people to look at: shares per bin or category, reference vs
    current. Numeric columns use the bins PSI, KL and JS compare: the reference's quantile bins
    (about the same share of reference rows in each), whose interior edges are `edges`."""

    labels: list[str]
    reference: list[Probability]
    current: list[Probability]
    # Numeric columns: the interior bin edges, increasing (bin i is (edges[i-1], edges[i]]).
    edges: list[float] = []


class ReportStatus(StrEnum):
    OK = "ok"
    DRIFT = "drift"
    DATA_QUALITY = "data_quality"
    INSUFFICIENT_DATA = "insufficient_data"
    # Only in the monitor's history: the check could not produce a report.
    FAILED = "failed"


class DriftReport(StrictModel):
    model: str
    check_id: str
    checked_at: AwareDatetime
    window_start: AwareDatetime
    window_end: AwareDatetime
    # The champion version the reference profile describes, and the data it was built from.
    profile_version: str | None = None
    profile_source: str | None = None
    # Where the traffic was captured (the endpoint the trigger names).
    endpoint: str | None = None
    reference_rows: int = 0
    rows: int = 0
    statistic: DriftStatistic = DriftStatistic.PSI
    # Largest weighted score among significant columns; 0 when none.
    score: float = 0.0
    severity: Severity = Severity.LOW
    status: ReportStatus
    drifted: list[str] = []
    data_quality: list[str] = []
    # Worth knowing, not alarming: new columns, unreadable files, a missing prediction reference.
    notes: list[str] = []
    columns: list[ColumnDrift] = []
    summary: str = ""
    report_uri: str | None = None
    html_uri: str | None = None
    compute_seconds: float | None = None


# ---- the DriftMonitor workflow's contract ---------------------------------------------------


class CheckRequest(StrictModel):
    """An on-demand check (`retrain drift check MODEL`, update `check`)."""

    reason: Annotated[str, Field(max_length=200)] = "on demand"
    # Send the result to the coordinator like a scheduled check does.
    notify_coordinator: bool = True


class ProfileSummary(StrictModel):
    """A reference profile as built (`build_reference_profile`, after a promotion)."""

    key: str
    version: str | None
    source: str
    rows: int
    directory: str


class DriftCheckInput(StrictModel):
    """What the `check_drift` activity needs."""

    model: str
    check_id: str
    window_end: AwareDatetime


class Delivery(StrEnum):
    SENT = "sent"
    NOT_SENT = "not_sent"
    FAILED = "failed"


class CheckRecord(StrictModel):
    """One finished check, as the monitor remembers it."""

    check_id: str
    checked_at: AwareDatetime
    status: ReportStatus
    severity: Severity
    score: float
    drifted: list[str] = []
    reason: str
    error: str | None = None
    trigger: Literal["drift", "alarm"] | None = None
    delivery: Delivery = Delivery.NOT_SENT
    delivery_note: str = ""


class PerformanceCheckInput(StrictModel):
    """What the `check_performance` activity needs: the current window's start (labels
    received since then) and its end (the workflow's now)."""

    model: str
    check_id: str
    window_start: AwareDatetime
    window_end: AwareDatetime


class PerformanceCheck(StrictModel):
    """One performance check as the monitor ran it: the numbers, whether the window was judged
    (volume), the verdict and what the coordinator was told."""

    check_id: str
    checked_at: AwareDatetime
    reason: str
    volume: VolumeDecision
    report: PerformanceReport
    verdict: PerformanceVerdict
    event_id: str | None = None
    delivery: Delivery = Delivery.NOT_SENT
    delivery_note: str = ""


class PerformanceRecord(StrictModel):
    """One performance check in the monitor's history (compact)."""

    check_id: str
    checked_at: AwareDatetime
    reason: str
    status: PerformanceStatus | Literal["failed"]
    severity: Severity = Severity.LOW
    volume: VolumeDecision | None = None
    metric: str | None = None
    current: float | None = None
    reference: float | None = None
    rows: int = 0
    version: str | None = None
    change_at: AwareDatetime | None = None
    event_id: str | None = None
    delivery: Delivery = Delivery.NOT_SENT
    delivery_note: str = ""
    error: str | None = None


class PerformanceMonitorState(StateModel):
    """The performance side of the monitor, carried through continue-as-new."""

    # Labels received since then belong to the current window (None: not started yet).
    window_start: AwareDatetime | None = None
    checks: int = 0
    last: PerformanceCheck | None = None
    history: list[PerformanceRecord] = []
    # Event ids already sent (newest last): a change found again is not sent again.
    sent: list[str] = []
    last_error: str | None = None


class MonitorState(StateModel):
    """Carried through continue-as-new."""

    checks: int = 0
    last_report: DriftReport | None = None
    history: list[CheckRecord] = []
    next_check_at: AwareDatetime | None = None
    # The last policy read from the spec (the default until the spec could be read).
    policy: DriftPolicy = DriftPolicy()
    last_error: str | None = None
    performance: PerformanceMonitorState = PerformanceMonitorState()
    performance_policy: PerformancePolicy = PerformancePolicy()


class DriftMonitorInput(StrictModel):
    model: str
    state: MonitorState | None = None
    # Checks per run before continuing-as-new (the server may suggest it sooner): the history
    # a replay reads stays short however long the monitor lives.
    checks_per_run: Annotated[int, Field(ge=1, le=1000)] = 100


class MonitorStatus(StrictModel):
    model: str
    enabled: bool
    interval_seconds: float
    checks: int
    checking: bool
    next_check_at: AwareDatetime | None
    last_report: DriftReport | None
    history: list[CheckRecord]
    last_error: str | None = None
    # The performance checks (quality on labelled traffic), newest first.
    performance_enabled: bool = True
    last_performance: PerformanceCheck | None = None
    performance_history: list[PerformanceRecord] = []
    performance_window_start: AwareDatetime | None = None
    performance_error: str | None = None
