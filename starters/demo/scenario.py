"""`make demo`: a model's retraining life on the embedded default, end to end.

A synthetic concept-drift stream (river's Agrawal generator) writes daily labelled Parquet
partitions for one model. A real prediction endpoint (`retrain serve`, a child process) answers
live traffic from a generator that sends requests and, a second later, their true labels. Then:

1. a month of history (the old concept) exists and a manual trigger asks for the first
   deployment: the loop selects the data window, trains a scikit-learn model in its own
   process, registers it in MLflow, evaluates it on the holdout and the golden set, and waits
   for a human (first deployment): the demo prints the Web UI address and both approval
   commands; approved, the version takes 100% of the endpoint's traffic;
2. the performance monitor (`retrain drift performance`) measures v1 on the labelled live
   traffic it answered: as good as at its promotion;
3. the concept changes on the live traffic; the pipeline lands the new regime's labelled rows;
   the performance monitor finds v1's accuracy collapsed (ADWIN on the per-prediction loss
   locates the change) and sends a `performance` trigger with its numbers; the coordinator's
   adaptive policy weighs what keeping v1 costs against what a retraining costs ("excess loss
   since v1: ... EUR >= retraining cost 23 EUR") and retrains, with a human's approval (a high
   degradation). Meanwhile the drift monitor shows why feature drift alone would not have
   caught it (a pure concept change: only the labels moved);
4. the loop answers the change: its data window starts at the change point (the baseline a
   10% floor, not 30% of old-regime rows), the candidate is evaluated on the most recent
   labelled data and on the captured traffic replayed with its feedback, and must *improve*
   the degraded accuracy significantly, offline and in every canary of its staged rollout
   (5% → 25% → 50% → 100%), then is promoted and watched;
5. (`--bad-candidate`, on by default) a release with a broken online path
   (`starters.demo.bad_candidate`: it passes every offline gate, but its one-row serving path has a
   feature-order mismatch, added latency and errors) is rolled back automatically at 5%, and
   the verdict's numbers are printed;
6. a summary: the loops, and each champion's accuracy on its last 1,000 labelled live
   requests (captured answers joined with their feedback).

`--auto-approve` approves as reviewer `demo-auto-approver` instead of waiting (CI runs it).
The demo's rollout has no shadow stage so that the bad release meets live traffic at 5%; a
shadow stage (`deployment.shadow` in the spec) would have caught it with mirrored traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table
from temporalio.client import Client

from activities.local.registry import MlflowRegistry
from activities.specs import SpecStore
from starters.api.connection import connect
from starters.api.coordinators import Coordinators
from starters.api.dev_server import DevServer, port_open, stop
from starters.api.drift import DriftMonitors
from starters.api.loops import Loops, read_audit
from starters.api.rollouts import Rollouts
from starters.cli.render import coordinators as render
from starters.cli.render.drift import (
    drift_report_header,
    drift_report_table,
    performance_check_lines,
)
from starters.demo.endpoint_process import endpoint_process, free_port
from starters.demo.live import LiveAccuracy, live_accuracy
from starters.demo.synthetic import (
    POST_DRIFT_FUNCTION,
    PRE_DRIFT_FUNCTION,
    write_day,
    write_demo_dataset,
)
from starters.demo.traffic import TrafficGenerator
from workers.worker import build_worker
from workflows.common.names import coordinator_id, retraining_loop_id
from workflows.coordinator.policy import AdaptiveSettings, CostModel, TriggerPolicy
from workflows.coordinator.triggers import TriggerEvent, TriggerKind
from workflows.drift.models import (
    CheckRequest,
    ColumnRule,
    DriftPolicy,
    DriftStatistic,
    PerformanceCheck,
)
from workflows.drift.performance_models import PerformancePolicy
from workflows.loop.audit import LoopStage
from workflows.loop.details import render_loop_details
from workflows.loop.models import LoopStatus, ReviewDecision
from workflows.rollout.models import (
    CanaryPolicy,
    DeploymentPolicy,
    Outcome,
    RolloutResult,
    StagePlan,
)
from workflows.spec.models import Metric, ModelSpec

MODEL = "demo-credit"
WINDOW_DAYS = 30
# History of the old concept, up to yesterday; the concept changes during the demo.
HISTORY_DAYS = 30
ROWS_PER_DAY = 400
# The new regime's labelled rows the pipeline lands after the change (five files of 400).
NEW_REGIME_PARTS = 5
# Labels each performance check waits for (its window's minimum), and the drift check's shortest
# window: at least a minute of traffic after the change, so it holds the new concept only.
PERFORMANCE_LABELS = 600
DRIFT_WINDOW = timedelta(minutes=1)
# The live accuracy figure of the summary: each champion's last labelled requests.
LIVE_ACCURACY_ROWS = 1000
AUTO_REVIEWER = "demo-auto-approver"
LOOP_TIMEOUT = 300.0
# Live traffic: enough requests per bake that 5% of them (about 60) can decide a canary.
REQUESTS_PER_SECOND = 80
STAGE_BAKE = timedelta(seconds=15)
STAGE_MIN_REQUESTS = 40
BAD_ENTRYPOINT = "starters.demo.bad_candidate:train"
# The drift monitor's minimum of requests in its window.
DRIFT_CHECK_REQUESTS = 1000


@contextlib.asynccontextmanager
async def embedded_server(home: Path, console: Console) -> AsyncIterator[DevServer]:
    """Use a server already listening on 7233 (e.g. `retrain server`), else start one."""
    dev = DevServer(home=home)
    if port_open(dev.ip, dev.port):
        console.print(f"using the Temporal server already on {dev.address}")
        yield dev
        return
    process = dev.spawn(log_file=home / "demo-server.log")
    try:
        await asyncio.to_thread(dev.wait_ready, process)
        console.print(f"started the embedded Temporal dev server on {dev.address}")
        yield dev
    finally:
        stop(process)


def demo_spec(spec: ModelSpec, endpoint_url: str) -> ModelSpec:
    """The generated spec with demo-speed timings (real deployments use hours, not seconds).

    The first deployment sees 29 of the window's 30 days, hence the lower day coverage. A
    real concept change moves a good candidate away from the old champion by design, in its
    predictions (KL about 1.5 here, against the default limit 0.25, which the gate enforces:
    lower it and watch loop 2 be rejected); on the old baseline the gate allows what the
    champion itself moved between the regimes. The rollout bakes each stage for seconds rather
    than the default ten minutes. The performance policy's cut points make a collapse of
    accuracy (about 45% relative) "high": retrain, with a human's approval; the default (0.30)
    would call it critical and block automation for a human review. It watches accuracy only
    (log loss, relative to its reference, degrades by several hundred percent here).
    """
    deployment = DeploymentPolicy(
        endpoint_url=endpoint_url,
        stages=[
            StagePlan(weight=weight, bake=STAGE_BAKE, min_requests=STAGE_MIN_REQUESTS)
            for weight in (5, 25, 50, 100)
        ],
        # Latency is compared across stages (the 100% stage against the champion's last live
        # window): on a loaded laptop that ratio swings past the default 1.5 by itself. The bad
        # release fails on its errors and its quality anyway.
        canary=CanaryPolicy(min_labelled=STAGE_MIN_REQUESTS, max_latency_ratio=3.0),
        max_extensions=6,
        watch=STAGE_BAKE,
        watch_min_requests=STAGE_MIN_REQUESTS,
    )
    loop = spec.loop.model_copy(
        update={
            "window": spec.loop.window.model_copy(
                update={"days": WINDOW_DAYS, "min_days_fraction": 0.7}
            ),
            # Retraining on the same days with another seed moves log loss by a few
            # thousandths either way: tolerate that much rather than flip a coin.
            "evaluation": spec.loop.evaluation.model_copy(update={"min_improvement": -0.01}),
            "guardrails": spec.loop.guardrails.model_copy(
                update={"max_baseline_drift": 0.15, "max_prediction_kl": 2.0}
            ),
            "deployment": deployment,
        }
    )
    return spec.model_copy(
        update={
            # Adaptive: an error costs 0.50 EUR, a retraining 3 EUR of compute plus 20 EUR of
            # review and rollout; the coordinator retrains when keeping the model is expected
            # to cost more than that (the rules' limits still apply).
            "trigger_policy": TriggerPolicy(
                batch_size=8,
                batch_window=timedelta(seconds=20),
                max_wait=timedelta(minutes=1),
                cooldown=timedelta(seconds=5),
                max_daily_trainings=10,
                daily_budget=100.0,
                cost=CostModel(currency="EUR", hourly_rate=3.0),
                adaptive=AdaptiveSettings(value_per_error=0.5, retraining_overhead=20.0),
            ),
            "loop": loop,
            # Jensen-Shannon distance as the score: the label shift of this concept change
            # (about 65% -> 53% approvals) is about 0.11 there, a medium drift (0.07 in PSI,
            # under its 0.1 threshold). The label's threshold sits below it so a thousand
            # requests' sampling noise cannot hide it.
            "drift": DriftPolicy(
                statistic=DriftStatistic.JS,
                window=DRIFT_WINDOW,
                min_rows=DRIFT_CHECK_REQUESTS,
                label=ColumnRule(threshold=0.05),
            ),
            "performance": PerformancePolicy(
                metrics=[Metric.ACCURACY],
                min_rows=PERFORMANCE_LABELS,
                min_rows_at_max_age=PERFORMANCE_LABELS,
                severity_cut_points=(0.03, 0.10, 0.60),
            ),
        }
    )


async def reset_previous_run(client: Client, home: Path) -> None:
    """A rerun starts from scratch: end the last run's executions, drop its data and versions."""
    query = f"ModelName = '{MODEL}' AND ExecutionStatus = 'Running'"
    async for execution in client.list_workflows(query):
        await client.get_workflow_handle(execution.id).terminate(reason="demo restarted")
    for part in ("data", "runs", "audit", "endpoints", "drift"):
        shutil.rmtree(home / part / MODEL, ignore_errors=True)
    (home / "golden" / f"{MODEL}.json").unlink(missing_ok=True)
    await asyncio.to_thread(MlflowRegistry(home).delete_model, MODEL)


class Scenario:
    def __init__(
        self,
        client: Client,
        home: Path,
        console: Console,
        auto_approve: bool,
        endpoint_url: str,
        bad_candidate: bool,
    ) -> None:
        self.client = client
        self.home = home
        self.coordinators = Coordinators(client)
        self.loops = Loops(client, home)
        self.rollouts = Rollouts(client)
        self.console = console
        self.auto_approve = auto_approve
        self.endpoint_url = endpoint_url
        self.bad_candidate = bad_candidate
        self.numbers: list[int] = []
        self.traffic_started = datetime.now(UTC)
        self.live: dict[str, LiveAccuracy] = {}

    def step(self, text: str) -> None:
        self.console.print(f"\n[bold]>> {text}[/]")

    async def send(self, event: TriggerEvent) -> None:
        decision = await self.coordinators.trigger(MODEL, event)
        self.console.print(render.decisions_table([decision], title=""))

    async def prepare(self) -> ModelSpec:
        """History of the old concept, the spec registered, the coordinator running."""
        today = datetime.now(UTC).date()
        self.step(
            f"{HISTORY_DAYS} days of labelled history for {MODEL} (Agrawal generator, river); "
            "the concept will change while the demo runs"
        )
        spec = await asyncio.to_thread(
            write_demo_dataset,
            self.home,
            MODEL,
            start=today - timedelta(days=HISTORY_DAYS),
            days=HISTORY_DAYS,
            drift_day=None,
        )
        spec = demo_spec(spec, self.endpoint_url)
        SpecStore(self.home).register(spec)
        await self.coordinators.start(MODEL, spec.trigger_policy)
        await self.coordinators.set_policy(MODEL, spec.trigger_policy.model_dump(mode="json"))
        self.console.print(f"model spec registered under {self.home / 'models'}")
        return spec

    async def play(self, spec: ModelSpec, ui_url: str) -> None:
        self.step("a data scientist asks for the first deployment (manual trigger)")
        await self.send(
            TriggerEvent(kind=TriggerKind.MANUAL, source="demo", event_id="first-deployment")
        )
        await self.through_loop(1, ui_url)

        self.step(
            f"live traffic: {REQUESTS_PER_SECOND} requests/s to {self.endpoint_url}, true labels "
            "for 80% of them a second later (POST /feedback)"
        )
        async with TrafficGenerator(
            self.endpoint_url,
            rate=REQUESTS_PER_SECOND,
            label_share=0.8,
            label_delay=1.0,
            function=PRE_DRIFT_FUNCTION,
        ) as traffic:
            self.traffic_started = datetime.now(UTC)
            await self.performance_check(
                traffic, "the performance monitor measures v1 on its labelled live traffic"
            )
            await self.concept_change(spec, traffic, ui_url)
            if self.bad_candidate:
                await self.bad_release(spec, ui_url)
        self.console.print(f"\ntraffic: {traffic.stats.line()}")
        self.live = await self.live_accuracy(spec)

    async def performance_check(self, traffic: TrafficGenerator, title: str) -> PerformanceCheck:
        """A performance check once its window has enough labels; printed, and (when degraded)
        the coordinator's decision for the trigger it sent."""
        self.step(f"{title} (`retrain drift performance {MODEL}`)")
        wanted = traffic.stats.labelled + PERFORMANCE_LABELS + 100
        while traffic.stats.labelled < wanted:
            await asyncio.sleep(0.5)
        check = await DriftMonitors(self.client).check_performance(
            MODEL, CheckRequest(reason="demo")
        )
        for line in performance_check_lines(check):
            self.console.print(line, highlight=False)
        # The coordinator's adaptive decision on what the monitor observed (and its trigger).
        ids = {f"obs-{check.check_id}", *([check.event_id] if check.event_id else [])}
        for _ in range(20):
            decisions = await self.coordinators.decisions(MODEL, limit=10)
            answered = [d for d in decisions if ids.intersection(d.event_ids)]
            if answered:
                self.console.print(render.decision_panel(answered[-1]))
                break
            await asyncio.sleep(0.5)
        return check

    async def drift_check(
        self, spec: ModelSpec, traffic: TrafficGenerator, changed_at: datetime, answered: int
    ) -> None:
        """The drift monitor on the live traffic since the change (the new concept): the inputs
        look as they did in training (a pure concept change), the labels coming back do not.

        The window spans the traffic since the change, at least `DRIFT_WINDOW`, once the
        monitor's minimum of requests was answered after it (`answered`: the count at the
        change): a busy machine answers fewer requests a minute than an idle one."""
        wanted = answered + round(DRIFT_CHECK_REQUESTS * 1.2)
        while datetime.now(UTC) < changed_at + DRIFT_WINDOW + timedelta(seconds=2) or (
            traffic.stats.ok < wanted
        ):
            await asyncio.sleep(0.5)
        # Whole seconds, one short of the time since the change: no request of the old concept.
        since = int((datetime.now(UTC) - changed_at).total_seconds()) - 1
        window = timedelta(seconds=since)
        SpecStore(self.home).register(
            spec.model_copy(update={"drift": spec.drift.model_copy(update={"window": window})})
        )
        self.step(
            f"meanwhile the drift monitor compares the {since} s of live traffic since the change "
            f"with v1's reference profile (`retrain drift check {MODEL}`)"
        )
        # Report only: the performance trigger already asked for a retraining.
        report = await DriftMonitors(self.client).check(
            MODEL, CheckRequest(reason="demo", notify_coordinator=False)
        )
        for line in drift_report_header(report):
            self.console.print(line, highlight=False)
        self.console.print(drift_report_table(report))

    async def concept_change(self, spec: ModelSpec, traffic: TrafficGenerator, ui_url: str) -> None:
        changed_at = datetime.now(UTC)
        answered = traffic.stats.ok
        traffic.set_concept(POST_DRIFT_FUNCTION)
        self.step(
            f"the concept changes at {changed_at:%H:%M:%S} UTC: live requests are now labelled "
            f"by Agrawal function {POST_DRIFT_FUNCTION}, the same inputs, other answers"
        )
        await asyncio.sleep(5)
        # The pipeline lands the new regime's labelled rows (event times since the change).
        landed = datetime.now(UTC)
        day = changed_at.date()
        until = min(landed, datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1))
        for part in range(NEW_REGIME_PARTS):
            await asyncio.to_thread(
                write_day,
                self.home,
                spec,
                day,
                function=POST_DRIFT_FUNCTION,
                rows=ROWS_PER_DAY,
                seed=part + 1,
                part=part + 1,
                between=(changed_at, until),
            )
        self.console.print(
            f"the pipeline landed {NEW_REGIME_PARTS * ROWS_PER_DAY} labelled rows of the new "
            f"regime under data/{MODEL}/labelled/date={day}/"
        )
        check = await self.performance_check(traffic, "the performance monitor measures v1 again")
        if check.event_id is None:
            raise RuntimeError(f"demo: no performance trigger: {check.verdict.summary}")
        await self.drift_check(spec, traffic, changed_at, answered)
        await self.through_loop(2, ui_url)

    async def live_accuracy(self, spec: ModelSpec) -> dict[str, LiveAccuracy]:
        """Each version's accuracy on its last labelled live requests (the capture joined with
        its feedback, as the performance monitor reads it)."""
        async with httpx.AsyncClient(timeout=10) as client:
            with contextlib.suppress(httpx.HTTPError):
                await client.post(f"{self.endpoint_url}/admin/flush")
        return await asyncio.to_thread(
            live_accuracy, self.home, spec, self.traffic_started, LIVE_ACCURACY_ROWS
        )

    async def bad_release(self, spec: ModelSpec, ui_url: str) -> None:
        self.step(
            "a release with a broken online path (starters.demo.bad_candidate: feature-order "
            "mismatch, added latency and errors on one-row requests) passes the offline gates"
        )
        store = SpecStore(self.home)
        store.register(
            spec.model_copy(
                update={"training": spec.training.model_copy(update={"entrypoint": BAD_ENTRYPOINT})}
            )
        )
        try:
            await self.send(
                TriggerEvent(kind=TriggerKind.MANUAL, source="demo", event_id="bad-release")
            )
            await self.through_loop(3, ui_url)
        finally:
            store.register(spec)

    async def through_loop(self, number: int, ui_url: str) -> None:
        self.numbers.append(number)
        loop_id = retraining_loop_id(MODEL, number)
        self.console.print(f"following {loop_id} ...")
        deadline = asyncio.get_running_loop().time() + LOOP_TIMEOUT
        stage = None
        while True:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"demo: {loop_id} did not finish in {LOOP_TIMEOUT:.0f} s")
            try:
                view = await self.loops.view(MODEL, number)
            except LookupError:
                await asyncio.sleep(0.5)
                continue
            if view.stage != stage:
                stage = view.stage
                self.console.print(f"  stage: [cyan]{stage.value}[/]")
            if view.awaiting_approval:
                await self.approval(number, render_loop_details(view), ui_url, loop_id)
                deadline = asyncio.get_running_loop().time() + LOOP_TIMEOUT
            if stage is LoopStage.DEPLOYING:
                await self.follow_rollout(number)
            if stage is LoopStage.DONE and view.record.outcome and view.record.outcome.audit_uri:
                outcome = view.record.outcome
                style = "green" if outcome.status is LoopStatus.PROMOTED else "yellow"
                self.console.print(f"  [{style}]{outcome.status.value}[/]: {outcome.summary}")
                return
            await asyncio.sleep(0.5)

    async def follow_rollout(self, number: int) -> None:
        """Print each stage and verdict of the loop's rollout as it happens, until it ends."""
        shown: set[tuple[int, int]] = set()
        while True:
            try:
                view = await self.rollouts.view(MODEL, number)
            except LookupError:
                await asyncio.sleep(0.5)
                continue
            for index, stage in enumerate(view.stages):
                if (index, -1) not in shown:
                    shown.add((index, -1))
                    split = ", ".join(f"{v} {w}%" for v, w in sorted(stage.weights.items()))
                    self.console.print(f"    rollout [cyan]{stage.label}[/]: {split}")
                for bake, verdict in enumerate(stage.verdicts):
                    if (index, bake) not in shown:
                        shown.add((index, bake))
                        self.print_verdict(stage.label, verdict.outcome, verdict.summary)
            if view.result is not None:
                self.console.print(f"    rollout {view.result.status.value}: {view.result.summary}")
                return
            if view.held:
                self.console.print(
                    f"    held for a human: retrain rollout approve|promote|abort {MODEL} "
                    "--operator YOU"
                )
            await asyncio.sleep(0.5)

    def print_verdict(self, label: str, outcome: Outcome, summary: str) -> None:
        style = {Outcome.PASS: "green", Outcome.FAIL: "red"}.get(outcome, "yellow")
        self.console.print(f"      canary at {label}: [{style}]{outcome.value}[/]")
        if outcome is not Outcome.PASS:
            # The numbers behind anything but a pass: what a reviewer reads.
            for line in summary.splitlines()[1:]:
                self.console.print(f"        {line}", markup=False, highlight=False)

    async def approval(self, number: int, details: str, ui_url: str, loop_id: str) -> None:
        self.console.print(details, markup=False, highlight=False)
        self.console.print(
            f"\nWeb UI: {ui_url}/namespaces/default/workflows/{loop_id} (these details: its User "
            "Metadata tab)\n"
            f"approve with:  retrain approve {MODEL} --loop {number} --reviewer YOU "
            '--comment "..."\n'
            f"or:            temporal workflow signal --workflow-id {loop_id} --name approve "
            '--input \'{"reviewer": "YOU", "comment": "..."}\''
        )
        if self.auto_approve:
            record = await self.loops.review(
                MODEL,
                "approve",
                ReviewDecision(reviewer=AUTO_REVIEWER, comment="demo --auto-approve"),
                number,
            )
            self.console.print(f"  approved by {record.reviewer} (--auto-approve)")
            return
        self.console.print("[bold]waiting for a reviewer[/] (Ctrl-C to stop the demo)")
        while (await self.loops.view(MODEL, number)).awaiting_approval:
            await asyncio.sleep(1)

    def live_table(self) -> Table:
        """Each champion's accuracy on its last labelled live requests."""
        champion = MlflowRegistry(self.home).champion(MODEL)
        table = Table(
            title=f"{MODEL}: accuracy on each version's last {LIVE_ACCURACY_ROWS:,} labelled "
            "live requests (captured answers joined with their feedback)"
        )
        for column in ("version", "role", "accuracy", "95% interval", "labelled", "served"):
            table.add_column(column)
        current = int(champion.version) if champion else 0
        for version, live in sorted(self.live.items(), key=lambda item: int(item[0])):
            if int(version) == current:
                role = "champion"
            else:
                role = "previous champion" if int(version) < current else "rolled back"
            served = (
                f"{live.first_at:%H:%M:%S} - {live.last_at:%H:%M:%S} UTC"
                if live.first_at and live.last_at
                else "-"
            )
            table.add_row(
                f"v{version}",
                role,
                f"{live.accuracy:.3f}",
                f"[{live.ci_low:.3f}, {live.ci_high:.3f}]",
                f"{live.rows:,}",
                served,
            )
        return table

    def summary(self) -> Table:
        table = Table(title=f"{MODEL}: what happened")
        columns = ("loop", "trigger", "outcome", "version", "holdout", "golden", "approval")
        for column in (*columns, "rollout"):
            table.add_column(column, overflow="fold")
        for number in self.numbers:
            record = read_audit(self.home, MODEL, number)
            evaluation = record.evaluation
            holdout = golden = "-"
            if evaluation:
                metric = record.verdict and evaluation.candidate.get("holdout", {})
                holdout = ", ".join(
                    f"{k} {v:.3f}"
                    for k, v in (metric or {}).items()
                    if k in ("accuracy", "roc_auc")
                )
                golden = ", ".join(
                    f"{k} {v:.3f}"
                    for k, v in evaluation.candidate.get("golden", {}).items()
                    if k == "accuracy"
                )
            review = record.approval.review
            table.add_row(
                record.loop_id,
                ", ".join(kind.value for kind in record.trigger.kinds),
                record.outcome.status.value if record.outcome else "running",
                record.candidate.version if record.candidate else "-",
                holdout,
                golden,
                f"{review.decision}d by {review.reviewer}" if review else "not needed",
                _rollout_cell(record.deployment.rollout if record.deployment else None),
            )
        return table


def _rollout_cell(rollout: RolloutResult | None) -> str:
    if rollout is None:
        return "-"
    path = " → ".join(stage.label for stage in rollout.stages)
    return f"{path}: {rollout.status.value}"


async def run_demo(
    home: Path,
    *,
    keep_running: bool,
    auto_approve: bool,
    bad_candidate: bool,
    console: Console,
) -> None:
    home.mkdir(parents=True, exist_ok=True)
    # Worker chatter goes to a file; the console tells the story.
    logging.basicConfig(
        filename=home / "demo-worker.log",
        level=logging.INFO,
        format="%(asctime)s %(name)s %(message)s",
    )
    async with embedded_server(home, console) as dev:
        client = await connect(dev.address)
        await reset_previous_run(client, home)
        port = free_port()
        async with build_worker(client, home=home):
            scenario = Scenario(
                client, home, console, auto_approve, f"http://127.0.0.1:{port}", bad_candidate
            )
            spec = await scenario.prepare()
            endpoint = endpoint_process(home, MODEL, port, home / "demo-endpoint.log", seed=1)
            url = await asyncio.to_thread(endpoint.__enter__)
            try:
                console.print(
                    f"endpoint: {url} (`retrain serve {MODEL}`; {url}/metrics, {url}/admin/weights)"
                )
                await scenario.play(spec, dev.ui_url)
                console.print()
                console.print(scenario.summary())
                console.print(scenario.live_table())
                console.print(
                    f"audit records: retrain audit {MODEL} [N]; loops: retrain loops {MODEL}; "
                    f"rollouts: retrain rollout status {MODEL} --loop N\n"
                    f"Web UI: {dev.ui_url}/namespaces/default/workflows/{coordinator_id(MODEL)}\n"
                    f"MLflow: mlflow ui --backend-store-uri sqlite:///{home / 'mlflow.db'}"
                )
                if keep_running:
                    console.print("server, worker and endpoint keep running; Ctrl-C to stop")
                    await asyncio.Event().wait()
            finally:
                await asyncio.to_thread(endpoint.__exit__, None, None, None)
