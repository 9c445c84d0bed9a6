"""The immutable golden set: registered once with its content hash, verified before evaluation.

The registration lives at `<home>/golden/<model>.json`. The first verification of a model
registers the file its spec names; every later one recomputes the hash and fails loudly
(`GoldenSetChanged`, non-retryable) when the file changed, vanished or the spec now names
another file. `reregister_golden_set` is the only way to change it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]
from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.files import plain_permissions
from activities.loop.data_window import invalid_data, resolve_uri
from activities.mirror import DataMirror
from workflows.common.errors import ErrorType
from workflows.common.names import ActivityName
from workflows.loop.models import GoldenSet
from workflows.spec.models import ModelSpec


def registration_path(home: Path, model: str) -> Path:
    return home / "golden" / f"{model}.json"


def describe_golden_set(path: Path, registered_at: datetime) -> GoldenSet:
    """Hash and row count of the file as it is now (InvalidData when it is not Parquet)."""
    try:
        data = path.read_bytes()
        rows = pq.read_metadata(pa.BufferReader(data)).num_rows
    except (OSError, pa.ArrowException) as exc:
        raise invalid_data(f"cannot read golden set {path}: {exc}") from exc
    return GoldenSet(
        uri=str(path),
        sha256=hashlib.sha256(data).hexdigest(),
        rows=rows,
        registered_at=registered_at,
    )


def _temp_file(directory: Path, golden: GoldenSet) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
    plain_permissions(fd)
    with os.fdopen(fd, "w") as handle:
        handle.write(golden.model_dump_json(indent=2))
    return Path(tmp)


def _register_once(target: Path, golden: GoldenSet) -> bool:
    """Create the registration unless one exists; False when another caller got there first."""
    tmp = _temp_file(target.parent, golden)
    try:
        # link() refuses to overwrite, unlike replace(): two first calls cannot both register.
        os.link(tmp, target)
    except FileExistsError:
        return False
    finally:
        tmp.unlink()
    return True


def load_registration(home: Path, model: str) -> GoldenSet | None:
    path = registration_path(home, model)
    try:
        return GoldenSet.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValidationError) as exc:
        raise invalid_data(f"golden set registration {path} is unreadable: {exc}") from exc


def _changed(model: str, registered: GoldenSet, problem: str) -> ApplicationError:
    return ApplicationError(
        f"golden set of {model!r} changed: {problem}; registered {registered.uri} with sha256 "
        f"{registered.sha256} ({registered.rows} rows) at {registered.registered_at.isoformat()}. "
        "Restore the registered file, or re-register it deliberately.",
        type=ErrorType.GOLDEN_SET_CHANGED,
        non_retryable=True,
    )


def verify_golden_set(home: Path, spec: ModelSpec, now: datetime) -> GoldenSet:
    """Register the golden set on a model's first call; afterwards prove it is unchanged."""
    current = resolve_uri(home, spec.data.golden_set).resolve()
    registered = load_registration(home, spec.name)
    if registered is None:
        golden = describe_golden_set(current, registered_at=now)
        if _register_once(registration_path(home, spec.name), golden):
            return golden
        registered = load_registration(home, spec.name)
        assert registered is not None, "a registration exists once link() reports it"
    if Path(registered.uri) != current:
        raise _changed(spec.name, registered, f"the spec now names {current}")
    try:
        with Path(registered.uri).open("rb") as handle:
            sha256 = hashlib.file_digest(handle, "sha256").hexdigest()
    except FileNotFoundError:
        raise _changed(spec.name, registered, "the file has vanished") from None
    except OSError as exc:
        raise invalid_data(f"cannot read golden set {registered.uri}: {exc}") from exc
    if sha256 != registered.sha256:
        raise _changed(spec.name, registered, f"its sha256 is now {sha256}")
    return registered


def reregister_golden_set(home: Path, spec: ModelSpec, now: datetime) -> GoldenSet:
    """Replace a model's registered golden set with the file its spec names now.

    The only sanctioned way to change a golden set (an operator's deliberate act, e.g. through
    the CLI): verification never re-registers, it fails the loop instead.
    """
    golden = describe_golden_set(resolve_uri(home, spec.data.golden_set).resolve(), now)
    target = registration_path(home, spec.name)
    tmp = _temp_file(target.parent, golden)
    try:
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return golden


class GoldenSetActivities:
    def __init__(self, home: Path, mirror: DataMirror | None = None) -> None:
        self.home = home
        # A cloud model's golden set is verified on its mirrored copy (`mirror/s3/...`), which
        # is fetched again whenever the store's ETag changes: a changed object fails the check.
        self.mirror = mirror

    @activity.defn(name=ActivityName.VERIFY_GOLDEN_SET)
    def verify(self, spec: ModelSpec) -> GoldenSet:
        if self.mirror is not None:
            try:
                spec, _ = self.mirror.localize(spec, fields=("golden_set",))
            except FileNotFoundError as missing:
                raise invalid_data(str(missing)) from None
        golden = verify_golden_set(self.home, spec, now=datetime.now(UTC))
        activity.logger.info("golden set %s verified: sha256 %s", golden.uri, golden.sha256)
        return golden
