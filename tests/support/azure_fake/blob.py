"""Azure Blob Storage, enough for azure-storage-blob's container and block-blob calls.

Containers: create (`PUT ?restype=container`), properties, list blobs (`?restype=container&
comp=list`, prefix, marker/maxresults paging, metadata) in the service's XML. Blobs: single-
shot upload (`PUT`, x-ms-blob-type BlockBlob) with If-Match / If-None-Match, download with
`x-ms-range` (206 + Content-Range, as the SDK's first chunk expects), HEAD (properties and
x-ms-meta-*), DELETE. Every write gets a new quoted ETag and Last-Modified; failures carry
x-ms-error-code and the XML error body (BlobNotFound, ContainerNotFound, ConditionNotMet,
BlobAlreadyExists). Tests read and write blobs directly with `put_blob` / `get_blob`.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from xml.sax.saxutils import escape

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tests.support.azure_fake.server import FakeState, handled

BLOBS = "blobs"  # "account/container/name" -> (properties, bytes)
CONTAINERS = "blob.containers"  # "account/container" -> properties
HOST = "{account}.blob.core.windows.net"
_etags = itertools.count(0x8DC000000000000)


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _http_date(when: datetime) -> str:
    return format_datetime(when, usegmt=True)


def _etag() -> str:
    return f'"0x{next(_etags):X}"'


def _error(status: int, code: str, message: str) -> Response:
    body = (
        '<?xml version="1.0" encoding="utf-8"?>'
        f"<Error><Code>{code}</Code><Message>{escape(message)}</Message></Error>"
    )
    return handled(Response(body, status, {"x-ms-error-code": code}, media_type="application/xml"))


def create_container(state: FakeState, account: str, container: str) -> None:
    with state.lock:
        state.table(CONTAINERS).setdefault(
            f"{account}/{container}", {"etag": _etag(), "modified": _now()}
        )


def put_blob(
    state: FakeState,
    account: str,
    container: str,
    name: str,
    data: bytes,
    content_type: str = "application/octet-stream",
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Write a blob as a writer outside the SDK would (a data collector, a test)."""
    create_container(state, account, container)
    properties = {
        "etag": _etag(),
        "modified": _now(),
        "created": _now(),
        "type": content_type,
        "md5": base64.b64encode(hashlib.md5(data).digest()).decode(),
        "metadata": dict(metadata or {}),
    }
    with state.lock:
        previous = state.table(BLOBS).get(f"{account}/{container}/{name}")
        if previous is not None:
            properties["created"] = previous[0]["created"]
        state.table(BLOBS)[f"{account}/{container}/{name}"] = (properties, data)
    return properties


def get_blob(state: FakeState, account: str, container: str, name: str) -> bytes | None:
    with state.lock:
        found = state.table(BLOBS).get(f"{account}/{container}/{name}")
    return None if found is None else found[1]


def blob_names(state: FakeState, account: str, container: str, prefix: str = "") -> list[str]:
    start = f"{account}/{container}/"
    with state.lock:
        return sorted(
            key[len(start) :] for key in state.table(BLOBS) if key.startswith(start + prefix)
        )


def _headers(properties: dict[str, Any], length: int) -> dict[str, str]:
    headers = {
        "ETag": properties["etag"],
        "Last-Modified": format_datetime(properties["modified"], usegmt=True),
        "x-ms-creation-time": format_datetime(properties["created"], usegmt=True),
        "Content-Type": properties["type"],
        "Content-Length": str(length),
        "Content-MD5": properties["md5"],
        "x-ms-blob-type": "BlockBlob",
        "x-ms-server-encrypted": "true",
        "x-ms-lease-state": "available",
        "x-ms-lease-status": "unlocked",
        "Accept-Ranges": "bytes",
        "x-ms-version": "2025-01-05",
    }
    headers.update({f"x-ms-meta-{k}": v for k, v in properties["metadata"].items()})
    return headers


def routes(state: FakeState) -> list[tuple[str, list[BaseRoute]]]:
    def precondition(request: Request, current: dict[str, Any] | None) -> Response | None:
        match = request.headers.get("if-match")
        none_match = request.headers.get("if-none-match")
        if match is not None and (current is None or (match != "*" and match != current["etag"])):
            if current is None:
                return _error(404, "BlobNotFound", "The specified blob does not exist.")
            return _error(
                412,
                "ConditionNotMet",
                "The condition specified using HTTP conditional header(s) is not met.",
            )
        if none_match is not None and current is not None:
            if none_match == "*":
                return _error(409, "BlobAlreadyExists", "The specified blob already exists.")
            if none_match == current["etag"]:
                if request.method in ("GET", "HEAD"):
                    return Response(status_code=304)
                return _error(
                    412,
                    "ConditionNotMet",
                    "The condition specified using HTTP conditional header(s) is not met.",
                )
        return None

    async def container(request: Request) -> Response:
        account = request.path_params["account"]
        name = request.path_params["container"]
        key = f"{account}/{name}"
        if request.query_params.get("restype") != "container":
            return _error(400, "InvalidQueryParameterValue", "restype=container is required.")
        with state.lock:
            found = state.table(CONTAINERS).get(key)
            if request.method == "PUT":
                if found is not None:
                    return _error(
                        409, "ContainerAlreadyExists", "The specified container already exists."
                    )
                create_container(state, account, name)
                properties = state.table(CONTAINERS)[key]
                return Response(status_code=201, headers={"ETag": properties["etag"]})
            if found is None:
                return _error(404, "ContainerNotFound", "The specified container does not exist.")
            if request.query_params.get("comp") == "list":
                return _list(request, account, name)
            return Response(
                status_code=200,
                headers={
                    "ETag": found["etag"],
                    "Last-Modified": format_datetime(found["modified"], usegmt=True),
                },
            )

    def _list(request: Request, account: str, container_name: str) -> Response:
        prefix = request.query_params.get("prefix", "")
        marker = request.query_params.get("marker", "")
        size = int(request.query_params.get("maxresults", "5000"))
        with_metadata = "metadata" in request.query_params.get("include", "")
        names = [n for n in blob_names(state, account, container_name, prefix) if n >= marker]
        page, rest = names[:size], names[size:]
        items = []
        for name in page:
            properties, data = state.table(BLOBS)[f"{account}/{container_name}/{name}"]
            metadata = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in properties["metadata"].items())
            items.append(
                f"<Blob><Name>{escape(name)}</Name><Properties>"
                f"<Creation-Time>{_http_date(properties['created'])}</Creation-Time>"
                f"<Last-Modified>{_http_date(properties['modified'])}</Last-Modified>"
                f"<Etag>{properties['etag']}</Etag><Content-Length>{len(data)}</Content-Length>"
                f"<Content-Type>{escape(properties['type'])}</Content-Type>"
                f"<Content-MD5>{properties['md5']}</Content-MD5><BlobType>BlockBlob</BlobType>"
                "<AccessTier>Hot</AccessTier><AccessTierInferred>true</AccessTierInferred>"
                "<LeaseStatus>unlocked</LeaseStatus><LeaseState>available</LeaseState>"
                "<ServerEncrypted>true</ServerEncrypted></Properties>"
                + (f"<Metadata>{metadata}</Metadata>" if with_metadata else "")
                + "</Blob>"
            )
        body = (
            '<?xml version="1.0" encoding="utf-8"?>'
            f'<EnumerationResults ServiceEndpoint="https://{account}.blob.core.windows.net/" '
            f'ContainerName="{escape(container_name)}"><Prefix>{escape(prefix)}</Prefix>'
            f"<Marker>{escape(marker)}</Marker><MaxResults>{size}</MaxResults>"
            f"<Blobs>{''.join(items)}</Blobs>"
            f"<NextMarker>{escape(rest[0]) if rest else ''}</NextMarker></EnumerationResults>"
        )
        return Response(body, media_type="application/xml")

    async def blob(request: Request) -> Response:
        account = request.path_params["account"]
        container_name, name = request.path_params["container"], request.path_params["name"]
        key = f"{account}/{container_name}/{name}"
        if request.query_params.get("comp"):
            return _error(
                400,
                "UnsupportedQueryParameter",
                f"the fake does not implement comp={request.query_params['comp']}",
            )
        body = await request.body() if request.method == "PUT" else b""
        with state.lock:
            if f"{account}/{container_name}" not in state.table(CONTAINERS):
                return _error(404, "ContainerNotFound", "The specified container does not exist.")
            found = state.table(BLOBS).get(key)
            current = found[0] if found else None
            if (refused := precondition(request, current)) is not None:
                return refused
            if request.method == "PUT":
                if request.headers.get("x-ms-blob-type") != "BlockBlob":
                    return _error(
                        400, "InvalidHeaderValue", "Only block blobs are supported by the fake."
                    )
                metadata = {
                    k[len("x-ms-meta-") :]: v
                    for k, v in request.headers.items()
                    if k.startswith("x-ms-meta-")
                }
                properties = put_blob(
                    state,
                    account,
                    container_name,
                    name,
                    body,
                    request.headers.get("x-ms-blob-content-type", "application/octet-stream"),
                    metadata,
                )
                return Response(
                    status_code=201,
                    headers={
                        "ETag": properties["etag"],
                        "Last-Modified": format_datetime(properties["modified"], usegmt=True),
                        "Content-MD5": properties["md5"],
                        "x-ms-request-server-encrypted": "true",
                    },
                )
            if found is None:
                return _error(404, "BlobNotFound", "The specified blob does not exist.")
            properties, data = found
            if request.method == "DELETE":
                del state.table(BLOBS)[key]
                return Response(status_code=202)
        if request.method == "HEAD":
            return Response(status_code=200, headers=_headers(properties, len(data)))
        wanted = request.headers.get("x-ms-range") or request.headers.get("range")
        if wanted:
            first_text, _, last_text = wanted.removeprefix("bytes=").partition("-")
            first = int(first_text)
            if first >= len(data) and data:
                return _error(
                    416,
                    "InvalidRange",
                    "The range specified is invalid for the current size of the resource.",
                )
            last = min(int(last_text) if last_text else len(data) - 1, len(data) - 1)
            part = data[first : last + 1]
            headers = _headers(properties, len(part))
            headers["Content-Range"] = f"bytes {first}-{max(last, first)}/{len(data)}"
            if not data:
                headers["Content-Range"] = "bytes */0"
            return Response(part, 206 if data else 200, headers)
        return Response(data, 200, _headers(properties, len(data)))

    return [
        (
            HOST,
            [
                Route("/{container}", container, methods=["GET", "PUT", "HEAD"]),
                Route("/{container}/{name:path}", blob, methods=["GET", "PUT", "HEAD", "DELETE"]),
            ],
        )
    ]
