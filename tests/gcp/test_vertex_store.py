"""GcsStore against the fake's GCS JSON API, through google-cloud-storage."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from activities.gcp.gcs_store import GcsStore
from tests.support.vertex_fake import storage
from tests.support.vertex_fake.server import RunningFake
from tests.support.vertex_harness import BUCKET, fake_clients
from workflows.common.errors import ErrorType


def test_upload_head_list_download_round_trip(vertex: RunningFake, tmp_path: Path) -> None:
    store = GcsStore(fake_clients(vertex))
    source = tmp_path / "part.csv"
    source.write_bytes(b"a,b\n1,2\n" * 1000)
    uploaded = store.upload(source, f"gs://{BUCKET}/data/day=1/part.csv", {"loop_id": "l-1"})
    md5 = base64.b64encode(hashlib.md5(source.read_bytes()).digest()).decode()
    assert uploaded.etag == md5 and uploaded.size == 8000
    assert uploaded.uri == f"gs://{BUCKET}/data/day=1/part.csv"
    stored = storage.object_names(vertex.state, BUCKET)
    assert stored == ["data/day=1/part.csv"]
    assert vertex.state.table(storage.OBJECTS)[f"{BUCKET}/data/day=1/part.csv"][0]["metadata"] == {
        "loop_id": "l-1"
    }
    assert store.put_text(f"gs://{BUCKET}/data/b.json", "{}") == f"gs://{BUCKET}/data/b.json"

    listed = store.list(f"gs://{BUCKET}/data/")
    assert [item.uri for item in listed] == [
        f"gs://{BUCKET}/data/b.json",
        f"gs://{BUCKET}/data/day=1/part.csv",
    ]
    assert store.head(f"gs://{BUCKET}/data/nothing") is None
    head = store.head(f"gs://{BUCKET}/data/day=1/part.csv")
    assert head is not None and head.etag == md5

    target = tmp_path / "out" / "part.csv"
    read = store.download(f"gs://{BUCKET}/data/day=1/part.csv", target)
    assert target.read_bytes() == source.read_bytes() and read.etag == md5
    assert [p.name for p in target.parent.iterdir()] == ["part.csv"]

    store.delete_prefix(f"gs://{BUCKET}/data/")
    assert store.list(f"gs://{BUCKET}/data/") == []


def test_missing_bucket_is_rejected_with_googles_message(
    vertex: RunningFake, tmp_path: Path
) -> None:
    store = GcsStore(fake_clients(vertex))
    source = tmp_path / "x"
    source.write_text("x")
    with pytest.raises(ApplicationError) as raised:
        store.upload(source, "gs://no-such-bucket/x")
    assert raised.value.type == ErrorType.GCP_REQUEST_REJECTED and raised.value.non_retryable
    assert "The specified bucket does not exist" in str(raised.value)


def test_missing_object_download_leaves_nothing(vertex: RunningFake, tmp_path: Path) -> None:
    store = GcsStore(fake_clients(vertex))
    with pytest.raises(ApplicationError) as raised:
        store.download(f"gs://{BUCKET}/absent", tmp_path / "absent")
    assert raised.value.type == ErrorType.GCP_REQUEST_REJECTED
    assert list(tmp_path.iterdir()) == []


def test_throttling_is_retryable(vertex: RunningFake) -> None:
    store = GcsStore(fake_clients(vertex))
    vertex.state.faults.append((f"GET /storage/v1/b/{BUCKET}/o", 429, "Rate limit exceeded"))
    with pytest.raises(ApplicationError) as raised:
        store.list(f"gs://{BUCKET}/data/")
    assert raised.value.type == ErrorType.GCP_UNAVAILABLE and not raised.value.non_retryable


def test_access_denied_is_not_retryable(vertex: RunningFake) -> None:
    store = GcsStore(fake_clients(vertex))
    vertex.state.faults.append(
        (f"GET /storage/v1/b/{BUCKET}/o", 403, "sa@p.iam does not have storage.objects.list")
    )
    with pytest.raises(ApplicationError) as raised:
        store.head(f"gs://{BUCKET}/data/x")
    assert raised.value.type == ErrorType.GCP_REQUEST_REJECTED and raised.value.non_retryable
    assert "does not have storage.objects.list" in str(raised.value)


def test_wrong_scheme_is_a_value_error(vertex: RunningFake) -> None:
    with pytest.raises(ValueError, match="not a gs:// uri"):
        GcsStore(fake_clients(vertex)).head("s3://bucket/key")
