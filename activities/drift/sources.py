"""Drift measured by the cloud instead of by us: a model whose platform already monitors it
(Vertex AI Model Monitoring) gets its DriftMonitor's reports from there.

The report carries the platform's verdict as it is: the largest drift or skew score, the
features at or above their threshold, the endpoint, severity from the model's cut points (as
for our own checks, so the monitor and the coordinator agree). No per-column statistics: the
platform keeps those, and the report's notes say where.
"""

from __future__ import annotations

from datetime import UTC, datetime

from activities.ports import DriftSignalSource
from workflows.coordinator.triggers import severity_from_score
from workflows.drift.models import DriftCheckInput, DriftReport, ReportStatus
from workflows.spec.models import ModelSpec


def platform_report(
    spec: ModelSpec, request: DriftCheckInput, source: DriftSignalSource, now: datetime
) -> DriftReport:
    end = request.window_end.astimezone(UTC)
    start = end - spec.drift.window
    signal = source.latest(spec.name, start)
    base = DriftReport(
        model=spec.name,
        check_id=request.check_id,
        checked_at=now,
        window_start=start,
        window_end=end,
        status=ReportStatus.INSUFFICIENT_DATA,
        notes=[f"measured by {source.name}"],
        summary=f"{source.name} has no statistics since {start.isoformat()}",
    )
    if signal is None:
        return base
    score = signal.score or 0.0
    severity = signal.severity or severity_from_score(
        score, spec.trigger_policy.severity_cut_points
    )
    drifted = sorted(signal.features)
    verdict = f"drift in {', '.join(drifted)}" if drifted else "no feature over its threshold"
    return base.model_copy(
        update={
            "status": ReportStatus.DRIFT if drifted else ReportStatus.OK,
            "endpoint": signal.endpoint,
            "score": score,
            "severity": severity,
            "drifted": drifted,
            "summary": f"{source.name}: {verdict} (score {score:.3g}, {severity.value})",
        }
    )
