"""Azure Monitor: platform metrics of online endpoints and deployments, and autoscale settings.

Metrics (`GET {resourceUri}/providers/Microsoft.Insights/metrics`, what azure-mgmt-monitor's
`metrics.list` calls): tests seed one value per minute with `seed_metric` (Azure ML publishes
these itself; nobody can write them). A query names metrics (`metricnames`, comma-separated),
a `timespan` (`start/end` or `start/duration`), an `interval` (PT1M, PT5M, PT1H, ... or FULL)
and `aggregation`s (Average, Total, Count, Minimum, Maximum); `$filter` is a conjunction of
`dim eq 'value'` terms, where `'*'` splits the result into one time series per value, as
Azure Monitor does. A metric the resource type does not publish is a 400, as on Azure.
Percentile metrics (RequestLatency_P50...) are seeded as the per-minute value Azure reports.

Autoscale (`/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Insights/
autoscalesettings/{name}`): PUT (create 201 / update 200), GET, DELETE, list by resource
group; refused (400) when a profile's capacity is not minimum <= default <= maximum, when
there are more than 20 profiles, or when the target is an online deployment that does not
exist.
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from tests.support.azure_fake.endpoints import DEPLOYMENTS
from tests.support.azure_fake.server import (
    ARM_HOST,
    FakeState,
    arm_error,
    not_found,
    system_data,
)

METRICS = "metrics.rows"
AUTOSCALE = "autoscalesettings"
ENDPOINT_TYPE = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints"
DEPLOYMENT_TYPE = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/deployments"
# What Azure ML publishes per resource type: metric -> (unit, dimensions).
CATALOGUE: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {
    ENDPOINT_TYPE: {
        "RequestsPerMinute": (
            "Count",
            ("deployment", "statusCode", "statusCodeClass", "modelStatusCode"),
        ),
        "RequestLatency": ("Milliseconds", ("deployment",)),
        "RequestLatency_P50": ("Milliseconds", ("deployment",)),
        "RequestLatency_P90": ("Milliseconds", ("deployment",)),
        "RequestLatency_P95": ("Milliseconds", ("deployment",)),
        "RequestLatency_P99": ("Milliseconds", ("deployment",)),
        "ConnectionsActive": ("Count", ()),
        "NetworkBytes": ("BytesPerSecond", ()),
        "NewConnectionsPerSecond": ("CountPerSecond", ()),
        "DataCollectionEventsPerMinute": ("Count", ("deployment", "type")),
        "DataCollectionErrorsPerMinute": ("Count", ("deployment", "reason", "type")),
    },
    DEPLOYMENT_TYPE: {
        "RequestsPerMinute": ("Count", ("envoy_response_code",)),
        "RequestLatency_P50": ("Milliseconds", ()),
        "RequestLatency_P90": ("Milliseconds", ()),
        "RequestLatency_P95": ("Milliseconds", ()),
        "RequestLatency_P99": ("Milliseconds", ()),
        "CpuUtilizationPercentage": ("Percent", ("instanceId",)),
        "CpuMemoryUtilizationPercentage": ("Percent", ("instanceId",)),
        "DeploymentCapacity": ("Count", ("instanceId", "State")),
        "DiskUtilization": ("Percent", ("instanceId", "disk")),
    },
}
_TERM = re.compile(r"^\s*(\w+)\s+eq\s+'([^']*)'\s*$", re.IGNORECASE)
_DURATION = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$")


def resource_type(resource_id: str) -> str:
    """`Microsoft.MachineLearningServices/workspaces/onlineEndpoints[/deployments]` of an id."""
    parts = resource_id.strip("/").split("/")
    provider = parts.index("providers")
    types = parts[provider + 2 :: 2]
    return "/".join([parts[provider + 1], *types])


def seed_metric(
    state: FakeState,
    resource_id: str,
    metric: str,
    when: datetime,
    value: float,
    dimensions: dict[str, str] | None = None,
) -> None:
    """One minute's value of a platform metric, as Azure ML would have published it."""
    kind = resource_type(resource_id)
    unit_dims = CATALOGUE.get(kind, {}).get(metric)
    if unit_dims is None:
        raise ValueError(f"{kind} publishes no metric {metric!r}")
    unknown = set(dimensions or {}) - set(unit_dims[1])
    if unknown:
        raise ValueError(f"{metric} has no dimensions {sorted(unknown)}")
    with state.lock:
        state.table(METRICS).setdefault("rows", []).append(
            {
                "resource": resource_id.lower().rstrip("/"),
                "metric": metric,
                "time": when.astimezone(UTC).replace(second=0, microsecond=0),
                "dims": dict(dimensions or {}),
                "value": float(value),
            }
        )


def set_metric(
    state: FakeState,
    resource_id: str,
    metric: str,
    when: datetime,
    value: float,
    dimensions: dict[str, str] | None = None,
) -> None:
    """Replace one minute's value (a percentile Azure computes over the whole minute's
    requests, re-published as more of them arrive)."""
    minute = when.astimezone(UTC).replace(second=0, microsecond=0)
    key = (resource_id.lower().rstrip("/"), metric, minute, dict(dimensions or {}))
    with state.lock:
        rows = state.table(METRICS).setdefault("rows", [])
        rows[:] = [r for r in rows if (r["resource"], r["metric"], r["time"], r["dims"]) != key]
    seed_metric(state, resource_id, metric, when, value, dimensions)


def _duration(text: str) -> timedelta:
    found = _DURATION.match(text.upper())
    if found is None or not any(found.groups()):
        raise ValueError(f"not an ISO 8601 duration: {text!r}")
    days, hours, minutes, seconds = (int(g or 0) for g in found.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _timespan(text: str) -> tuple[datetime, datetime]:
    start, _, end = text.partition("/")
    begin = _instant(start)
    return begin, (begin + _duration(end)) if end.upper().startswith("P") else _instant(end)


def _text(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def _aggregate(values: list[float], names: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name in names:
        key = name.strip().lower()
        if key == "average":
            out["average"] = sum(values) / len(values)
        elif key == "total":
            out["total"] = sum(values)
        elif key == "count":
            out["count"] = float(len(values))
        elif key == "minimum":
            out["minimum"] = min(values)
        elif key == "maximum":
            out["maximum"] = max(values)
        else:
            raise ValueError(f"unknown aggregation {name!r}")
    return out


def routes(state: FakeState) -> list[tuple[str, list[BaseRoute]]]:
    async def metrics(request: Request) -> Response:
        resource_id = "/" + request.path_params["resource"].strip("/")
        kind = resource_type(resource_id)
        published = CATALOGUE.get(kind, {})
        query = request.query_params
        names = [n for n in query.get("metricnames", "").split(",") if n]
        try:
            if not names:
                raise ValueError("metricnames is required")
            missing = [n for n in names if n not in published]
            if missing:
                raise ValueError(
                    f"Failed to find metric configuration for provider: {kind}, resource Id: "
                    f"{resource_id}, metric: {missing[0]}"
                )
            start, end = _timespan(query.get("timespan") or "")
            interval_text = query.get("interval", "PT1M")
            interval = end - start if interval_text.upper() == "FULL" else _duration(interval_text)
            aggregations = (query.get("aggregation") or "Average").split(",")
            terms = [t for t in re.split(r"\s+and\s+", query.get("$filter", ""), flags=re.I) if t]
            parsed = [_TERM.match(t) for t in terms]
            if any(p is None for p in parsed):
                raise ValueError(f"the fake cannot read the filter {query.get('$filter')!r}")
            wanted = {p.group(1): p.group(2) for p in parsed if p is not None}
            body_values = [
                _series(
                    state,
                    resource_id,
                    kind,
                    name,
                    published[name],
                    start,
                    end,
                    interval,
                    aggregations,
                    wanted,
                )
                for name in names
            ]
        except ValueError as error:
            return arm_error(400, "BadRequest", str(error))
        return JSONResponse(
            {
                "cost": 0,
                "timespan": f"{_text(start)}/{_text(end)}",
                "interval": interval_text,
                "value": body_values,
                "namespace": kind,
                "resourceregion": state.location,
            }
        )

    async def autoscale(request: Request) -> Response:
        name = request.path_params["name"]
        table = state.table(AUTOSCALE)
        resource_id = (
            f"/subscriptions/{request.path_params['sub']}/resourceGroups/"
            f"{request.path_params['rg']}/providers/Microsoft.Insights/autoscalesettings/{name}"
        )
        with state.lock:
            current = table.get(resource_id.lower())
            if request.method == "GET":
                if current is None:
                    return not_found(
                        "ResourceNotFound", f"The autoscale setting {name} was not found."
                    )
                return JSONResponse(current)
            if request.method == "DELETE":
                return Response(status_code=200 if table.pop(resource_id.lower(), None) else 204)
            body = await request.json()
            if (problem := _autoscale_problem(state, body.get("properties", {}))) is not None:
                return arm_error(400, "BadRequest", problem)
            resource = {
                "id": resource_id,
                "name": name,
                "type": "Microsoft.Insights/autoscaleSettings",
                "location": body.get("location", state.location),
                "tags": body.get("tags") or {},
                "properties": {
                    "name": name,
                    "enabled": True,
                    "notifications": [],
                    **body["properties"],
                },
                "systemData": system_data((current or {}).get("systemData")),
            }
            table[resource_id.lower()] = resource
            return JSONResponse(resource, status_code=200 if current else 201)

    async def autoscale_list(request: Request) -> Response:
        prefix = (
            f"/subscriptions/{request.path_params['sub']}/resourceGroups/{request.path_params['rg']}/"
        ).lower()
        with state.lock:
            found = [v for k, v in sorted(state.table(AUTOSCALE).items()) if k.startswith(prefix)]
        return JSONResponse({"value": found})

    settings = (
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Insights/autoscalesettings"
    )
    return [
        (
            ARM_HOST,
            [
                Route(settings, autoscale_list, methods=["GET"]),
                Route(settings + "/{name}", autoscale, methods=["GET", "PUT", "DELETE"]),
                Route(
                    "/{resource:path}/providers/Microsoft.Insights/metrics",
                    metrics,
                    methods=["GET"],
                ),
            ],
        )
    ]


def _series(
    state: FakeState,
    resource_id: str,
    kind: str,
    name: str,
    unit_dims: tuple[str, tuple[str, ...]],
    start: datetime,
    end: datetime,
    interval: timedelta,
    aggregations: list[str],
    wanted: dict[str, str],
) -> dict[str, Any]:
    unit, dims = unit_dims
    unknown = set(wanted) - set(dims)
    if unknown:
        raise ValueError(f"Metric {name} has no dimension {sorted(unknown)[0]}")
    split = [d for d, v in wanted.items() if v == "*"]
    with state.lock:
        rows = [
            row
            for row in state.table(METRICS).get("rows", [])
            if row["resource"] == resource_id.lower()
            and row["metric"] == name
            and start <= row["time"] < end
            and all(v == "*" or row["dims"].get(d) == v for d, v in wanted.items())
        ]
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[tuple(row["dims"].get(d, "") for d in split)].append(row)
    if not split and not groups:
        groups[()] = []
    timeseries = []
    for key, members in sorted(groups.items()):
        data = []
        bucket = start
        while bucket < end:
            values = [r["value"] for r in members if bucket <= r["time"] < bucket + interval]
            point: dict[str, Any] = {"timeStamp": _text(bucket)}
            if values:
                point.update(_aggregate(values, aggregations))
            elif any(a.strip().lower() == "count" for a in aggregations):
                point["count"] = 0.0
            data.append(point)
            bucket += interval
        timeseries.append(
            {
                "metadatavalues": [
                    {"name": {"value": d, "localizedValue": d}, "value": v}
                    for d, v in zip(split, key, strict=True)
                ],
                "data": data,
            }
        )
    return {
        "id": f"{resource_id}/providers/Microsoft.Insights/metrics/{name}",
        "type": "Microsoft.Insights/metrics",
        "name": {"value": name, "localizedValue": name},
        "displayDescription": "",
        "unit": unit,
        "timeseries": timeseries,
        "errorCode": "Success",
    }


def _autoscale_problem(state: FakeState, properties: dict[str, Any]) -> str | None:
    profiles = properties.get("profiles") or []
    if not profiles or len(profiles) > 20:
        return "An autoscale setting needs between 1 and 20 profiles."
    for profile in profiles:
        capacity = profile.get("capacity") or {}
        try:
            low, default, high = (int(capacity[k]) for k in ("minimum", "default", "maximum"))
        except (KeyError, ValueError):
            return f"Profile {profile.get('name')!r} needs a minimum, default and maximum capacity."
        if not low <= default <= high:
            return (
                f"Profile {profile.get('name')!r}: the capacity must satisfy minimum <= default "
                f"<= maximum, got {low}, {default}, {high}."
            )
        if profile.get("recurrence") and profile.get("fixedDate"):
            return f"Profile {profile.get('name')!r} cannot have both a recurrence and a fixedDate."
    target = properties.get("targetResourceUri") or ""
    if resource_type(target) == DEPLOYMENT_TYPE if "/providers/" in target else False:
        parts = target.rstrip("/").split("/")
        key = f"{parts[-3]}/{parts[-1]}"
        with state.lock:
            if key not in state.table(DEPLOYMENTS):
                return f"The target resource {target} was not found."
    return None
