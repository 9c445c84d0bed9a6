"""The invariants a chaos run must keep, checked after it: each violation is one line."""

from __future__ import annotations

import json
import re
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError

from activities.local.registry import MlflowRegistry
from activities.local.training import LocalTrainingBackend
from bench.chaos.observe import WeightsPoller, task_failures
from bench.chaos.scenario import MODEL, OUTAGE_MODEL, STORM_MODELS, Run
from starters.api.loops import read_audit
from starters.gateway import dead_letters, pending
from starters.gateway.database import database_path, open_database
from workflows.common.names import coordinator_id, retraining_loop_id, rollout_id
from workflows.loop.models import LoopStatus

# The endpoint's log line for an applied change (serving/app.py put_weights).
_APPLIED = re.compile(r"generation (\d+) \(([^)]+)\): weights")


async def check(client: Client, run: Run, endpoint_log: Path, final_weights: Any) -> list[str]:
    violations: list[str] = []
    home = run.home
    loops = run.loops

    # Every loop terminal, with one training and one registered version.
    outcomes: dict[int, str] = {}
    summaries: dict[int, str] = {}
    for number in range(1, loops + 1):
        loop_id = retraining_loop_id(MODEL, number)
        try:
            description = await client.get_workflow_handle(loop_id).describe()
        except RPCError as err:
            violations.append(f"{loop_id}: not found ({err.message})")
            continue
        if description.status is not WorkflowExecutionStatus.COMPLETED:
            violations.append(f"{loop_id}: {description.status} (not completed)")
        try:
            record = read_audit(home, MODEL, number)
        except LookupError:
            violations.append(f"{loop_id}: no audit record")
            continue
        outcomes[number] = record.outcome.status.value if record.outcome else "none"
        summaries[number] = record.outcome.summary if record.outcome else ""
        state = LocalTrainingBackend(home).training_dir(MODEL, loop_id) / "state.json"
        if state.exists():
            starts = json.loads(state.read_text())["starts"]
            if starts != 1:
                violations.append(f"{loop_id}: {starts} training runners started (want 1)")
        elif record.training is not None:
            violations.append(f"{loop_id}: trained but no training state")
    uri = MlflowRegistry(home).uri
    mlflow = MlflowClient(tracking_uri=uri, registry_uri=uri)
    versions = Counter(
        version.tags.get("loop_id") for version in mlflow.search_model_versions(f"name = '{MODEL}'")
    )
    for number in range(1, loops + 1):
        loop_id = retraining_loop_id(MODEL, number)
        if versions.get(loop_id, 0) != 1:
            violations.append(f"{loop_id}: {versions.get(loop_id, 0)} registered versions (want 1)")

    # Every traffic change applied once (the endpoint's log, across its restarts).
    applied: Counter[str] = Counter()
    generations: list[int] = []
    for line in endpoint_log.read_text(errors="replace").splitlines():
        found = _APPLIED.search(line)
        if found:
            generations.append(int(found.group(1)))
            applied[found.group(2)] += 1
    for change, count in applied.items():
        if count != 1:
            violations.append(f"traffic change {change} applied {count} times")
    if generations != sorted(set(generations)):
        violations.append("the endpoint's generations did not strictly increase")
    rollout_changes = [c for c in applied if c.startswith("rollout-")]

    # Weights valid at every poll.
    poller: WeightsPoller | None = run.poller
    if poller is not None:
        violations += [f"invalid weights: {problem}" for problem in poller.invalid[:20]]

    # The champion serves 100% at the end.
    champion = MlflowRegistry(home).champion(MODEL)
    if champion is None:
        violations.append("no champion at the end")
    elif final_weights is None or final_weights.weights != {f"v{champion.version}": 100}:
        weights = None if final_weights is None else final_weights.weights
        violations.append(f"champion v{champion.version} but the endpoint serves {weights}")

    # No workflow task failed anywhere.
    executions = [coordinator_id(MODEL)]
    executions += [coordinator_id(name) for name in (*STORM_MODELS, OUTAGE_MODEL)]
    for number in range(1, loops + 1):
        executions += [retraining_loop_id(MODEL, number), rollout_id(MODEL, number)]
    for workflow_id in executions:
        violations += await task_failures(client, workflow_id)

    # The storm and the outage: every event accepted exactly once, nothing left behind.
    for name, numbers in run.storm.get("models", {}).items():
        expected = run.storm["events_per_model"]
        if numbers["accepted"] != expected or numbers["in_batch"] != expected:
            violations.append(f"storm {name}: {numbers} (want {expected} accepted, in the batch)")
    if run.outage:
        expected = run.outage["events"]
        if run.outage["accepted"] != expected or run.outage["in_batch"] != expected:
            violations.append(f"outage: {run.outage} (want {expected} accepted, in the batch)")
    with closing(open_database(database_path(home))) as conn:
        left, dead = pending.count(conn), dead_letters.count(conn)
    if left or dead:
        violations.append(f"the gateway still holds {left} pending and {dead} dead letters")

    # Every kill recovered.
    for kill in run.kills:
        if kill.recovered_at is None:
            violations.append(f"{kill.point} (loop {kill.loop}): no progress seen after the kill")
    run.notes.append(f"loop outcomes: {dict(Counter(outcomes.values()))}")
    run.notes.append(f"{len(rollout_changes)} rollout traffic changes, each applied once")
    bad = [n for n, status in outcomes.items() if status not in _ENDINGS]
    if bad:
        run.notes.append(f"loops that ended otherwise: {bad}")
        # Why, in the loop's own words: a kill may cost a loop (a terminal failure is allowed)
        # but never an invariant; the reader judges whether the reason is the kill's.
        run.notes += [f"loop {n} {outcomes[n]}: {summaries[n][:300]}" for n in bad]
    return violations


_ENDINGS = {LoopStatus.PROMOTED.value, LoopStatus.ROLLED_BACK.value}
