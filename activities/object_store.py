"""Cloud object stores (S3, GCS) behind one Protocol, and where their objects are mirrored."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class StoredObject:
    uri: str  # s3://bucket/key or gs://bucket/key
    size: int
    # The store's content fingerprint: the S3 ETag, the GCS md5 (base64) or crc32c.
    etag: str
    updated: datetime


class ObjectStore(Protocol):
    """A cloud object store (S3, GCS). URIs are full `s3://` / `gs://` URIs."""

    def list(self, prefix_uri: str) -> list[StoredObject]:
        """Every object whose key starts with the prefix, sorted by uri."""
        ...

    def head(self, uri: str) -> StoredObject | None: ...

    def download(self, uri: str, target: Path) -> StoredObject:
        """Write the object to `target` (atomically) and return what was read."""
        ...

    def upload(
        self, source: Path, uri: str, tags: dict[str, str] | None = None
    ) -> StoredObject: ...

    def put_text(self, uri: str, text: str, content_type: str = "application/json") -> str: ...


REMOTE_SCHEMES = ("s3://", "gs://")


def is_remote(uri: str) -> bool:
    return uri.startswith(REMOTE_SCHEMES)


def split_uri(uri: str) -> tuple[str, str, str]:
    """`s3://bucket/a/b` -> ("s3", "bucket", "a/b")."""
    scheme, _, rest = uri.partition("://")
    bucket, _, key = rest.partition("/")
    if not scheme or not bucket:
        raise ValueError(f"not an object store uri: {uri!r}")
    return scheme, bucket, key


def mirror_root(home: Path) -> Path:
    return home / "mirror"


def mirror_path(home: Path, uri: str) -> Path:
    """Where a remote object is mirrored under the retrain home (`mirror/s3/bucket/key`)."""
    scheme, bucket, key = split_uri(uri)
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(f"refusing to mirror {uri!r}: its key is not a plain path")
    return mirror_root(home) / scheme / bucket / key


def remote_uri(home: Path, path: str | Path) -> str:
    """The remote uri a mirrored path stands for; any other path unchanged (as a string)."""
    try:
        relative = Path(path).resolve().relative_to(mirror_root(home).resolve())
    except ValueError:
        return str(path)
    scheme, bucket, *key = relative.parts
    return f"{scheme}://{bucket}/{'/'.join(key)}"


def remote_text(home: Path, text: str) -> str:
    """`text` with every mirrored path written as the remote uri it stands for."""
    root = str(mirror_root(home).resolve())
    for scheme in ("s3", "gs"):
        text = text.replace(f"{root}/{scheme}/", f"{scheme}://")
    return text
