"""Blob Storage as the `ObjectStore`: `az://<container>/<path>` URIs in the settings' account.

The `az://container/path` form is fsspec's (adlfs), with the account taken from the settings,
so a spec's data URIs read the same in a notebook. The etag is the blob's Content-MD5 (base64)
when Blob Storage has one (every single-shot upload), else its ETag: a content fingerprint
where possible. Downloads are atomic (a temporary file renamed) and pinned to the ETag just
read, so content and metadata are one version. No SDK retries (`AzureClients.options`).
"""

from __future__ import annotations

import base64
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import ContentSettings

from activities.azure.clients import AzureClients
from activities.azure.errors import azure_call
from activities.mirror import split_uri
from activities.ports import StoredObject


def blob_location(uri: str) -> tuple[str, str]:
    scheme, container, name = split_uri(uri)
    if scheme != "az":
        raise ValueError(f"not an az:// uri: {uri!r}")
    return container, name


def _fingerprint(properties: Any) -> str:
    md5 = getattr(properties.content_settings, "content_md5", None)
    if md5:
        return base64.b64encode(bytes(md5)).decode()
    return str(properties.etag).strip('"')


def _stored(container: str, properties: Any) -> StoredObject:
    updated: datetime = properties.last_modified or datetime.now(UTC)
    return StoredObject(
        uri=f"az://{container}/{properties.name}",
        size=int(properties.size or 0),
        etag=_fingerprint(properties),
        updated=updated,
    )


class BlobStore:
    def __init__(self, clients: AzureClients) -> None:
        self.clients = clients

    def _blob(self, uri: str) -> Any:
        container, name = blob_location(uri)
        return self.clients.blob.get_blob_client(container, name)

    def list(self, prefix_uri: str) -> list[StoredObject]:
        container, prefix = blob_location(prefix_uri)
        with azure_call(f"list az://{container}/{prefix}"):
            client = self.clients.blob.get_container_client(container)
            found = [_stored(container, b) for b in client.list_blobs(name_starts_with=prefix)]
        return sorted(found, key=lambda stored: stored.uri)

    def head(self, uri: str) -> StoredObject | None:
        container, _ = blob_location(uri)
        with azure_call(f"get properties of {uri}"):
            try:
                return _stored(container, self._blob(uri).get_blob_properties())
            except ResourceNotFoundError:
                return None

    def read_bytes(self, uri: str) -> tuple[bytes, StoredObject]:
        container, _ = blob_location(uri)
        with azure_call(f"download {uri}"):
            downloader = self._blob(uri).download_blob()
            data: bytes = downloader.readall()
        return data, _stored(container, downloader.properties)

    def download(self, uri: str, target: Path) -> StoredObject:
        container, _ = blob_location(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Into a temporary file next to the target, then renamed: readers never see half a file.
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with azure_call(f"download {uri}"):
                blob = self._blob(uri)
                properties = blob.get_blob_properties()
                downloader = blob.download_blob(
                    etag=properties.etag, match_condition=MatchConditions.IfNotModified
                )
                with os.fdopen(fd, "wb") as handle:
                    downloader.readinto(handle)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return _stored(container, properties)

    def upload(self, source: Path, uri: str, tags: dict[str, str] | None = None) -> StoredObject:
        with azure_call(f"upload {uri}"), source.open("rb") as data:
            blob = self._blob(uri)
            blob.upload_blob(data, overwrite=True, metadata=dict(tags) if tags else None)
        stored = self.head(uri)
        assert stored is not None
        return stored

    def put_text(self, uri: str, text: str, content_type: str = "application/json") -> str:
        with azure_call(f"upload {uri}"):
            self._blob(uri).upload_blob(
                text.encode(),
                overwrite=True,
                content_settings=ContentSettings(content_type=content_type),
            )
        return uri

    def delete_prefix(self, prefix_uri: str) -> None:
        """Delete every blob under the prefix (a run's staged inputs once trained)."""
        container, prefix = blob_location(prefix_uri)
        with azure_call(f"delete az://{container}/{prefix}"):
            client = self.clients.blob.get_container_client(container)
            for blob in client.list_blobs(name_starts_with=prefix):
                try:
                    client.delete_blob(blob.name)
                except ResourceNotFoundError:
                    continue
