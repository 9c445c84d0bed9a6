"""The fake's Cloud Storage JSON API: enough for google-cloud-storage's upload, download, list.

Buckets must exist before objects are written (as on GCS: a missing bucket is a 404 the store
reports as non-retryable). Every object carries md5Hash, crc32c (base64, as GCS), generation,
etag and custom metadata; downloads send `x-goog-hash` so the client verifies checksums.
Tests read and write objects directly through `put_object` / `get_object`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from datetime import UTC, datetime
from typing import Any

import google_crc32c  # type: ignore[import-untyped, unused-ignore]
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from tests.support.vertex_fake.server import FakeState, google_error

BUCKETS = "storage.buckets"
OBJECTS = "storage.objects"  # "bucket/name" -> (resource JSON, bytes)


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def create_bucket(state: FakeState, bucket: str) -> None:
    with state.lock:
        state.table(BUCKETS).setdefault(
            bucket, {"kind": "storage#bucket", "name": bucket, "id": bucket}
        )


def put_object(
    state: FakeState,
    bucket: str,
    name: str,
    data: bytes,
    content_type: str = "application/octet-stream",
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    with state.lock:
        objects = state.table(OBJECTS)
        previous = objects.get(f"{bucket}/{name}")
        generation = int(previous[0]["generation"]) + 1 if previous else 1
        md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
        crc = base64.b64encode(struct.pack(">I", google_crc32c.value(data))).decode()
        now = _now()
        resource: dict[str, Any] = {
            "kind": "storage#object",
            "id": f"{bucket}/{name}/{generation}",
            "name": name,
            "bucket": bucket,
            "generation": str(generation),
            "metageneration": "1",
            "contentType": content_type,
            "size": str(len(data)),
            "md5Hash": md5,
            "crc32c": crc,
            "etag": f"{md5[:10]}{generation}",
            "timeCreated": now,
            "updated": now,
        }
        if metadata:
            resource["metadata"] = dict(metadata)
        objects[f"{bucket}/{name}"] = (resource, data)
        return resource


def get_object(state: FakeState, bucket: str, name: str) -> bytes | None:
    with state.lock:
        found = state.table(OBJECTS).get(f"{bucket}/{name}")
        return None if found is None else bytes(found[1])


def object_names(state: FakeState, bucket: str, prefix: str = "") -> list[str]:
    with state.lock:
        return sorted(
            key.partition("/")[2]
            for key in state.table(OBJECTS)
            if key.startswith(f"{bucket}/{prefix}")
        )


def routes(state: FakeState) -> list[BaseRoute]:
    def missing_bucket(bucket: str) -> Response | None:
        if bucket not in state.table(BUCKETS):
            return google_error(404, f"The specified bucket does not exist: {bucket}")
        return None

    async def buckets(request: Request) -> Response:
        body = await request.json()
        create_bucket(state, body["name"])
        return JSONResponse(state.table(BUCKETS)[body["name"]])

    async def bucket(request: Request) -> Response:
        name = request.path_params["bucket"]
        return missing_bucket(name) or JSONResponse(state.table(BUCKETS)[name])

    async def list_objects(request: Request) -> Response:
        name = request.path_params["bucket"]
        if error := missing_bucket(name):
            return error
        prefix = request.query_params.get("prefix", "")
        start = int(request.query_params.get("pageToken", "0"))
        size = int(request.query_params.get("maxResults", "1000"))
        with state.lock:
            names = object_names(state, name, prefix)
            page = names[start : start + size]
            items = [state.table(OBJECTS)[f"{name}/{key}"][0] for key in page]
        body: dict[str, Any] = {"kind": "storage#objects", "items": items}
        if start + size < len(names):
            body["nextPageToken"] = str(start + size)
        return JSONResponse(body)

    async def one_object(request: Request) -> Response:
        bucket_name, name = request.path_params["bucket"], request.path_params["name"]
        if error := missing_bucket(bucket_name):
            return error
        with state.lock:
            found = state.table(OBJECTS).get(f"{bucket_name}/{name}")
            if found is None:
                return google_error(404, f"No such object: {bucket_name}/{name}")
            if request.method == "DELETE":
                del state.table(OBJECTS)[f"{bucket_name}/{name}"]
                return Response(status_code=204)
            return JSONResponse(found[0])

    async def upload(request: Request) -> Response:
        bucket_name = request.path_params["bucket"]
        if error := missing_bucket(bucket_name):
            return error
        kind = request.query_params.get("uploadType")
        body = await request.body()
        if kind == "media":
            meta: dict[str, Any] = {"name": request.query_params.get("name")}
            data = body
            content_type = request.headers.get("content-type", "application/octet-stream")
        elif kind == "multipart":
            meta, content_type, data = _multipart(request.headers["content-type"], body)
        else:
            return google_error(400, f"uploadType {kind!r} is not supported by the fake")
        name = meta.get("name") or request.query_params.get("name")
        if not name:
            return google_error(400, "an object needs a name")
        expected = request.query_params.get("ifGenerationMatch")
        with state.lock:
            found = state.table(OBJECTS).get(f"{bucket_name}/{name}")
            current = found[0]["generation"] if found else "0"
            if expected is not None and expected != current:
                return google_error(
                    412, "At least one of the pre-conditions you specified did not hold."
                )
            resource = put_object(
                state,
                bucket_name,
                name,
                data,
                meta.get("contentType") or content_type,
                meta.get("metadata"),
            )
        return JSONResponse(resource)

    async def download(request: Request) -> Response:
        bucket_name, name = request.path_params["bucket"], request.path_params["name"]
        if error := missing_bucket(bucket_name):
            return error
        with state.lock:
            found = state.table(OBJECTS).get(f"{bucket_name}/{name}")
        if found is None:
            return google_error(404, f"No such object: {bucket_name}/{name}")
        resource, data = found
        headers = {
            "x-goog-hash": f"crc32c={resource['crc32c']},md5={resource['md5Hash']}",
            "x-goog-generation": resource["generation"],
            "etag": resource["etag"],
        }
        return Response(data, media_type=resource["contentType"], headers=headers)

    prefix = "/storage/v1/b"
    return [
        Route(prefix, buckets, methods=["POST"]),
        Route(prefix + "/{bucket}", bucket, methods=["GET"]),
        Route(prefix + "/{bucket}/o", list_objects, methods=["GET"]),
        Route(prefix + "/{bucket}/o/{name:path}", one_object, methods=["GET", "DELETE"]),
        Route("/upload" + prefix + "/{bucket}/o", upload, methods=["POST"]),
        Route("/download" + prefix + "/{bucket}/o/{name:path}", download, methods=["GET"]),
    ]


def _multipart(content_type: str, body: bytes) -> tuple[dict[str, Any], str, bytes]:
    """The JSON metadata part and the media part of a `multipart/related` upload."""
    boundary = content_type.split("boundary=", 1)[1].strip('"').encode()
    parts = [part for part in body.split(b"--" + boundary) if part not in (b"", b"--", b"--\r\n")]
    decoded: list[tuple[dict[str, str], bytes]] = []
    for part in parts[:2]:
        head, _, content = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode().split("\r\n"):
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        decoded.append((headers, content.removesuffix(b"\r\n")))
    (_, meta), (media_headers, data) = decoded
    return json.loads(meta), media_headers.get("content-type", "application/octet-stream"), data
