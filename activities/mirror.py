"""Where a cloud model's objects (S3, GCS: the `ObjectStore` of its backend) are mirrored under
the retrain home, so the loop and the drift check read local files."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date
from pathlib import Path

from activities.ports import ObjectStore, StoredObject
from workflows.spec.backends import REMOTE_SCHEMES
from workflows.spec.models import ModelSpec


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
    for scheme in (remote.removesuffix("://") for remote in REMOTE_SCHEMES):
        text = text.replace(f"{root}/{scheme}/", f"{scheme}://")
    return text


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
