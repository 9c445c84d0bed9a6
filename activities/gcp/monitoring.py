"""Vertex AI Model Monitoring results as a drift source.

`settings.monitoring_job` names a ModelDeploymentMonitoringJob (full resource name, or its id
in the settings' project and location). For every deployed model the job monitors, its feature
statistics since `since` are searched (`searchModelDeploymentMonitoringStatsAnomalies`) for
prediction drift and training-serving skew. A feature window's `distributionDeviation` is its
drift/skew distance; it is anomalous at or above its `anomalyDetectionThreshold`. The signal's
score is the largest deviation seen, its features the anomalous ones, its window the span of
the windows read. No statistics at all since `since`: no signal.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import google.cloud.aiplatform_v1 as aiplatform_v1
from temporalio.exceptions import ApplicationError

from activities.gcp.clients import GcpClients
from activities.gcp.errors import gcp_call
from workflows.common.errors import ErrorType
from workflows.coordinator.triggers import MAX_DRIFTED_FEATURES, DriftSignal
from workflows.spec.vertex import VertexSettings

_Objective = aiplatform_v1.ModelDeploymentMonitoringObjectiveType
OBJECTIVES = (_Objective.RAW_FEATURE_DRIFT, _Objective.RAW_FEATURE_SKEW)


class ModelMonitoringSource:
    name = "Vertex AI Model Monitoring"

    def __init__(self, clients: GcpClients, settings: VertexSettings) -> None:
        self._clients = clients
        self._settings = settings

    @property
    def _client(self) -> aiplatform_v1.JobServiceClient:
        return self._clients.jobs

    def _job_name(self, model: str) -> str:
        job = self._settings.monitoring_job
        if job is None:
            raise ApplicationError(
                f"{model}: no Vertex monitoring_job in the model's settings to read drift from",
                type=ErrorType.GCP_REQUEST_REJECTED,
                non_retryable=True,
            )
        if job.startswith("projects/"):
            return job
        location = f"projects/{self._settings.project}/locations/{self._settings.location}"
        return f"{location}/modelDeploymentMonitoringJobs/{job}"

    def latest(self, model: str, since: datetime) -> DriftSignal | None:
        name = self._job_name(model)
        with gcp_call(f"reading monitoring job {name}"):
            job = self._client.get_model_deployment_monitoring_job(name=name)
        now = datetime.now(UTC)
        windows: list[tuple[str, Any]] = []  # (feature, FeatureStatsAnomaly)
        for config in job.model_deployment_monitoring_objective_configs:
            request = aiplatform_v1.SearchModelDeploymentMonitoringStatsAnomaliesRequest(
                model_deployment_monitoring_job=name,
                deployed_model_id=config.deployed_model_id,
                objectives=[
                    aiplatform_v1.SearchModelDeploymentMonitoringStatsAnomaliesRequest.StatsAnomaliesObjective(
                        type_=objective
                    )
                    for objective in OBJECTIVES
                ],
                start_time=since,
                end_time=now,
            )
            with gcp_call(f"searching {name} for {config.deployed_model_id}"):
                for stats in self._client.search_model_deployment_monitoring_stats_anomalies(
                    request=request
                ):
                    windows.extend(
                        (feature.feature_display_name, window)
                        for feature in stats.feature_stats
                        for window in feature.prediction_stats
                    )
        if not windows:
            return None
        anomalous = sorted(
            {
                feature
                for feature, window in windows
                if window.distribution_deviation >= window.anomaly_detection_threshold
            }
        )
        return DriftSignal(
            score=max(window.distribution_deviation for _, window in windows),
            features=anomalous[:MAX_DRIFTED_FEATURES],
            endpoint=job.endpoint or None,
            window_start=min(window.start_time for _, window in windows),
            window_end=max(window.end_time for _, window in windows),
        )
