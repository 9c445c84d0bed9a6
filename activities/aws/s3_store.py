"""S3 as the `ObjectStore`: list, head, atomic download, tagged upload, put_text.

Every call goes through `aws_call`, so throttling is retryable and AccessDenied / NoSuchBucket
are non-retryable with S3's message. ETags are returned without S3's surrounding quotes.
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from botocore.exceptions import ClientError

from activities.aws.clients import AwsClients
from activities.aws.errors import aws_call, error_code
from activities.files import plain_permissions
from activities.mirror import split_uri
from activities.ports import StoredObject

_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})


def s3_location(uri: str) -> tuple[str, str]:
    scheme, bucket, key = split_uri(uri)
    if scheme != "s3":
        raise ValueError(f"not an s3:// uri: {uri!r}")
    return bucket, key


def _stored(bucket: str, key: str, size: int, etag: str, updated: datetime) -> StoredObject:
    return StoredObject(
        uri=f"s3://{bucket}/{key}", size=size, etag=etag.strip('"'), updated=updated
    )


class S3Store:
    def __init__(self, clients: AwsClients) -> None:
        self.clients = clients

    @property
    def _s3(self) -> Any:
        return self.clients.s3

    def list(self, prefix_uri: str) -> list[StoredObject]:
        bucket, prefix = s3_location(prefix_uri)
        found: list[StoredObject] = []
        with aws_call(f"ListObjectsV2 s3://{bucket}/{prefix}"):
            for page in self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix
            ):
                for item in page.get("Contents", []):
                    found.append(
                        _stored(
                            bucket, item["Key"], item["Size"], item["ETag"], item["LastModified"]
                        )
                    )
        return sorted(found, key=lambda stored: stored.uri)

    def head(self, uri: str) -> StoredObject | None:
        bucket, key = s3_location(uri)
        with aws_call(f"HeadObject {uri}"):
            try:
                found = self._s3.head_object(Bucket=bucket, Key=key)
            except ClientError as error:
                if error_code(error) in _MISSING:
                    return None
                raise
        return _stored(bucket, key, found["ContentLength"], found["ETag"], found["LastModified"])

    def download(self, uri: str, target: Path) -> StoredObject:
        bucket, key = s3_location(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Into a temporary file next to the target, then renamed: readers never see half a file.
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        plain_permissions(fd)
        try:
            with os.fdopen(fd, "wb") as handle, aws_call(f"GetObject {uri}"):
                found = self._s3.get_object(Bucket=bucket, Key=key)
                for chunk in found["Body"].iter_chunks(1 << 20):
                    handle.write(chunk)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return _stored(bucket, key, found["ContentLength"], found["ETag"], found["LastModified"])

    def upload(self, source: Path, uri: str, tags: dict[str, str] | None = None) -> StoredObject:
        bucket, key = s3_location(uri)
        extra: dict[str, str] = {"Tagging": urlencode(tags)} if tags else {}
        with aws_call(f"PutObject {uri}"), source.open("rb") as body:
            self._s3.put_object(Bucket=bucket, Key=key, Body=body, **extra)
        stored = self.head(uri)
        if stored is None:
            raise FileNotFoundError(f"{uri} is missing right after it was uploaded")
        return stored

    def put_text(self, uri: str, text: str, content_type: str = "application/json") -> str:
        bucket, key = s3_location(uri)
        with aws_call(f"PutObject {uri}"):
            self._s3.put_object(
                Bucket=bucket, Key=key, Body=text.encode(), ContentType=content_type
            )
        return uri
