"""The fake's Pub/Sub REST API (v1): topics tests create, and `:publish` (what
google-cloud-pubsub's REST transport sends): each message stored with an id, the data decoded
from base64, its attributes as given. Publishing to a topic that does not exist is Pub/Sub's
404 NOT_FOUND."""

from __future__ import annotations

import base64
import itertools
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from tests.support.vertex_fake.endpoints import error, fault
from tests.support.vertex_fake.server import FakeState

TOPICS = "pubsubTopics"
_ids = itertools.count(1)


def create_topic(state: FakeState, topic: str) -> None:
    """`projects/<p>/topics/<t>`, as the user creates it."""
    with state.lock:
        state.table(TOPICS).setdefault(topic, [])


def messages(state: FakeState, topic: str) -> list[dict[str, Any]]:
    with state.lock:
        return list(state.table(TOPICS).get(topic, []))


def routes(state: FakeState) -> list[BaseRoute]:
    async def publish(request: Request) -> JSONResponse:
        if (failed := fault(state, request)) is not None:
            return failed
        topic_path, _, verb = request.path_params["tail"].partition(":")
        topic = f"projects/{request.path_params['project']}/topics/{topic_path}"
        if verb != "publish":
            return error(400, f"the fake does not implement topics:{verb}")
        body = await request.json()
        found = body.get("messages", [])
        if not found:
            return error(400, "At least one message is required")
        ids = []
        with state.lock:
            if topic not in state.table(TOPICS):
                return error(404, f"Resource not found (resource={topic_path}).")
            for message in found:
                ids.append(str(next(_ids)))
                state.table(TOPICS)[topic].append(
                    {
                        "messageId": ids[-1],
                        "data": base64.b64decode(message.get("data", "")).decode(),
                        "attributes": dict(message.get("attributes", {})),
                    }
                )
        return JSONResponse({"messageIds": ids})

    return [Route("/v1/projects/{project}/topics/{tail}", publish, methods=["POST"])]
