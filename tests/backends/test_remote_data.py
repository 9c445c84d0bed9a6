"""A cloud model's data read through its mirror: S3 on moto, the data window and golden set."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from activities.aws.s3_store import S3Store
from activities.loop.data_window import DataWindowActivities, select_data_window
from activities.loop.golden_set import GoldenSetActivities
from activities.mirror import DataMirror, mirror_path, remote_text, remote_uri
from tests.support.aws_harness import Moto
from tests.support.cloud_data import BUCKET, upload_dataset
from tests.support.loop_harness import write_dataset
from workflows.loop.models import DataWindowRequest

TODAY = date(2026, 3, 31)


def as_of() -> datetime:
    return datetime.combine(TODAY, datetime.min.time(), tzinfo=UTC) + timedelta(hours=12)


@pytest.fixture
def store(moto: Moto) -> S3Store:
    clients = moto.clients()
    clients.s3.create_bucket(Bucket=BUCKET)
    return S3Store(clients)


def test_the_window_reads_what_the_bucket_holds(tmp_path: Path, store: S3Store) -> None:
    local = write_dataset(tmp_path / "source", "credit", TODAY)
    spec = upload_dataset(store, tmp_path / "source", local, "s3")
    home = tmp_path / "worker"
    request = DataWindowRequest(loop_id="retrain-credit-1", spec=spec, as_of=as_of())
    mirror = DataMirror(home, lambda _: store)

    window = DataWindowActivities(home, mirror).select(request)
    reference = select_data_window(tmp_path / "source", request.model_copy(update={"spec": local}))

    assert window.sufficient and window.rows == reference.rows
    assert [f.sha256 for f in window.files] == [f.sha256 for f in reference.files]
    assert all(f.uri.startswith(f"s3://{BUCKET}/data/labelled/date=") for f in window.files)
    etags = {o.uri: o.etag for o in store.list(f"s3://{BUCKET}/data/")}
    assert [f.etag for f in window.files] == [etags[f.uri] for f in window.files]
    assert window.baseline is not None and window.baseline.uri.startswith("s3://")
    assert window.query.startswith(f"s3://{BUCKET}/data/labelled/date=*")
    assert str(home) not in window.query


def test_a_deleted_partition_leaves_the_window_and_a_changed_one_is_fetched_again(
    tmp_path: Path, store: S3Store
) -> None:
    local = write_dataset(tmp_path / "source", "credit", TODAY)
    spec = upload_dataset(store, tmp_path / "source", local, "s3")
    home = tmp_path / "worker"
    mirror = DataMirror(home, lambda _: store)
    window = (TODAY - timedelta(days=29), TODAY)
    mirror.localize(spec, window=window)
    objects = store.list(f"{spec.data.labelled}/")
    gone, changed = objects[0], objects[1]
    store.clients.s3.delete_object(Bucket=BUCKET, Key=gone.uri.split("/", 3)[3])
    replacement = tmp_path / "replacement.parquet"
    replacement.write_bytes(mirror_path(home, objects[2].uri).read_bytes())
    store.upload(replacement, changed.uri)

    localized, _ = mirror.localize(spec, window=window)

    assert not mirror_path(home, gone.uri).exists()
    assert mirror_path(home, changed.uri).read_bytes() == replacement.read_bytes()
    listed = sorted(Path(localized.data.labelled).glob("date=*/*.parquet"))
    assert len(listed) == len(objects) - 1


def test_the_golden_set_is_verified_on_its_mirror_and_a_changed_object_fails(
    tmp_path: Path, store: S3Store
) -> None:
    local = write_dataset(tmp_path / "source", "credit", TODAY)
    spec = upload_dataset(store, tmp_path / "source", local, "s3")
    home = tmp_path / "worker"
    golden = GoldenSetActivities(home, DataMirror(home, lambda _: store))
    first = golden.verify(spec)
    assert remote_uri(home, first.uri) == spec.data.golden_set
    assert golden.verify(spec) == first

    # Someone overwrites the golden set in the bucket: its ETag changes, the mirror re-reads it.
    tampered = tmp_path / "tampered.parquet"
    tampered.write_bytes((tmp_path / "source" / local.data.baseline_holdout).read_bytes())
    store.upload(tampered, spec.data.golden_set)
    with pytest.raises(ApplicationError) as refused:
        golden.verify(spec)
    assert refused.value.type == "GoldenSetChanged"


def test_paths_outside_the_mirror_are_left_alone(tmp_path: Path) -> None:
    assert remote_uri(tmp_path, "/elsewhere/file.parquet") == "/elsewhere/file.parquet"
    inside = mirror_path(tmp_path, "gs://bucket/a/b.parquet")
    assert remote_uri(tmp_path, inside) == "gs://bucket/a/b.parquet"
    assert remote_text(tmp_path, f"read {inside}") == "read gs://bucket/a/b.parquet"
    with pytest.raises(ValueError, match="not a plain path"):
        mirror_path(tmp_path, "s3://bucket/../etc/passwd")
