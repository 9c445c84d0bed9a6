"""Audit records: one JSON document per loop, under `<home>/audit/<model>/<loop id>.json`."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from temporalio import activity

from workflows.audit_record import AuditRecord
from workflows.names import loop_number, validate_model_name


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


class AuditActivities:
    def __init__(self, store: AuditStore) -> None:
        self.store = store

    @activity.defn(name="write_audit_record")
    def write(self, record: AuditRecord) -> str:
        return str(self.store.write(record))
