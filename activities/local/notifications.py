"""The local notification channel: one JSON file per notification in an outbox directory
(`<home>/notifications/<key>.json`), rewritten in place when a retried activity sends it again."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from workflows.common.notify import Notification


class OutboxChannel:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def send(self, notification: Notification) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.directory / f"{notification.key}.json"
        # Write-then-rename: readers never see a half-written notification.
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w") as handle:
            json.dump(notification.model_dump(mode="json"), handle, indent=2)
        os.replace(tmp, target)
        return str(target)
