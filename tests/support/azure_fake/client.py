"""What points the real Azure SDKs at the fake: a loopback transport and a static credential.

Every azure-core client takes `transport=`: `LoopbackTransport` sends each request to the
fake's loopback address instead of the Azure host in its URL, and keeps that host in the Host
header, so the SDK builds its real `https://management.azure.com/...` (or blob, Event Grid)
URLs, its bearer-token policy sees HTTPS, and the fake routes by the host the SDK meant.
`StaticTokenCredential` stands in for Microsoft Entra ID, which we cannot reach.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import HttpRequest, HttpResponse, RequestsTransport

from tests.support.azure_fake.server import TOKEN


class LoopbackTransport(RequestsTransport):  # type: ignore[misc, unused-ignore]
    """azure-core's requests transport, connecting to the fake whatever host the URL names."""

    def __init__(self, fake_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._target = urlsplit(fake_url)
        self.hosts: set[str] = set()

    def send(self, request: HttpRequest, **kwargs: Any) -> HttpResponse:  # type: ignore[override, unused-ignore]
        original = request.url
        parts = urlsplit(original)
        self.hosts.add(parts.netloc)
        request.headers["Host"] = parts.netloc
        request.url = urlunsplit(
            (self._target.scheme, self._target.netloc, parts.path, parts.query, "")
        )
        try:
            response: HttpResponse = super().send(request, **kwargs)
            return response
        finally:
            # Retries and redirects resend this request object: it must still name Azure.
            request.url = original


class StaticTokenCredential:
    """A `TokenCredential` that returns one token for any scope, and counts what it was asked."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)
