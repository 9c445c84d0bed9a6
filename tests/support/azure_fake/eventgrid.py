"""Event Grid custom topics: publishing events (`POST /api/events`), for notifications.

Both of Event Grid's schemas are accepted: EventGridEvent (a JSON array; each event needs id,
subject, eventType, eventTime, data and dataVersion) and CloudEvents 1.0 (content type
`application/cloudevents-batch+json`; id, source, type, specversion). A batch with a malformed
event is refused whole (400), as Event Grid does. The topic authenticates with its access key
(`aeg-sas-key`, one of `state.eventgrid_keys`) or a Microsoft Entra bearer token. Delivered
batches are kept per topic host in `state.tables["eventgrid"][host]` for tests to read.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tests.support.azure_fake.server import FakeState, arm_error

EVENTS = "eventgrid"
HOST = "{topic}.{region}.eventgrid.azure.net"
_EVENT_GRID_FIELDS = ("id", "subject", "eventType", "eventTime", "data", "dataVersion")
_CLOUD_EVENT_FIELDS = ("id", "source", "type", "specversion")


def published(state: FakeState, topic_host: str) -> list[dict[str, Any]]:
    with state.lock:
        return list(state.table(EVENTS).get(topic_host, []))


def routes(state: FakeState) -> list[tuple[str, list[BaseRoute]]]:
    async def publish(request: Request) -> Response:
        if not request.query_params.get("api-version"):
            return arm_error(400, "BadRequest", "The api-version query parameter is required.")
        try:
            batch = json.loads(await request.body())
        except ValueError:
            return arm_error(400, "BadRequest", "The request body is not valid JSON.")
        if not isinstance(batch, list):
            batch = [batch]
        cloud = "cloudevents" in request.headers.get("content-type", "")
        required = _CLOUD_EVENT_FIELDS if cloud else _EVENT_GRID_FIELDS
        for event in batch:
            missing = [field for field in required if field not in event]
            if missing:
                return arm_error(
                    400, "BadRequest", f"Event {event.get('id')!r} is missing {', '.join(missing)}."
                )
        host = request.headers["host"].split(":")[0]
        with state.lock:
            state.table(EVENTS).setdefault(host, []).extend(batch)
        return Response(status_code=200)

    return [(HOST, [Route("/api/events", publish, methods=["POST"])])]
