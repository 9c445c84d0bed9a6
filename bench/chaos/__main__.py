"""`make chaos` (`python -m bench.chaos`): fault injection over full retraining loops.

    .venv/bin/python -m bench.chaos [--loops 12] [--storm-events 1000] [--outage 600]
                                    [--seed 1] [--home DIR] [--report chaos-report.json]
                                    [--quick]

On the local backend, with its own dev server (SQLite), `retrain worker`, `retrain serve` and
live traffic with labels:

1. `--loops` full loops of one model (the first a first deployment, the others staged
   rollouts 10% → 50% → 100% and a watch). The worker is killed with SIGKILL at points of each
   loop (training, registration, evaluation, a traffic shift held in flight, a bake, a canary
   analysis held in flight, the watch) and restarted; every third loop the Temporal server is
   killed and restarted on the same SQLite file, every second the endpoint.
2. a trigger storm: `--storm-events` data events for each of two models through the gateway
   while the worker (twice) and the server are killed;
3. a Temporal outage of `--outage` seconds behind the gateway, events arriving meanwhile.

Then the checks (bench/chaos/checks.py): every loop terminal, one training and one registered
version per loop, every traffic change applied once, the weights valid at every poll, the final
champion serving 100%, no workflow task failure, every storm and outage event accepted exactly
once, the gateway's store empty, progress after every kill. It prints the kills per point with
the recovery latency (from the part being back to the interrupted execution progressing on
it), the violations, and writes the JSON report. Exit status 1 on any violation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from bench.chaos.checks import check
from bench.chaos.scenario import MODEL, Chaos, Kill, Run
from workflows.rollout.models import EndpointState


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def kill_table(kills: list[Kill]) -> tuple[Table, list[dict[str, Any]]]:
    table = Table(title="kills and recovery (seconds from the part back to progress)")
    for column in ("kill point", "kills", "recovered", "p50", "max", "kill to progress max"):
        table.add_column(column, justify="left" if column == "kill point" else "right")
    rows = []
    by_point: dict[str, list[Kill]] = defaultdict(list)
    for kill in kills:
        by_point[kill.point].append(kill)
    for point, group in by_point.items():
        recovered = [k.recovery for k in group if k.recovery is not None]
        whole = [k.kill_to_progress for k in group if k.kill_to_progress is not None]
        row: dict[str, Any] = {
            "point": point,
            "kills": len(group),
            "recovered": len(recovered),
            "recovery_p50_s": round(statistics.median(recovered), 1) if recovered else None,
            "recovery_max_s": round(max(recovered), 1) if recovered else None,
            "kill_to_progress_max_s": round(max(whole), 1) if whole else None,
        }
        rows.append(row)
        table.add_row(
            point,
            str(row["kills"]),
            str(row["recovered"]),
            _shown(row["recovery_p50_s"]),
            _shown(row["recovery_max_s"]),
            _shown(row["kill_to_progress_max_s"]),
        )
    return table, rows


def _shown(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


async def final_weights(chaos: Chaos) -> EndpointState | None:
    async with httpx.AsyncClient(timeout=10, headers=chaos.admin_headers) as http:
        try:
            answer = await http.get(f"{chaos.endpoint.url}/admin/weights")
            return EndpointState.model_validate_json(answer.content)
        except (httpx.HTTPError, ValueError):
            return None


async def main(args: argparse.Namespace, console: Console) -> int:
    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="chaos-"))
    home.mkdir(parents=True, exist_ok=True)
    log_dir = home / "logs"
    log_dir.mkdir(exist_ok=True)
    logging.basicConfig(
        filename=log_dir / "chaos.log",
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    for noisy in ("httpx", "mlflow", "uvicorn"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    run = Run(
        home=home,
        loops=args.loops,
        seed=args.seed,
        outage_seconds=args.outage,
        storm_events=args.storm_events,
    )
    chaos = Chaos(run, log_dir)
    started = time.monotonic()
    violations: list[str] = []
    try:
        console.print(f"chaos home: {home} (logs in {log_dir})")
        spec = await chaos.setup()
        console.print(f"phase 1: {args.loops} loops of {MODEL} with kills")
        await chaos.loops_phase(spec)
        run.timings["loops_s"] = round(time.monotonic() - started, 1)
        console.print(f"phase 2: a storm of {args.storm_events} events x 2 models with kills")
        await chaos.storm_phase()
        console.print(f"phase 3: a Temporal outage of {args.outage:.0f}s behind the gateway")
        await chaos.outage_phase()
        await chaos.settle(300)  # the last kills' progress
        assert chaos.client is not None
        weights = await final_weights(chaos)
        violations = await check(chaos.client, run, chaos.endpoint.log, weights)
    except Exception as err:  # a crash of the run itself is a violation, with its reason
        logging.exception("chaos run failed")
        violations.append(f"the run did not complete: {type(err).__name__}: {err}")
    finally:
        await chaos.close()
    run.timings["total_s"] = round(time.monotonic() - started, 1)

    table, rows = kill_table(run.kills)
    console.print(table)
    poller = run.poller
    summary = {
        "kills": len(run.kills),
        "worker_kills": sum(1 for k in run.kills if k.target == "worker"),
        "server_kills": sum(1 for k in run.kills if k.target == "server"),
        "endpoint_kills": sum(1 for k in run.kills if k.target == "endpoint"),
        "loops": args.loops,
        "weight_polls": poller.polls if poller else 0,
        "weight_poll_failures": dict(poller.failures) if poller else {},
        "traffic": run.traffic,
        "storm": run.storm,
        "outage": run.outage,
        "worker_start_s": run.worker_starts,
        "timings": run.timings,
        "notes": run.notes,
        "violations": violations,
    }
    for key in ("kills", "worker_kills", "server_kills", "endpoint_kills", "weight_polls"):
        console.print(f"{key}: {summary[key]}")
    for note in run.notes:
        console.print(f"note: {note}")
    if run.storm:
        console.print(f"storm: {run.storm}")
    if run.outage:
        console.print(f"outage: {run.outage}")
    console.print(
        f"[bold]{len(violations)} violations[/] over {summary['kills']} kills "
        f"in {run.timings['total_s']:.0f}s"
    )
    for violation in violations:
        console.print(f"  [red]violation[/]: {violation}", markup=True, highlight=False)
    report = {**summary, "by_point": rows, "each_kill": [k.as_json() for k in run.kills]}
    Path(args.report).write_text(json.dumps(report, indent=2, default=str))
    console.print(f"report: {args.report}")
    if not args.keep and not violations and not args.home:
        shutil.rmtree(home, ignore_errors=True)
    return 1 if violations else 0


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    parser.add_argument("--loops", type=int, default=12)
    parser.add_argument("--storm-events", type=int, default=1000)
    parser.add_argument("--outage", type=float, default=600.0, help="seconds the server is down")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--home", help="keep everything here (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary home")
    parser.add_argument("--report", default="chaos-report.json")
    parser.add_argument("--quick", action="store_true", help="3 loops, 200 events, 30 s outage")
    args = parser.parse_args(argv)
    if args.quick:
        args.loops, args.storm_events, args.outage = 3, 200, 30.0
    if not 1 <= args.storm_events <= 1000:
        parser.error("--storm-events must be 1..1000 (each model's batch holds them all)")
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse(sys.argv[1:]), Console())))
