"""A cloud model's data, mirrored under the retrain home so the loop reads local files.

A spec whose `data` names `s3://` or `gs://` objects is served by `DataMirror.localize`: the
labelled partitions of the window, the baseline holdout, the golden set and any object a
trigger named are fetched to `<home>/mirror/<scheme>/<bucket>/<key>`, and the spec handed on
names those copies. The store's listing decides: an object is downloaded again only when its
ETag (S3) or md5/crc32c (GCS) changed, kept beside the copy as `.<name>.etag`, and mirrored
partitions the store no longer lists are deleted, so the window sees exactly what the store
holds. Results name the remote URIs again (`remote_uri`), so the audit record and the lineage
say `s3://...`, with each file's sha256 of the bytes read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date
from pathlib import Path

from activities.object_store import (
    ObjectStore,
    StoredObject,
    is_remote,
    mirror_path,
    split_uri,
)
from workflows.model_spec import ModelSpec

_PARTITION_PREFIX = "date="

StoreFor = Callable[[ModelSpec], ObjectStore | None]


class DataMirror:
    def __init__(self, home: Path, store_for: StoreFor) -> None:
        self.home = home
        self.store_for = store_for

    def localize(
        self,
        spec: ModelSpec,
        *,
        window: tuple[date, date] | None = None,
        extra_uris: Iterable[str] = (),
        fields: Iterable[str] = ("labelled", "baseline_holdout", "golden_set"),
    ) -> tuple[ModelSpec, list[str]]:
        """The spec with its remote `fields` replaced by mirrored copies, and the extra uris
        likewise. `labelled` is a prefix of `date=YYYY-MM-DD/` partitions: only the days of
        `window` are fetched (all of them without one)."""
        extras = list(extra_uris)
        remote = [f for f in fields if is_remote(getattr(spec.data, f))]
        if not remote and not any(is_remote(uri) for uri in extras):
            return spec, extras
        store = self.store_for(spec)
        if store is None:
            raise ValueError(f"{spec.name}: the {spec.backend} backend has no object store")
        updates: dict[str, str] = {}
        for field in remote:
            uri = getattr(spec.data, field)
            if field == "labelled":
                updates[field] = str(self._mirror_partitions(store, uri, window))
            else:
                updates[field] = str(self._mirror_object(store, uri))
        local_extras = [str(self._mirror_object(store, u)) if is_remote(u) else u for u in extras]
        data = spec.data.model_copy(update=updates)
        return spec.model_copy(update={"data": data}), local_extras

    def _mirror_object(self, store: ObjectStore, uri: str) -> Path:
        found = store.head(uri)
        if found is None:
            raise FileNotFoundError(f"{uri} does not exist")
        return self._fetch(store, found)

    def _mirror_partitions(
        self, store: ObjectStore, prefix_uri: str, window: tuple[date, date] | None
    ) -> Path:
        prefix_uri = prefix_uri.rstrip("/") + "/"
        root = mirror_path(self.home, prefix_uri.rstrip("/"))
        wanted = [obj for obj in store.list(prefix_uri) if _in_window(prefix_uri, obj, window)]
        kept = {self._fetch(store, obj) for obj in wanted}
        # A partition file the store no longer lists must not linger in the window.
        if root.is_dir():
            for stale in root.glob(f"{_PARTITION_PREFIX}*/*.parquet"):
                if stale not in kept and _in_days(stale.parent.name, window):
                    stale.unlink()
                    _etag_file(stale).unlink(missing_ok=True)
        root.mkdir(parents=True, exist_ok=True)
        return root

    def _fetch(self, store: ObjectStore, obj: StoredObject) -> Path:
        target = mirror_path(self.home, obj.uri)
        etag_file = _etag_file(target)
        if target.exists() and etag_file.exists() and etag_file.read_text() == obj.etag:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        read = store.download(obj.uri, target)
        etag_file.write_text(read.etag)
        return target


def _etag_file(path: Path) -> Path:
    return path.with_name(f".{path.name}.etag")


def mirrored_etag(path: Path) -> str | None:
    """The store's ETag of the object a mirrored file was fetched from."""
    etag_file = _etag_file(path)
    return etag_file.read_text() if etag_file.exists() else None


def _in_window(prefix_uri: str, obj: StoredObject, window: tuple[date, date] | None) -> bool:
    """A `date=YYYY-MM-DD/<file>.parquet` object directly under the prefix, within the window."""
    relative = split_uri(obj.uri)[2][len(split_uri(prefix_uri)[2]) :]
    parts = relative.split("/")
    if len(parts) != 2 or not parts[1].endswith(".parquet") or parts[1].startswith((".", "_")):
        return False
    return _in_days(parts[0], window)


def _in_days(partition: str, window: tuple[date, date] | None) -> bool:
    if not partition.startswith(_PARTITION_PREFIX):
        return False
    try:
        day = date.fromisoformat(partition[len(_PARTITION_PREFIX) :])
    except ValueError:
        return False
    return window is None or window[0] <= day <= window[1]
