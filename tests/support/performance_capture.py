"""A champion answering a river stream, captured as the local endpoint captures it: for the
performance monitor's tests (activity and workflow).

`champion_home` trains a good model of the old concept (Agrawal function 0, a decision tree,
about 95% accurate) and records the reference quality its promotion would have; `stream_rows`
labels a stream row by row with a chosen Agrawal function (0: the old concept, 2: the new one,
same inputs); `capture_stream` has the champion answer it, one request a second, with labels
arriving a second after each minute of traffic.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
from sklearn.tree import DecisionTreeClassifier  # type: ignore[import-untyped]

from activities.local.registry import MlflowRegistry
from activities.loop.audit import AuditStore
from activities.specs import SpecStore
from starters.demo.synthetic import FEATURES, generate_rows
from tests.support.drift_harness import write_capture, write_feedback
from tests.support.endpoint_harness import register_estimator, train_versions
from tests.support.loop_harness import manual_trigger, with_changes
from workflows.loop.audit import AuditRecord
from workflows.loop.models import EvaluationReport, PromoteRequest
from workflows.spec.models import ModelSpec

REFERENCE = {"accuracy": 0.95, "roc_auc": 0.94, "log_loss": 0.2}


def champion_home(home: Path, model: str, **performance: object) -> ModelSpec:
    """The model's data and spec, and a good champion of the old concept (v2) with the
    reference quality its promotion recorded (`REFERENCE`, on its holdout)."""
    spec, _ = train_versions(home, model, count=1, baseline_rows=1000)
    spec = with_changes(spec, {"performance": performance}) if performance else spec
    SpecStore(home).register(spec)
    rows = generate_rows(datetime.now(UTC).date(), 3000, function=0, seed=99, stream=22)
    tree = DecisionTreeClassifier(max_depth=6, random_state=0).fit(
        rows.select(list(FEATURES)).to_pandas(), rows.column("label").to_numpy()
    )
    loop_id = f"retrain-{model}-2"
    version = register_estimator(home, model, tree, loop_id)
    MlflowRegistry(home).promote(
        PromoteRequest(model=model, version=version.version, loop_id=loop_id)
    )
    AuditStore(home).write(
        AuditRecord(
            loop_id=loop_id,
            loop_number=2,
            model=model,
            started_at=datetime.now(UTC) - timedelta(days=1),
            coordinator_id=f"coordinator-{model}",
            trigger=manual_trigger(),
            estimated_cost=1.0,
            policy_version=1,
            evaluation=EvaluationReport(candidate={"holdout": REFERENCE}, rows={"holdout": 1000}),
        )
    )
    return spec


def stream_rows(functions: list[int], seed: int) -> pa.Table:
    """One row per element of `functions`, labelled by that Agrawal function (the features are
    the same whatever the function)."""
    day = datetime(2026, 1, 1, tzinfo=UTC).date()
    rows = generate_rows(day, len(functions), function=0, seed=seed, stream=21)
    labels = {
        function: generate_rows(day, len(functions), function=function, seed=seed, stream=21)
        .column("label")
        .to_numpy()
        for function in set(functions)
    }
    chosen = np.array([labels[f][i] for i, f in enumerate(functions)], dtype=np.int64)
    return rows.set_column(rows.schema.get_field_index("label"), "label", pa.array(chosen))


def capture_stream(
    home: Path, spec: ModelSpec, rows: pa.Table, *, start: datetime, label_delay: float = 1.0
) -> list[str]:
    """Each row answered by the champion one second after the previous (a file per minute of
    traffic), its label `label_delay` seconds after the minute's last answer; returns the
    request ids."""
    registry = MlflowRegistry(home)
    champion = registry.champion(spec.name)
    assert champion is not None
    estimator = registry.load(champion)
    ids: list[str] = []
    for first in range(0, rows.num_rows, 60):
        chunk = rows.slice(first, 60)
        times = [start + timedelta(seconds=first + i) for i in range(chunk.num_rows)]
        chunk_ids = write_capture(
            home, spec, chunk, at=times, estimator=estimator, version=champion.version
        )
        received = times[-1] + timedelta(seconds=label_delay)
        write_feedback(home, spec, chunk_ids, chunk.column("label").to_numpy(), at=received)
        ids += chunk_ids
    return ids
