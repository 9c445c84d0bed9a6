"""The fake's BigQuery REST API (v2): what google-cloud-bigquery sends for our reads and for
tests' writes.

- `POST /bigquery/v2/projects/{p}/datasets/{d}/tables/{t}/insertAll` (`insert_rows_json`):
  rows are stored per table (the dataset and table spring into being, as a streaming insert
  into a table Vertex created would find them);
- `POST /bigquery/v2/projects/{p}/queries` (`query_and_wait`, jobs.query): the fake evaluates
  exactly the query shape our readers send,

      SELECT <columns> FROM `project.dataset.table`
      WHERE <time column> >= @start AND <time column> < @end

  with TIMESTAMP parameters, and answers every row in one response (real BigQuery may page;
  the SDK follows pages itself). Any other SQL is refused with 400, so a reader that drifts
  from that shape fails loudly instead of being answered wrongly.

Values come back as the REST API encodes them: TIMESTAMP as integer microseconds when the
request asks `formatOptions.useInt64Timestamp` (the SDK always does), REPEATED fields as
`{"v": [{"v": ...}, ...]}`, everything else as strings.
"""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from tests.support.vertex_fake.endpoints import error, fault
from tests.support.vertex_fake.server import FakeState

TABLES = "bigqueryTables"
# Column -> (type, mode) of the tables tests write: Vertex's request-response logging table and
# a ground-truth table (told apart by `logging_time`). Other columns are typed STRING.
LOGGING_SCHEMA: dict[str, tuple[str, str]] = {
    "endpoint": ("STRING", "NULLABLE"),
    "deployed_model_id": ("STRING", "NULLABLE"),
    "logging_time": ("TIMESTAMP", "NULLABLE"),
    "request_id": ("NUMERIC", "NULLABLE"),
    "request_payload": ("STRING", "REPEATED"),
    "response_payload": ("STRING", "REPEATED"),
}
TRUTH_SCHEMA: dict[str, tuple[str, str]] = {
    "request_id": ("STRING", "NULLABLE"),
    "label": ("FLOAT", "NULLABLE"),
    "received_at": ("TIMESTAMP", "NULLABLE"),
}
_QUERY = re.compile(
    r"^\s*SELECT\s+(?P<columns>[\w\s,]+?)\s+FROM\s+`(?P<table>[\w.-]+)`\s+"
    r"WHERE\s+(?P<time>\w+)\s*>=\s*@start\s+AND\s+(?P=time)\s*<\s*@end\s*$",
    re.IGNORECASE | re.DOTALL,
)
_jobs = itertools.count(1)


def _time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace(" ", "T", 1).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def insert_rows(state: FakeState, table: str, rows: list[dict[str, Any]]) -> None:
    """Rows written as the platform (or a user's job) would: `table` is `project.dataset.t`."""
    with state.lock:
        state.table(TABLES).setdefault(table, []).extend(dict(row) for row in rows)


def rows_of(state: FakeState, table: str) -> list[dict[str, Any]]:
    with state.lock:
        return list(state.table(TABLES).get(table, []))


def _encode(value: Any, kind: str, mode: str, int64_time: bool) -> Any:
    if mode == "REPEATED":
        return [{"v": str(item)} for item in value or []]
    if value is None:
        return None
    if kind == "TIMESTAMP":
        moment = _time(value) if isinstance(value, str) else value
        micros = round(moment.timestamp() * 1_000_000)
        return str(micros) if int64_time else f"{micros / 1_000_000:.6f}"
    return str(value)


def routes(state: FakeState) -> list[BaseRoute]:
    async def insert_all(request: Request) -> JSONResponse:
        if (failed := fault(state, request)) is not None:
            return failed
        params = request.path_params
        table = f"{params['project']}.{params['dataset']}.{params['table']}"
        body = await request.json()
        insert_rows(state, table, [row["json"] for row in body.get("rows", [])])
        return JSONResponse({"kind": "bigquery#tableDataInsertAllResponse"})

    async def query(request: Request) -> JSONResponse:
        if (failed := fault(state, request)) is not None:
            return failed
        body = await request.json()
        match = _QUERY.match(body.get("query", ""))
        if match is None:
            return error(400, f"the fake answers only our reads' SQL, not {body.get('query')!r}")
        parameters = {
            p["name"]: p["parameterValue"]["value"] for p in body.get("queryParameters", [])
        }
        if set(parameters) != {"start", "end"}:
            return error(400, f"expected the parameters start and end, got {sorted(parameters)}")
        start, end = _time(parameters["start"]), _time(parameters["end"])
        columns = [name.strip() for name in match["columns"].split(",")]
        time_column = match["time"]
        with state.lock:
            if match["table"] not in state.table(TABLES):
                return error(404, f"Not found: Table {match['table']}")
            stored = list(state.table(TABLES)[match["table"]])
        int64_time = bool(body.get("formatOptions", {}).get("useInt64Timestamp"))
        known = LOGGING_SCHEMA if any("logging_time" in row for row in stored) else TRUTH_SCHEMA
        types = [known.get(c, ("STRING", "NULLABLE")) for c in columns]
        selected = [
            row
            for row in stored
            if row.get(time_column) is not None and start <= _time(row[time_column]) < end
        ]
        job = f"fake-job-{next(_jobs)}"
        return JSONResponse(
            {
                "kind": "bigquery#queryResponse",
                "schema": {
                    "fields": [
                        {"name": c, "type": kind, "mode": mode}
                        for c, (kind, mode) in zip(columns, types, strict=True)
                    ]
                },
                "jobReference": {
                    "projectId": request.path_params["project"],
                    "jobId": job,
                    "location": "US",
                },
                "totalRows": str(len(selected)),
                "rows": [
                    {
                        "f": [
                            {"v": _encode(row.get(c), kind, mode, int64_time)}
                            for c, (kind, mode) in zip(columns, types, strict=True)
                        ]
                    }
                    for row in selected
                ],
                "jobComplete": True,
                "cacheHit": False,
            }
        )

    base = "/bigquery/v2/projects/{project}"
    return [
        Route(base + "/datasets/{dataset}/tables/{table}/insertAll", insert_all, methods=["POST"]),
        Route(base + "/queries", query, methods=["POST"]),
    ]
