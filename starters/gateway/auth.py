"""Who may post events: per-source secrets from the environment, checked in constant time.

Each source (`eventbridge`, `s3`, `sns`, `pubsub`, `alertmanager`) has a shared token, an HMAC
key, or both, from `RETRAIN_GATEWAY_TOKEN_<SOURCE>` / `RETRAIN_GATEWAY_HMAC_<SOURCE>`, or from
the file the same name plus `_FILE` points at (Docker and Kubernetes secrets). A request
passes when one credential it carries is valid:

- `Authorization: Bearer <token>`;
- `Authorization: Basic ...` whose password is the token (SNS HTTPS subscriptions can only
  carry credentials in the URL, as basic auth; the user name is ignored);
- `?token=<token>`, for Pub/Sub push only (Google's advice for push endpoints without OIDC;
  query strings end up in access logs, so no other source accepts it);
- `X-Retrain-Signature: sha256=<hex>`: HMAC-SHA256 of the raw body under the source's key.

A source without any secret refuses everything: an unconfigured source is closed, not open.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

SOURCES = ("eventbridge", "s3", "sns", "pubsub", "alertmanager")
TOKEN_PREFIX = "RETRAIN_GATEWAY_TOKEN_"
HMAC_PREFIX = "RETRAIN_GATEWAY_HMAC_"
SIGNATURE_HEADER = "x-retrain-signature"
QUERY_TOKEN_SOURCES = frozenset({"pubsub"})
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
        malformed = f"unsupported authorization scheme {scheme!r}"
    query_token = query.get("token") if source in QUERY_TOKEN_SOURCES else None
    return Credentials(
        bearer=bearer,
        basic_password=basic,
        query_token=query_token,
        signature=headers.get(SIGNATURE_HEADER),
        malformed=malformed,
    )


def signature(key: bytes, body: bytes) -> str:
    """The `X-Retrain-Signature` value for `body`: what senders compute."""
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def _same(given: str, expected: bytes) -> bool:
    # Digests first: compare_digest on the raw values could reveal the secret's length.
    return hmac.compare_digest(
        hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected).digest()
    )


def authenticate(source: str, secrets: SourceSecrets, found: Credentials, body: bytes) -> None:
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
        if secrets.hmac_key is not None and _same(
            found.signature.strip().lower(), signature(secrets.hmac_key, body).encode()
        ):
            return
        problems.append(
            "invalid signature" if secrets.hmac_key is not None else "signatures not accepted"
        )
    if problems:
        raise Unauthorized(f"{source}: {'; '.join(problems)}")
    accepted = []
    if secrets.token is not None:
        accepted.append("Authorization: Bearer <token> or basic auth with the token as password")
        if source in QUERY_TOKEN_SOURCES:
            accepted.append("?token=<token>")
    if secrets.hmac_key is not None:
        accepted.append("X-Retrain-Signature: sha256=<hex HMAC-SHA256 of the body>")
    raise Unauthorized(f"{source}: missing credentials (send {' or '.join(accepted)})")
