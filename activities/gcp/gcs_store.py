"""Cloud Storage as the `ObjectStore`: list, head, atomic download, labelled upload, put_text.

Every call goes through `gcp_call`, so 429/5xx are retryable and a missing bucket or a denied
permission is non-retryable with Google's message. The etag is the object's md5 (base64), or
its crc32c for composite objects, which have no md5: both are content fingerprints, unlike the
GCS etag, which changes with metadata. The storage library's own retries are off (`retry=None`):
Temporal retries the activity, with heartbeats and a visible attempt count, instead of the
library sleeping silently for up to two minutes.
"""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.api_core import exceptions as gexc

from activities.files import plain_permissions
from activities.gcp.clients import GcpClients
from activities.gcp.errors import gcp_call
from activities.mirror import split_uri
from activities.ports import StoredObject


def gcs_location(uri: str) -> tuple[str, str]:
    scheme, bucket, name = split_uri(uri)
    if scheme != "gs":
        raise ValueError(f"not a gs:// uri: {uri!r}")
    return bucket, name


def _stored(blob: Any) -> StoredObject:
    updated: datetime = blob.updated or datetime.now(UTC)
    return StoredObject(
        uri=f"gs://{blob.bucket.name}/{blob.name}",
        size=int(blob.size or 0),
        etag=str(blob.md5_hash or blob.crc32c),
        updated=updated,
    )


class GcsStore:
    def __init__(self, clients: GcpClients) -> None:
        self.clients = clients

    @property
    def _storage(self) -> Any:
        return self.clients.storage

    def list(self, prefix_uri: str) -> list[StoredObject]:
        bucket, prefix = gcs_location(prefix_uri)
        with gcp_call(f"list gs://{bucket}/{prefix}"):
            found = [
                _stored(blob)
                for blob in self._storage.list_blobs(bucket, prefix=prefix, retry=None)
            ]
        return sorted(found, key=lambda stored: stored.uri)

    def head(self, uri: str) -> StoredObject | None:
        bucket, name = gcs_location(uri)
        with gcp_call(f"get metadata of {uri}"):
            blob = self._storage.bucket(bucket).get_blob(name, retry=None)
        return None if blob is None else _stored(blob)

    def download(self, uri: str, target: Path) -> StoredObject:
        bucket, name = gcs_location(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Into a temporary file next to the target, then renamed: readers never see half a file.
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        plain_permissions(fd)
        os.close(fd)
        try:
            with gcp_call(f"download {uri}"):
                blob = self._storage.bucket(bucket).get_blob(name, retry=None)
                if blob is None:
                    raise gexc.NotFound(f"no object {uri}")  # type: ignore[no-untyped-call]
                # Pinned to the generation just read, so metadata and content are one version.
                blob.download_to_filename(tmp, if_generation_match=blob.generation, retry=None)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return _stored(blob)

    def upload(self, source: Path, uri: str, tags: dict[str, str] | None = None) -> StoredObject:
        bucket, name = gcs_location(uri)
        blob = self._storage.bucket(bucket).blob(name)
        if tags:
            blob.metadata = dict(tags)
        with gcp_call(f"upload {uri}"):
            blob.upload_from_filename(str(source), retry=None)
        return _stored(blob)

    def put_text(self, uri: str, text: str, content_type: str = "application/json") -> str:
        bucket, name = gcs_location(uri)
        with gcp_call(f"upload {uri}"):
            self._storage.bucket(bucket).blob(name).upload_from_string(
                text, content_type=content_type, retry=None
            )
        return uri

    def delete_prefix(self, prefix_uri: str) -> None:
        """Delete every object under the prefix (a run's staged inputs once trained)."""
        bucket, prefix = gcs_location(prefix_uri)
        with gcp_call(f"delete gs://{bucket}/{prefix}"):
            for blob in self._storage.list_blobs(bucket, prefix=prefix, retry=None):
                try:
                    blob.delete(retry=None)
                except gexc.NotFound:
                    continue
