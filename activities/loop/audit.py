"""Audit records: one JSON document per loop, under `<home>/audit/<model>/<loop id>.json`, and
also on the model's bucket when it runs on a cloud backend."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from temporalio import activity

from activities.files import plain_permissions
from activities.ports import ObjectStore
from activities.scaling import ScalingLog
from workflows.common.names import ActivityName, loop_number, validate_model_name
from workflows.loop.audit import AuditRecord


class AuditStore:
    def __init__(self, home: Path) -> None:
        self.directory = home / "audit"

    def path(self, model: str, loop_id: str) -> Path:
        return self.directory / validate_model_name(model) / f"{loop_id}.json"

    def write(self, record: AuditRecord) -> Path:
        target = self.path(record.model, record.loop_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Write-then-rename: a retried activity replaces the record whole, readers never see
        # half a document.
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".json")
        plain_permissions(fd)
        with os.fdopen(fd, "w") as handle:
            handle.write(record.model_dump_json(indent=2))
        os.replace(tmp, target)
        return target

    def read(self, model: str, loop_id: str) -> AuditRecord | None:
        path = self.path(model, loop_id)
        if not path.exists():
            return None
        return AuditRecord.model_validate_json(path.read_text())

    def loop_ids(self, model: str) -> list[str]:
        directory = self.directory / validate_model_name(model)
        if not directory.is_dir():
            return []
        ids = [p.stem for p in directory.glob("*.json") if not p.name.startswith(".")]
        return sorted(ids, key=loop_number)


# (model) -> (the cloud store, its root uri) of a cloud model; None for the local backend.
RemoteAudit = Callable[[str], tuple[ObjectStore, str] | None]


class AuditActivities:
    def __init__(
        self,
        store: AuditStore,
        remote: RemoteAudit | None = None,
        scaling: ScalingLog | None = None,
    ) -> None:
        self.store = store
        self.remote = remote
        self.scaling = scaling

    @activity.defn(name=ActivityName.WRITE_AUDIT_RECORD)
    def write(self, record: AuditRecord) -> str:
        """Always kept locally; a cloud model's record also goes to its bucket (the uri
        returned), under `<root>/audit/<model>/<loop id>.json`: rewritten whole on a retry.
        The endpoint's scaling activities since the loop started are added to it."""
        if self.scaling is not None:
            events = self.scaling.read(record.model, since=record.started_at)
            record = record.model_copy(update={"scaling_events": events})
        local = self.store.write(record)
        target = self.remote(record.model) if self.remote else None
        if target is None:
            return str(local)
        store, root = target
        return store.put_text(
            f"{root}/audit/{record.model}/{record.loop_id}.json", local.read_text()
        )
