"""The `check_drift` activity: the champion's reference profile vs the current window of captured
traffic, as a `DriftReport` (JSON and a self-contained HTML page beside it).

Steps: read the registered spec → make the endpoint write its buffered capture (when the spec
names one) → build or reuse the reference profile for the current champion
(`activities.drift.profile`) → a cloud model's capture and ground truth of the window into the
capture layout (its backend's `CaptureSource`) → read the window (`activities.drift.window`)
→ statistics for features, the champion's predictions and the labels
(`activities.drift.statistics`) → the verdict (`workflows.drift.rules.assess`) →
`<home>/drift/<model>/reports/<check_id>.{json,html}`.

Idempotent by check id: a retried check writes the same files again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.drift.html import render_drift_html
from activities.drift.profile import Profile, ProfileError, RoleReferences, build_profile
from activities.drift.sources import platform_report
from activities.drift.statistics import (
    CategoricalStats,
    NumericStats,
    categorical_drift,
    numeric_drift,
)
from activities.drift.window import CurrentWindow, flush_notes, read_current_window, sync_notes
from activities.local.capture import capture_dir
from activities.mirror import DataMirror
from activities.ports import CaptureSource, DriftSignalSource, ModelRegistry, ServingBackend
from activities.specs import SpecStore, registered_spec
from activities.training_runner import write_atomically
from workflows.common import metrics
from workflows.common.errors import ErrorType
from workflows.common.models import StrictModel
from workflows.common.names import ActivityName
from workflows.drift.models import (
    ColumnDrift,
    ColumnKind,
    ColumnRole,
    ColumnStatus,
    DriftCheckInput,
    DriftReport,
    Histogram,
    ProfileSummary,
)
from workflows.drift.rules import assess
from workflows.spec.models import ModelSpec


class StoredReport(StrictModel):
    """The report file: the report plus what the HTML page draws."""

    report: DriftReport
    histograms: dict[str, Histogram]


@dataclass(frozen=True)
class ColumnResult:
    column: ColumnDrift
    histogram: Histogram | None


def reports_dir(home: Path, model: str) -> Path:
    return home / "drift" / model / "reports"


def column_result(
    stats: NumericStats | CategoricalStats, role: ColumnRole, issues: list[str]
) -> ColumnResult:
    """A column's statistics as the report holds them; the policy's view (score, threshold,
    weight, status) is filled in by `workflows.drift.rules.assess`."""
    fields: dict[str, Any] = {
        "name": stats.name,
        "role": role,
        "kind": ColumnKind.NUMERIC if isinstance(stats, NumericStats) else ColumnKind.CATEGORICAL,
        "status": ColumnStatus.OK,
        "n_reference": stats.n_reference,
        "n_current": stats.n_current,
        "missing_reference": stats.missing_reference,
        "missing_current": stats.missing_current,
        "missing_pvalue": stats.missing_pvalue,
        "psi": stats.psi,
        "kl": stats.kl,
        "js": stats.js,
        "threshold": 1.0,
        "weight": 1.0,
        "issues": issues,
    }
    if isinstance(stats, NumericStats):
        fields.update(
            ks_statistic=stats.ks_statistic,
            ks_pvalue=stats.ks_pvalue,
            wasserstein=stats.wasserstein,
        )
    else:
        fields.update(
            chi2=stats.chi2,
            chi2_pvalue=stats.chi2_pvalue,
            chi2_dof=stats.chi2_dof,
            cramers_v=stats.cramers_v,
            unseen_share=stats.unseen_share,
        )
    return ColumnResult(ColumnDrift(**fields), stats.histogram)


def _role_columns(
    references: RoleReferences,
    role: ColumnRole,
    numeric: dict[str, Any],
    categorical: dict[str, Any],
    issues: dict[str, list[str]],
    threads: int,
) -> list[ColumnResult]:
    """Statistics for one role's columns (numeric ones as a list: no copy into a matrix)."""
    results: list[ColumnResult] = []
    if names := references.numeric.names:
        columns = [numeric[name] for name in names]
        for stats in numeric_drift(references.numeric, columns, threads=threads):
            results.append(column_result(stats, role, issues.get(stats.name, [])))
    if names := references.categorical.names:
        columns = [categorical[name] for name in names]
        for cstats in categorical_drift(references.categorical, columns):
            results.append(column_result(cstats, role, issues.get(cstats.name, [])))
    return results


def compute_columns(
    profile: Profile, window: CurrentWindow, spec: ModelSpec, threads: int
) -> list[ColumnResult]:
    results = _role_columns(
        profile.features,
        ColumnRole.FEATURE,
        window.numeric,
        window.categorical,
        window.issues,
        threads,
    )
    # Features the profile lacks: no statistics, only what is wrong.
    for name in profile.manifest.missing_features:
        kind = next(f.kind for f in spec.features if f.name == name)
        results.append(
            ColumnResult(
                ColumnDrift(
                    name=name,
                    role=ColumnRole.FEATURE,
                    kind=ColumnKind(kind.value),
                    status=ColumnStatus.DATA_QUALITY,
                    n_reference=0,
                    n_current=0,
                    missing_reference=0.0,
                    missing_current=0.0,
                    threshold=1.0,
                    weight=1.0,
                    issues=window.issues.get(name, []),
                ),
                None,
            )
        )
    manifest = profile.manifest
    if manifest.prediction_column and window.predictions is not None:
        outputs = {manifest.prediction_column: window.predictions}
        results += _role_columns(
            profile.prediction, ColumnRole.PREDICTION, outputs, outputs, {}, threads
        )
    labels = {spec.label: window.labels}
    if window.labels is not None:
        results += _role_columns(profile.label, ColumnRole.LABEL, labels, labels, {}, threads)
    return results


def check_drift(
    home: Path,
    spec: ModelSpec,
    registry: ModelRegistry,
    request: DriftCheckInput,
    *,
    flush: Callable[[str], None] | None = None,
    heartbeat: Callable[[str], None] = lambda _: None,
    threads: int = 2,
    capture: CaptureSource | None = None,
) -> DriftReport:
    started = time.perf_counter()
    endpoint = spec.loop.deployment.endpoint_url
    notes = flush_notes(flush, endpoint)
    heartbeat("profile")
    champion = registry.champion(spec.name)
    try:
        profile = build_profile(home, spec, champion, registry.load)
    except ProfileError as error:
        raise ApplicationError(
            str(error), type=ErrorType.DRIFT_PROFILE, non_retryable=True
        ) from error
    manifest = profile.manifest
    notes += manifest.notes

    heartbeat("window")
    end = request.window_end.astimezone(UTC)
    start = end - spec.drift.window
    notes += sync_notes(capture, spec, start, end, heartbeat)
    window = read_current_window(capture_dir(home, spec), manifest, start, end)
    notes += window.notes

    heartbeat("statistics")
    results = compute_columns(profile, window, spec, threads)
    verdict = assess(
        [r.column for r in results],
        spec.drift,
        spec.trigger_policy.severity_cut_points,
        window.rows,
    )
    directory = reports_dir(home, spec.name)
    report = DriftReport(
        model=spec.name,
        check_id=request.check_id,
        checked_at=request.window_end,
        window_start=start,
        window_end=end,
        profile_version=manifest.version,
        profile_source=manifest.source,
        endpoint=endpoint,
        reference_rows=manifest.rows,
        rows=window.rows,
        statistic=spec.drift.statistic,
        score=verdict.score,
        severity=verdict.severity,
        status=verdict.status,
        drifted=verdict.drifted,
        data_quality=verdict.data_quality,
        notes=notes,
        columns=_ordered(verdict.columns),
        summary=verdict.summary,
        report_uri=str(directory / f"{request.check_id}.json"),
        html_uri=str(directory / f"{request.check_id}.html"),
        compute_seconds=round(time.perf_counter() - started, 3),
    )
    histograms = {r.column.name: r.histogram for r in results if r.histogram is not None}
    heartbeat("writing")
    directory.mkdir(parents=True, exist_ok=True)
    write_atomically(
        directory / f"{request.check_id}.json",
        StoredReport(report=report, histograms=histograms).model_dump_json(),
    )
    write_atomically(directory / f"{request.check_id}.html", render_drift_html(report, histograms))
    return report


def _ordered(columns: list[ColumnDrift]) -> list[ColumnDrift]:
    """Drifted and broken columns first, then by score."""
    rank = {
        ColumnStatus.DATA_QUALITY: 0,
        ColumnStatus.DRIFTED: 1,
        ColumnStatus.OK: 2,
        ColumnStatus.INSUFFICIENT_DATA: 3,
    }
    return sorted(columns, key=lambda c: (rank[c.status], -(c.score or 0.0), c.name))


class DriftActivities:
    def __init__(
        self,
        home: Path,
        specs: SpecStore,
        registry: ModelRegistry,
        serving: ServingBackend | None = None,
        platform: Callable[[ModelSpec], DriftSignalSource | None] = lambda _: None,
        mirror: DataMirror | None = None,
        capture: Callable[[ModelSpec], CaptureSource | None] = lambda _: None,
    ) -> None:
        self.home = home
        self.specs = specs
        self.registry = registry
        self.serving = serving
        # A cloud model's baseline holdout (the profile's source without a champion's loop)
        # is read from its mirrored copy.
        self.mirror = mirror
        # A model its cloud already monitors (Vertex Model Monitoring) is checked there.
        self.platform = platform
        # A cloud endpoint's capture (SageMaker Data Capture, Vertex logging) is read first.
        self.capture = capture

    def _spec(self, model: str) -> ModelSpec:
        spec = registered_spec(self.specs, model)
        if self.mirror is not None:
            try:
                spec, _ = self.mirror.localize(spec, fields=("baseline_holdout",))
            except FileNotFoundError as missing:
                raise ApplicationError(
                    str(missing), type=ErrorType.DRIFT_PROFILE, non_retryable=True
                ) from None
        return spec

    @activity.defn(name=ActivityName.BUILD_REFERENCE_PROFILE)
    def build_reference_profile(self, model: str) -> ProfileSummary:
        """The current champion's profile (built once; returned as it is when it exists)."""
        spec = self._spec(model)
        activity.heartbeat("profile")
        champion = self.registry.champion(model)
        try:
            profile = build_profile(self.home, spec, champion, self.registry.load)
        except ProfileError as error:
            raise ApplicationError(
                str(error), type=ErrorType.DRIFT_PROFILE, non_retryable=True
            ) from error
        manifest = profile.manifest
        return ProfileSummary(
            key=manifest.key,
            version=manifest.version,
            source=manifest.source,
            rows=manifest.rows,
            directory=str(profile.directory),
        )

    @activity.defn(name=ActivityName.CHECK_DRIFT)
    def check(self, request: DriftCheckInput) -> DriftReport:
        spec = self._spec(request.model)
        source = self.platform(spec)
        if source is not None:
            report = platform_report(spec, request, source, datetime.now(UTC))
            activity.logger.info("drift check %s: %s", report.check_id, report.summary)
            return _recorded(report)
        report = check_drift(
            self.home,
            spec,
            self.registry,
            request,
            flush=self.serving.flush_capture if self.serving else None,
            heartbeat=activity.heartbeat,
            capture=self.capture(spec),
        )
        activity.logger.info(
            "drift check %s: %s, %s (score %.3g), %d rows in %.2fs",
            report.check_id,
            report.status.value,
            report.severity.value,
            report.score,
            report.rows,
            report.compute_seconds or 0.0,
        )
        return _recorded(report)


def _recorded(report: DriftReport) -> DriftReport:
    """Each column's score as a gauge: the dashboard's drift over time, per feature."""
    meter = metrics.activity_meter()
    for column in report.columns:
        if column.score is not None:
            labels = {"model": report.model, "feature": column.name}
            metrics.set_gauge(meter, metrics.DRIFT_SCORE, labels, column.score)
    checked = {"model": report.model}
    metrics.set_gauge(meter, metrics.DRIFT_CHECKED, checked, datetime.now(UTC).timestamp())
    return report
