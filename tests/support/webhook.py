"""A Slack-compatible incoming webhook on loopback: records every POST, answers 200.

The `webhook` fixture sets `WEBHOOK_ENV` to its URL; a spec whose `notifications.webhook_url_env`
names that variable has every notification delivered here by the real `notify` activity.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.support.helpers import eventually
from workflows.spec.models import ModelSpec

WEBHOOK_ENV = "RETRAIN_TEST_WEBHOOK_URL"


class WebhookReceiver:
    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        received = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T0/B0/test"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def texts(self) -> list[str]:
        return [str(post.get("text", "")) for post in list(self.posts)]

    def subjects(self) -> list[str]:
        """The first line of each message (`*subject*`), without the bold markers."""
        return [text.split("\n", 1)[0].strip("*") for text in self.texts()]

    async def wait_for(self, count: int, timeout: float = 30) -> list[str]:
        """The subjects, once at least `count` messages arrived (deliveries are activities)."""

        async def enough() -> list[str] | None:
            subjects = self.subjects()
            return subjects if len(subjects) >= count else None

        return await eventually(enough, timeout=timeout, what=f"{count} webhook messages")

    async def wait_for_subject(self, fragment: str, timeout: float = 30) -> str:
        """The first subject containing `fragment`, once it arrived."""

        async def arrived() -> str | None:
            return next((s for s in self.subjects() if fragment in s), None)

        return await eventually(arrived, timeout=timeout, what=f"a webhook message {fragment!r}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def with_webhook(spec: ModelSpec) -> ModelSpec:
    return spec.model_copy(
        update={
            "notifications": spec.notifications.model_copy(update={"webhook_url_env": WEBHOOK_ENV})
        }
    )


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    monkeypatch.setenv(WEBHOOK_ENV, receiver.url)
    try:
        yield receiver
    finally:
        receiver.close()
