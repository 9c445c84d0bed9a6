"""What our Starlette services share (the prediction endpoint, the event gateway): bodies read
with a size cap, and errors answered as `{"error": "..."}`."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from serving.schemas import BadRequest

logger = logging.getLogger(__name__)


async def read_capped_body(request: Request, limit: int) -> bytes:
    """The body, refused (BadRequest) as soon as it is known to exceed `limit`: the declared
    length is checked first, and the bytes actually received are counted whatever it said."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise BadRequest(400, "malformed_request", "invalid Content-Length header") from None
        if size > limit:
            raise BadRequest(413, "body_too_large", _too_large(size, limit))
    chunks: list[bytes] = []
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise BadRequest(413, "body_too_large", _too_large(received, limit))
            chunks.append(chunk)
    except ClientDisconnect:
        raise BadRequest(
            400, "client_disconnected", "the client went away before sending the whole body"
        ) from None
    return b"".join(chunks)


def _too_large(size: int, limit: int) -> str:
    return f"the body is {size} bytes or more; at most {limit} bytes are accepted"


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": message}, status, headers=headers)


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (404, 405) in our error shape."""
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, exc.status_code, headers=exc.headers)


async def internal_error(request: Request, exc: Exception) -> Response:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, f"internal error: {type(exc).__name__}")
