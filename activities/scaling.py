"""The scaling log: every scaling activity of a model's endpoint, recorded once.

Backends hand their endpoint's scaling activities here as `ScalingEvent`s (SageMaker: the
Application Auto Scaling activities read at each traffic shift; Vertex: our scheduled
pre-scaling). New ones (by `event_id`) are appended to `<home>/scaling/<model>.jsonl`, counted
in `retrain_scaling_events_total` and set the variant's `retrain_endpoint_capacity`; the audit
record of a loop carries those that happened while it ran (`AuditActivities`), and the dashboard
shows the metric, so incidents and capacity plans can be read against them.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from workflows.common import metrics
from workflows.common.names import validate_model_name
from workflows.rollout.models import ScalingEvent


class ScalingLog:
    def __init__(self, home: Path) -> None:
        self.directory = home / "scaling"

    def path(self, model: str) -> Path:
        return self.directory / f"{validate_model_name(model)}.jsonl"

    def record(self, events: Iterable[ScalingEvent]) -> list[ScalingEvent]:
        """Append the events not recorded yet; returns them."""
        fresh: list[ScalingEvent] = []
        by_model: dict[str, list[ScalingEvent]] = {}
        for event in events:
            by_model.setdefault(event.model, []).append(event)
        for model, found in by_model.items():
            path = self.path(model)
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a+") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                handle.seek(0)
                known = {json.loads(line)["event_id"] for line in handle if line.strip()}
                for event in sorted(found, key=lambda e: e.at):
                    if event.event_id in known:
                        continue
                    known.add(event.event_id)
                    handle.write(event.model_dump_json() + "\n")
                    fresh.append(event)
                handle.flush()
        meter = metrics.activity_meter()
        for event in fresh:
            labels = {"model": event.model, "backend": event.backend}
            metrics.count(
                meter,
                metrics.SCALING_EVENTS,
                {**labels, "kind": event.kind, "status": event.status},
            )
            if event.desired is not None:
                metrics.set_gauge(
                    meter,
                    metrics.ENDPOINT_CAPACITY,
                    {"model": event.model, "variant": event.variant},
                    float(event.desired),
                )
        return fresh

    def read(
        self, model: str, since: datetime | None = None, until: datetime | None = None
    ) -> list[ScalingEvent]:
        path = self.path(model)
        if not path.exists():
            return []
        events = [
            ScalingEvent.model_validate_json(line)
            for line in path.read_text().splitlines()
            if line.strip()
        ]
        return [
            event
            for event in events
            if (since is None or event.at >= since) and (until is None or event.at <= until)
        ]
