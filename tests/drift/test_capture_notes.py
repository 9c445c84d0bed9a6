"""The notes a drift or performance check gets from bringing its capture up to date."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from activities.drift.window import flush_notes, sync_notes
from activities.ports import CaptureSync
from tests.support.loop_harness import write_dataset
from workflows.spec.models import ModelSpec


class FakeCapture:
    name = "Fake capture"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.synced: list[tuple[str, datetime, datetime]] = []

    def sync(
        self,
        spec: ModelSpec,
        start: datetime,
        end: datetime,
        heartbeat: Callable[[str], None],
    ) -> CaptureSync:
        self.synced.append((spec.name, start, end))
        return CaptureSync(
            directory=self.directory, sources_read=2, answers=7, labels=3, notes=["one hour late"]
        )


def test_a_flush_that_fails_is_a_note_and_one_that_works_is_none() -> None:
    flushed: list[str] = []

    def broken(endpoint: str) -> None:
        raise OSError("connection refused")

    assert flush_notes(flushed.append, "http://127.0.0.1:9") == []
    assert flushed == ["http://127.0.0.1:9"]
    assert flush_notes(broken, "http://127.0.0.1:9") == [
        "endpoint http://127.0.0.1:9 did not flush its capture (connection refused)"
    ]
    assert flush_notes(None, "http://127.0.0.1:9") == []


def test_a_sync_says_what_it_read_then_its_own_notes(tmp_path: Path) -> None:
    spec = write_dataset(tmp_path, "notes-model", date(2026, 12, 1))
    end = datetime(2026, 12, 1, tzinfo=UTC)
    capture = FakeCapture(tmp_path)
    notes = sync_notes(capture, spec, end - timedelta(hours=2), end, lambda _: None)
    assert capture.synced == [("notes-model", end - timedelta(hours=2), end)]
    assert notes == [
        "Fake capture: 7 answer(s) and 3 label(s) read from 2 new source(s)",
        "one hour late",
    ]
    assert sync_notes(None, spec, end - timedelta(hours=2), end, lambda _: None) == []
