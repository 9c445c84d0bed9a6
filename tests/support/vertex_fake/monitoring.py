"""The fake's Cloud Monitoring time series and Vertex Model Monitoring results.

- `POST /v3/projects/{p}/timeSeries` stores points; `GET` lists them, filtered by a conjunction
  of `key = "value"` terms (metric.type, resource.type, metric.labels.*, resource.labels.*) and
  the interval, optionally aligned over one alignment period ending at the interval's end:
  ALIGN_SUM / ALIGN_DELTA add numbers, ALIGN_PERCENTILE_50 / _99 read a percentile of the merged
  explicit-bucket distributions (linear within a bucket). Cross-series reducers are refused: the
  canary does not use them.
- `seed_prediction_metrics` writes what Vertex itself publishes per deployed model (the real API
  refuses writes to `aiplatform.googleapis.com/*`, so tests seed the fake's state directly).
- ModelDeploymentMonitoringJob get and `:searchModelDeploymentMonitoringStatsAnomalies`, over
  jobs and feature anomalies tests seed with `seed_monitoring_job` / `seed_feature_stats`.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import numpy as np
from google.cloud import aiplatform_v1, monitoring_v3
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from tests.support.vertex_fake.endpoints import error, fault
from tests.support.vertex_fake.server import FakeState

SERIES = "timeSeries"
JOBS = "modelDeploymentMonitoringJobs"
ANOMALIES = "monitoringStatsAnomalies"
LATENCY_BOUNDS = [float(bound) for bound in np.geomspace(1, 10_000, 41)]
_TERM = re.compile(r'^\s*([\w./-]+)\s*=\s*"([^"]*)"\s*$')
_Aligner = monitoring_v3.Aggregation.Aligner
_Objective = aiplatform_v1.ModelDeploymentMonitoringObjectiveType


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _text(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def _enum(kind: Any, value: str) -> Any:
    return kind(int(value)) if value.lstrip("-").isdigit() else kind[value]


def _store(state: FakeState, series: dict[str, Any]) -> None:
    rows = state.table(SERIES).setdefault("rows", [])
    for point in series["points"]:
        rows.append({**series, "points": [point]})


def seed_prediction_metrics(
    state: FakeState,
    endpoint_id: str,
    deployed_model_id: str,
    when: datetime,
    *,
    requests: int,
    errors: int,
    latencies_ms: list[float],
) -> None:
    """Vertex's own per-deployed-model metrics for one minute of traffic."""
    resource = {
        "type": "aiplatform.googleapis.com/Endpoint",
        "labels": {
            "resource_container": state.project,
            "location": state.location,
            "endpoint_id": endpoint_id,
        },
    }
    point = {"interval": {"startTime": _text(when), "endTime": _text(when)}}
    for name, count in (("prediction_count", requests), ("error_count", errors)):
        _store(
            state,
            {
                "metric": {
                    "type": f"aiplatform.googleapis.com/prediction/online/{name}",
                    "labels": {"deployed_model_id": deployed_model_id},
                },
                "resource": resource,
                "metricKind": "DELTA",
                "valueType": "INT64",
                "points": [{**point, "value": {"int64Value": str(count)}}],
            },
        )
    counts = np.bincount(
        np.searchsorted(LATENCY_BOUNDS, latencies_ms, side="right"),
        minlength=len(LATENCY_BOUNDS) + 1,
    )
    distribution = {
        "count": str(len(latencies_ms)),
        "mean": float(np.mean(latencies_ms)) if latencies_ms else 0.0,
        "bucketOptions": {"explicitBuckets": {"bounds": LATENCY_BOUNDS}},
        "bucketCounts": [str(int(count)) for count in counts],
    }
    _store(
        state,
        {
            "metric": {
                "type": "aiplatform.googleapis.com/prediction/online/prediction_latencies",
                "labels": {"deployed_model_id": deployed_model_id, "latency_type": "total"},
            },
            "resource": resource,
            "metricKind": "DELTA",
            "valueType": "DISTRIBUTION",
            "points": [{**point, "value": {"distributionValue": distribution}}],
        },
    )


def seed_monitoring_job(
    state: FakeState, job_id: str, endpoint: str, deployed_model_ids: list[str]
) -> str:
    name = f"projects/{state.project}/locations/{state.location}/{JOBS}/{job_id}"
    state.table(JOBS)[name] = {
        "name": name,
        "displayName": job_id,
        "endpoint": endpoint,
        "state": "JOB_STATE_RUNNING",
        "modelDeploymentMonitoringObjectiveConfigs": [
            {"deployedModelId": ids} for ids in deployed_model_ids
        ],
    }
    return name


def seed_feature_stats(
    state: FakeState,
    job: str,
    deployed_model_id: str,
    objective: str,
    feature: str,
    *,
    deviation: float,
    threshold: float,
    start: datetime,
    end: datetime,
) -> None:
    """One monitoring window's statistics of one feature (objective: RAW_FEATURE_DRIFT...)."""
    state.table(ANOMALIES).setdefault("rows", []).append(
        {
            "job": job,
            "deployedModelId": deployed_model_id,
            "objective": _Objective.__members__[objective],
            "feature": feature,
            "threshold": threshold,
            "stats": {
                "distributionDeviation": deviation,
                "anomalyDetectionThreshold": threshold,
                "startTime": _text(start),
                "endTime": _text(end),
            },
        }
    )


def _matches(series: dict[str, Any], terms: list[tuple[str, str]]) -> bool:
    for key, value in terms:
        if key in ("metric.type", "resource.type"):
            found = series[key.split(".")[0]]["type"]
        else:
            scope, _, label = key.partition(".labels.")
            found = series.get(scope, {}).get("labels", {}).get(label)
        if found != value:
            return False
    return True


def _percentile(distributions: list[dict[str, Any]], q: float) -> float:
    bounds = distributions[0]["bucketOptions"]["explicitBuckets"]["bounds"]
    counts = np.sum([[int(c) for c in d["bucketCounts"]] for d in distributions], axis=0)
    rank, seen = q * counts.sum(), 0
    for index, count in enumerate(counts):
        if count and seen + count >= rank:
            lower = bounds[max(index - 1, 0)] if index else bounds[0]
            upper = bounds[min(index, len(bounds) - 1)]
            return float(lower + (upper - lower) * (rank - seen) / count)
        seen += count
    return float(bounds[-1])


def _align(
    series: dict[str, Any], points: list[dict[str, Any]], aligner: Any, start: str, end: str
) -> dict[str, Any]:
    interval = {"startTime": start, "endTime": end}
    values = [point["value"] for point in points]
    if aligner in (_Aligner.ALIGN_SUM, _Aligner.ALIGN_DELTA) and series["valueType"] == "INT64":
        total = sum(int(value["int64Value"]) for value in values)
        return {
            **series,
            "metricKind": "DELTA",
            "points": [{"interval": interval, "value": {"int64Value": str(total)}}],
        }
    if aligner in (_Aligner.ALIGN_SUM, _Aligner.ALIGN_DELTA) and series["valueType"] == "DOUBLE":
        total_d = sum(float(value["doubleValue"]) for value in values)
        return {
            **series,
            "metricKind": "DELTA",
            "points": [{"interval": interval, "value": {"doubleValue": total_d}}],
        }
    quantiles = {_Aligner.ALIGN_PERCENTILE_50: 0.5, _Aligner.ALIGN_PERCENTILE_99: 0.99}
    if aligner in quantiles and series["valueType"] == "DISTRIBUTION":
        value = _percentile([v["distributionValue"] for v in values], quantiles[aligner])
        return {
            **series,
            "metricKind": "GAUGE",
            "valueType": "DOUBLE",
            "points": [{"interval": interval, "value": {"doubleValue": value}}],
        }
    raise ValueError(f"the fake cannot align {series['valueType']} with {aligner.name}")


def routes(state: FakeState) -> list[BaseRoute]:
    async def time_series(request: Request) -> JSONResponse:
        if (failed := fault(state, request)) is not None:
            return failed
        if request.method == "POST":
            body = await request.json()
            with state.lock:
                for series in body.get("timeSeries", []):
                    if len(series.get("points", [])) != 1:
                        return error(400, "each time series must carry exactly one point")
                    value = series["points"][0]["value"]
                    kind = {"int64Value": "INT64", "doubleValue": "DOUBLE"}.get(next(iter(value)))
                    _store(state, {**series, "valueType": series.get("valueType") or kind})
            return JSONResponse({})
        return _list(request)

    def _list(request: Request) -> JSONResponse:
        query = request.query_params
        terms = []
        for term in query.get("filter", "").split(" AND "):
            match = _TERM.match(term)
            if match is None:
                return error(400, f"the fake cannot filter on {term!r}")
            terms.append((match.group(1).replace(".label.", ".labels."), match.group(2)))
        if query.get("aggregation.crossSeriesReducer", "0") not in ("0", "REDUCE_NONE"):
            return error(400, "the fake does not reduce across series")
        end = _time(query["interval.endTime"])
        start = _time(query.get("interval.startTime", query["interval.endTime"]))
        aligner = _enum(_Aligner, query.get("aggregation.perSeriesAligner", "0"))
        if aligner is not _Aligner.ALIGN_NONE:
            period = float(query["aggregation.alignmentPeriod"].rstrip("s"))
            start = max(start, datetime.fromtimestamp(end.timestamp() - period, end.tzinfo))
        grouped: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
        with state.lock:
            for row in state.table(SERIES).get("rows", []):
                when = _time(row["points"][0]["interval"]["endTime"])
                if not (start <= when <= end) or not _matches(row, terms):
                    continue
                key = repr((row["metric"], row["resource"]))
                grouped.setdefault(key, ({k: v for k, v in row.items() if k != "points"}, []))
                grouped[key][1].extend(row["points"])
        found = []
        for series, points in grouped.values():
            if aligner is _Aligner.ALIGN_NONE:
                found.append({**series, "points": points})
            else:
                try:
                    found.append(_align(series, points, aligner, _text(start), _text(end)))
                except ValueError as problem:
                    return error(400, str(problem))
        return JSONResponse({"timeSeries": found})

    async def job(request: Request) -> JSONResponse:
        if (failed := fault(state, request)) is not None:
            return failed
        job_id, _, verb = request.path_params["tail"].partition(":")
        params = request.path_params
        name = f"projects/{params['project']}/locations/{params['location']}/{JOBS}/{job_id}"
        with state.lock:
            found = state.table(JOBS).get(name)
        if found is None:
            return error(404, f"ModelDeploymentMonitoringJob {name} not found")
        if request.method == "GET" and not verb:
            return JSONResponse(found)
        if request.method == "POST" and verb == "searchModelDeploymentMonitoringStatsAnomalies":
            return _search(name, await request.json())
        return error(400, f"the fake does not implement {request.method} {name}:{verb}")

    def _search(name: str, body: dict[str, Any]) -> JSONResponse:
        deployed = body.get("deployedModelId", "")
        if not deployed:
            return error(400, "deployedModelId is required")
        objectives = [_enum(_Objective, str(o.get("type", 0))) for o in body.get("objectives", [])]
        start = _time(body["startTime"]) if "startTime" in body else None
        end = _time(body["endTime"]) if "endTime" in body else None
        stats: list[dict[str, Any]] = []
        with state.lock:
            rows = state.table(ANOMALIES).get("rows", [])
        for objective in objectives:
            features: dict[str, dict[str, Any]] = {}
            for row in rows:
                window_start, window_end = (
                    _time(row["stats"]["startTime"]),
                    _time(row["stats"]["endTime"]),
                )
                if (
                    row["job"] != name
                    or row["deployedModelId"] != deployed
                    or row["objective"] != objective
                ):
                    continue
                if (start and window_end < start) or (end and window_start > end):
                    continue
                feature = features.setdefault(
                    row["feature"],
                    {
                        "featureDisplayName": row["feature"],
                        "threshold": {"value": row["threshold"]},
                        "predictionStats": [],
                    },
                )
                feature["predictionStats"].append(row["stats"])
            anomalous = sum(
                1
                for feature in features.values()
                for window in feature["predictionStats"]
                if window["distributionDeviation"] >= window["anomalyDetectionThreshold"]
            )
            stats.append(
                {
                    "objective": objective.value,
                    "deployedModelId": deployed,
                    "anomalyCount": anomalous,
                    "featureStats": list(features.values()),
                }
            )
        return JSONResponse({"monitoringStats": stats})

    return [
        Route("/v3/projects/{project}/timeSeries", time_series, methods=["GET", "POST"]),
        Route(
            "/v1/projects/{project}/locations/{location}/" + JOBS + "/{tail}",
            job,
            methods=["GET", "POST"],
        ),
    ]
