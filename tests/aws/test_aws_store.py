"""S3Store against moto: list, head, atomic download, tagged upload, put_text, and errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from botocore.stub import Stubber
from temporalio.exceptions import ApplicationError

from activities.aws.s3_store import S3Store
from tests.support.aws_harness import Moto
from workflows.common.errors import ErrorType

BUCKET = "retrain-data"


@pytest.fixture
def store(moto: Moto) -> S3Store:
    clients = moto.clients()
    clients.s3.create_bucket(Bucket=BUCKET)
    return S3Store(clients)


def test_upload_head_download_round_trip(store: S3Store, tmp_path: Path) -> None:
    source = tmp_path / "part-0.parquet"
    source.write_bytes(b"columns and rows" * 100)
    uri = f"s3://{BUCKET}/labelled/date=2026-11-11/part-0.parquet"
    uploaded = store.upload(source, uri, {"model": "churn", "loop-id": "retrain-churn-1"})
    assert uploaded.uri == uri and uploaded.size == 1600
    assert uploaded.etag == hashlib.md5(source.read_bytes()).hexdigest()
    tagging = store.clients.s3.get_object_tagging(Bucket=BUCKET, Key=uri.split("/", 3)[3])
    assert {t["Key"]: t["Value"] for t in tagging["TagSet"]} == {
        "model": "churn",
        "loop-id": "retrain-churn-1",
    }
    assert store.head(uri) == uploaded

    target = tmp_path / "mirror" / "deep" / "part-0.parquet"
    downloaded = store.download(uri, target)
    assert target.read_bytes() == source.read_bytes()
    assert downloaded.etag == uploaded.etag and downloaded.size == uploaded.size
    assert [p.name for p in target.parent.iterdir()] == ["part-0.parquet"]


def test_head_of_a_missing_object_is_none(store: S3Store) -> None:
    assert store.head(f"s3://{BUCKET}/nope.parquet") is None


def test_list_is_sorted_and_limited_to_the_prefix(store: S3Store) -> None:
    for key in ("labelled/b.parquet", "labelled/a.parquet", "other/c.parquet"):
        store.put_text(f"s3://{BUCKET}/{key}", "{}")
    listed = store.list(f"s3://{BUCKET}/labelled/")
    assert [o.uri for o in listed] == [
        f"s3://{BUCKET}/labelled/a.parquet",
        f"s3://{BUCKET}/labelled/b.parquet",
    ]
    assert all('"' not in o.etag for o in listed)


def test_list_follows_every_page(store: S3Store) -> None:
    # S3 pages at 1000 keys; a stubbed two-page answer shows the paginator is followed.
    page = {"Key": "k", "Size": 1, "ETag": '"e"', "LastModified": "2026-11-11T00:00:00Z"}
    with Stubber(store.clients.s3) as stub:
        stub.add_response(
            "list_objects_v2",
            {
                "Contents": [page | {"Key": "p/2"}],
                "IsTruncated": True,
                "NextContinuationToken": "t",
            },
        )
        stub.add_response("list_objects_v2", {"Contents": [page | {"Key": "p/1"}]})
        listed = store.list(f"s3://{BUCKET}/p/")
        stub.assert_no_pending_responses()
    assert [o.uri for o in listed] == [f"s3://{BUCKET}/p/1", f"s3://{BUCKET}/p/2"]
    assert listed[0].etag == "e"


def test_put_text_sets_the_content_type(store: S3Store) -> None:
    uri = store.put_text(f"s3://{BUCKET}/records/audit.json", '{"ok": true}')
    found = store.clients.s3.get_object(Bucket=BUCKET, Key="records/audit.json")
    assert found["ContentType"] == "application/json"
    assert found["Body"].read() == b'{"ok": true}'
    assert uri == f"s3://{BUCKET}/records/audit.json"


def test_missing_objects_and_buckets_are_non_retryable(store: S3Store, tmp_path: Path) -> None:
    target = tmp_path / "x" / "missing.parquet"
    with pytest.raises(ApplicationError) as raised:
        store.download(f"s3://{BUCKET}/missing.parquet", target)
    assert raised.value.type == ErrorType.AWS_REQUEST_REJECTED and raised.value.non_retryable
    assert "NoSuchKey" in str(raised.value)
    # Nothing half-written is left behind.
    assert list(target.parent.iterdir()) == []
    with pytest.raises(ApplicationError) as raised:
        store.list("s3://no-such-bucket/labelled/")
    assert raised.value.non_retryable and "NoSuchBucket" in str(raised.value)


def test_throttling_is_retryable(store: S3Store) -> None:
    with Stubber(store.clients.s3) as stub:
        stub.add_client_error("head_object", "SlowDown", "Please reduce your request rate.", 503)
        with pytest.raises(ApplicationError) as raised:
            store.head(f"s3://{BUCKET}/a.parquet")
    assert raised.value.type == ErrorType.AWS_UNAVAILABLE and not raised.value.non_retryable


def test_refuses_other_schemes(store: S3Store) -> None:
    with pytest.raises(ValueError, match="not an s3:// uri"):
        store.head("gs://bucket/a.parquet")
