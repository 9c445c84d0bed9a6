"""Who may post events: per-source secrets from the environment, checked in constant time.

Each source (`eventbridge`, `s3`, `sns`, `pubsub`, `alertmanager`, `eventgrid`, `azuremonitor`)
has a shared token, an HMAC
key, or both, from `RETRAIN_GATEWAY_TOKEN_<SOURCE>` / `RETRAIN_GATEWAY_HMAC_<SOURCE>`, or from
the file the same name plus `_FILE` points at (Docker and Kubernetes secrets). A request
passes when one credential it carries is valid:

- `Authorization: Bearer <token>`;
- `Authorization: Basic ...` whose password is the token (SNS HTTPS subscriptions can only
  carry credentials in the URL, as basic auth; the user name is ignored);
- `?token=<token>`, for Pub/Sub push, Event Grid and Azure Monitor webhooks only: the way each
  provider documents a shared secret for a webhook it calls (Google's advice for push endpoints
  without OIDC; Event Grid's secret query parameter, also sent with its validation handshake;
  an action group webhook's URI token). Query strings end up in access logs, so no other source
  accepts it. (Event Grid can send `Authorization: Bearer <token>` as a delivery property
  instead; their Entra-signed tokens would need Microsoft's signing keys, an outbound call the
  gateway never makes.)
- `X-Retrain-Timestamp: <Unix seconds>` with `X-Retrain-Signature: sha256=<hex>`: HMAC-SHA256
  under the source's key of `<timestamp>.` followed by the raw body. The timestamp must be
  within `SIGNATURE_TOLERANCE` of the gateway's clock, and a signature is accepted once
  (`ReplayGuard`): a captured request cannot be sent again, later or twice (a body-only
  signature, which could be replayed for ever, is refused).

A source without any secret refuses everything: an unconfigured source is closed, not open.
Error messages never quote what was presented (a token sent in the wrong place stays unechoed,
in the answer and in the log).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

SOURCES = ("eventbridge", "s3", "sns", "pubsub", "alertmanager", "eventgrid", "azuremonitor")
TOKEN_PREFIX = "RETRAIN_GATEWAY_TOKEN_"
HMAC_PREFIX = "RETRAIN_GATEWAY_HMAC_"
SIGNATURE_HEADER = "x-retrain-signature"
TIMESTAMP_HEADER = "x-retrain-timestamp"
# How far a signed request's timestamp may be from the gateway's clock (either way).
SIGNATURE_TOLERANCE_SECONDS = 300
QUERY_TOKEN_SOURCES = frozenset({"pubsub", "eventgrid", "azuremonitor"})
REALM = "retrain-gateway"


class SecretsError(ValueError):
    """The gateway's secrets are misconfigured (the message names the variable, never a value)."""


class Unauthorized(Exception):
    """The request carries no valid credential for its source (answered 401)."""


@dataclass(frozen=True)
class SourceSecrets:
    token: bytes | None = None
    hmac_key: bytes | None = None

    @property
    def configured(self) -> bool:
        return self.token is not None or self.hmac_key is not None


@dataclass(frozen=True)
class Credentials:
    """What a request presents; gathered from headers and query, checked by `authenticate`."""

    bearer: str | None = None
    basic_password: str | None = None
    query_token: str | None = None
    signature: str | None = None
    timestamp: str | None = None
    malformed: str | None = None


def _secret(environ: Mapping[str, str], name: str) -> bytes | None:
    direct, file_name = environ.get(name), environ.get(f"{name}_FILE")
    if direct is not None and file_name is not None:
        raise SecretsError(f"set {name} or {name}_FILE, not both")
    if file_name is not None:
        try:
            direct = Path(file_name).read_text(encoding="utf-8").strip()
        except OSError as err:
            raise SecretsError(f"{name}_FILE: cannot read {file_name}: {err.strerror}") from None
    if direct is None:
        return None
    if not direct.strip():
        raise SecretsError(f"{name} is empty")
    return direct.strip().encode()


def load_secrets(environ: Mapping[str, str]) -> dict[str, SourceSecrets]:
    """Every source's secrets; a variable naming an unknown source is an error (a typo there
    would otherwise leave the intended source closed without saying why)."""
    for key in environ:
        for prefix in (TOKEN_PREFIX, HMAC_PREFIX):
            if key.startswith(prefix):
                source = key.removeprefix(prefix).removesuffix("_FILE").lower()
                if source not in SOURCES:
                    raise SecretsError(
                        f"{key}: unknown source {source!r} (sources: {', '.join(SOURCES)})"
                    )
    return {
        source: SourceSecrets(
            token=_secret(environ, TOKEN_PREFIX + source.upper()),
            hmac_key=_secret(environ, HMAC_PREFIX + source.upper()),
        )
        for source in SOURCES
    }


def credentials(source: str, headers: Mapping[str, str], query: Mapping[str, str]) -> Credentials:
    """The credentials a request carries (header names in lower case, as ASGI gives them)."""
    bearer = basic = malformed = None
    authorization = headers.get("authorization", "")
    scheme, _, value = authorization.partition(" ")
    if authorization and scheme.lower() == "bearer":
        bearer = value.strip()
    elif authorization and scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            malformed = "malformed basic credentials"
        else:
            _, sep, basic = decoded.partition(":")
            if not sep:
                malformed, basic = "malformed basic credentials (no ':')", None
    elif authorization:
        # Never quoted: a bare token sent without a scheme would be echoed back (and logged).
        malformed = "unsupported authorization scheme (use Bearer or Basic)"
    query_token = query.get("token") if source in QUERY_TOKEN_SOURCES else None
    return Credentials(
        bearer=bearer,
        basic_password=basic,
        query_token=query_token,
        signature=headers.get(SIGNATURE_HEADER),
        timestamp=headers.get(TIMESTAMP_HEADER),
        malformed=malformed,
    )


def signature(key: bytes, body: bytes, timestamp: str) -> str:
    """The `X-Retrain-Signature` value for `body` sent at `timestamp` (Unix seconds, as sent in
    `X-Retrain-Timestamp`): what senders compute."""
    signed = timestamp.encode() + b"." + body
    return "sha256=" + hmac.new(key, signed, hashlib.sha256).hexdigest()


def signed_headers(key: bytes, body: bytes, now: float | None = None) -> dict[str, str]:
    """The two headers a sender adds (for senders written in Python, and tests)."""
    timestamp = str(int(time.time() if now is None else now))
    return {
        "X-Retrain-Timestamp": timestamp,
        "X-Retrain-Signature": signature(key, body, timestamp),
    }


class ReplayGuard:
    """Signatures accepted within the tolerance window: each is accepted once. Older ones need
    no memory (their timestamp is refused). In memory: after a restart, a replay inside the
    window is still answered by the coordinators' deduplication of event ids."""

    def __init__(
        self,
        tolerance: float = SIGNATURE_TOLERANCE_SECONDS,
        clock: Callable[[], float] = time.time,
        capacity: int = 100_000,
    ) -> None:
        self.tolerance = tolerance
        self.clock = clock
        self.capacity = capacity
        self._seen: OrderedDict[str, float] = OrderedDict()

    def fresh(self, timestamp: str | None) -> str | None:
        """Why the timestamp is unacceptable, or None."""
        if timestamp is None:
            return f"signed requests need the {TIMESTAMP_HEADER} header (Unix seconds)"
        text = timestamp.strip()
        if not (text.isascii() and text.isdigit() and len(text) <= 12):
            return f"{TIMESTAMP_HEADER} must be Unix seconds"
        skew = abs(self.clock() - int(text))
        if skew > self.tolerance:
            return (
                f"signature timestamp is {skew:.0f}s from the gateway's clock "
                f"(at most {self.tolerance:.0f}s)"
            )
        return None

    def first_use(self, digest: str) -> bool:
        """Remember `digest`; False when it was seen within the window (a replay)."""
        now = self.clock()
        while self._seen and (
            len(self._seen) >= self.capacity
            or next(iter(self._seen.values())) < now - 2 * self.tolerance
        ):
            self._seen.popitem(last=False)
        if digest in self._seen:
            return False
        self._seen[digest] = now
        return True


def _same(given: str, expected: bytes) -> bool:
    # Digests first: compare_digest on the raw values could reveal the secret's length.
    return hmac.compare_digest(
        hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected).digest()
    )


def authenticate(
    source: str,
    secrets: SourceSecrets,
    found: Credentials,
    body: bytes,
    replays: ReplayGuard | None = None,
) -> None:
    """Raise Unauthorized unless one presented credential is valid for `source`."""
    if not secrets.configured:
        raise Unauthorized(
            f"no credentials configured for source {source}: set "
            f"{TOKEN_PREFIX}{source.upper()} or {HMAC_PREFIX}{source.upper()}"
        )
    problems = [found.malformed] if found.malformed else []
    tokens = [t for t in (found.bearer, found.basic_password, found.query_token) if t]
    if tokens:
        if secrets.token is not None and any(_same(t, secrets.token) for t in tokens):
            return
        problems.append("invalid token" if secrets.token is not None else "tokens not accepted")
    if found.signature:
        guard = replays or ReplayGuard()
        stale = guard.fresh(found.timestamp)
        if secrets.hmac_key is None:
            problems.append("signatures not accepted")
        elif stale is not None:
            problems.append(stale)
        elif not _same(
            found.signature.strip().lower(),
            signature(secrets.hmac_key, body, (found.timestamp or "").strip()).encode(),
        ):
            problems.append("invalid signature")
        elif not guard.first_use(found.signature.strip().lower()):
            problems.append("this signed request was already received (a replay)")
        else:
            return
    if problems:
        raise Unauthorized(f"{source}: {'; '.join(problems)}")
    accepted = []
    if secrets.token is not None:
        accepted.append("Authorization: Bearer <token> or basic auth with the token as password")
        if source in QUERY_TOKEN_SOURCES:
            accepted.append("?token=<token>")
    if secrets.hmac_key is not None:
        accepted.append(
            "X-Retrain-Timestamp: <Unix seconds> with X-Retrain-Signature: "
            "sha256=<hex HMAC-SHA256 of '<timestamp>.<body>'>"
        )
    raise Unauthorized(f"{source}: missing credentials (send {' or '.join(accepted)})")
