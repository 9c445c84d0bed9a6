"""The decision archive: every coordinator decision, beyond the last 200 its state holds.

A coordinator hands its decisions over in chunks (`archive_decisions`); each chunk is one JSON
Lines file, `<home>/decisions/<model>/<first seq>-<last seq>.jsonl`, written atomically and
named by its sequence numbers, so a retried activity writes the same file again and a reader
never sees half of one. `read` pages back through them (`retrain decisions --before-seq`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from temporalio import activity

from workflows.common.names import ActivityName, validate_model_name
from workflows.coordinator.models import Decision, DecisionArchive


class DecisionStore:
    def __init__(self, home: Path) -> None:
        self.root = home / "decisions"

    def directory(self, model: str) -> Path:
        return self.root / validate_model_name(model)

    def write(self, model: str, decisions: list[Decision]) -> Path:
        if not decisions:
            raise ValueError("nothing to archive")
        directory = self.directory(model)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{decisions[0].seq:012d}-{decisions[-1].seq:012d}.jsonl"
        text = "".join(d.model_dump_json() + "\n" for d in decisions)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def read(self, model: str, before_seq: int | None = None, limit: int = 20) -> list[Decision]:
        """The `limit` latest archived decisions before `before_seq` (all when None), oldest
        first."""
        directory = self.directory(model)
        if not directory.is_dir():
            return []
        chunks = sorted(p for p in directory.glob("*.jsonl") if not p.name.startswith("."))
        found: dict[int, Decision] = {}
        for path in reversed(chunks):
            first = int(path.name.split("-", 1)[0])
            if before_seq is not None and first >= before_seq:
                continue
            for line in path.read_text(encoding="utf-8").splitlines():
                decision = Decision.model_validate_json(line)
                if before_seq is None or decision.seq < before_seq:
                    found[decision.seq] = decision
            if len(found) >= limit:
                break
        return [found[seq] for seq in sorted(found)][-limit:]


class DecisionArchiveActivities:
    def __init__(self, home: Path) -> None:
        self.store = DecisionStore(home)

    @activity.defn(name=ActivityName.ARCHIVE_DECISIONS)
    def archive(self, archive: DecisionArchive) -> str:
        return str(self.store.write(archive.model, archive.decisions))
