"""StagedRollout: one candidate's way to production on live traffic (`rollout-<model>-<n>`).

Child of the RetrainingLoop once the offline gates (and a reviewer, when needed) passed:

    shadow (optional) → 5% → 25% → 50% → 100% → promote in the registry → watch

Each stage shifts traffic (read back from the endpoint), bakes, then runs the canary analysis:
statistics in an activity over exactly the stage's requests (its weights generation), the
verdict a pure function (`workflows/rollout/rules.py`). fail → automatic rollback to 100% champion,
read back; inconclusive → bake again up to `max_extensions`, then hold for a human
(`approve` continues, `promote` skips to 100%, `abort` rolls back; no answer in
`human_timeout` rolls back). After promotion a watch window compares the new champion with the
previous one's last live window, and rolls back fast (traffic and registry) on failure.

Operators steer it with `pause`, `resume`, `approve`, `promote`, `abort` (signal or update,
each recorded with who and why); the `status` query shows the step, the weights and every
verdict. A cancelled rollout (its loop cancelled) puts the champion back before it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from datetime import timedelta
from typing import Any, Literal

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

from workflows.common.errors import ErrorType
from workflows.common.names import ActivityName
from workflows.common.retries import LIVENESS, QUICK_RETRY

with workflow.unsafe.imports_passed_through():
    from workflows.common import metrics, names
    from workflows.common.errors import activity_failure
    from workflows.common.messages import one_message
    from workflows.common.notify import Notification, notify
    from workflows.loop.models import PromoteRequest, Promotion
    from workflows.rollout.details import render_rollout_details
    from workflows.rollout.models import (
        CanaryRequest,
        CanaryStatistics,
        CanaryVerdict,
        CommandRecord,
        DeploymentPolicy,
        EndpointState,
        Outcome,
        RolloutCommand,
        RolloutInput,
        RolloutResult,
        RolloutStatus,
        RolloutStep,
        RolloutVerb,
        RolloutView,
        StageRecord,
        TrafficChange,
        WindowRef,
        duration_text,
        variant_name,
    )
    from workflows.rollout.rules import canary_verdict

SHIFT_RETRY = RetryPolicy(
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=20,
    non_retryable_error_types=[ErrorType.TRAFFIC_REFUSED, ErrorType.TRAFFIC_MISMATCH],
)
# Putting the champion back matters more than anything else the rollout does: keep trying.
ROLLBACK_RETRY = RetryPolicy(
    maximum_interval=timedelta(seconds=30),
    non_retryable_error_types=[ErrorType.TRAFFIC_REFUSED, ErrorType.TRAFFIC_MISMATCH],
)
ANALYSIS_RETRY = RetryPolicy(
    maximum_attempts=5,
    maximum_interval=timedelta(minutes=1),
    non_retryable_error_types=[ErrorType.INVALID_CAPTURE_DATA],
)


# Added with the same-period canary: at 100% and during the watch the champion answers
# mirrored traffic, and the canary compares the two variants over the same requests and time
# (a busy host can no longer read as a latency regression). Rollouts started before compare
# with the champion's last live window, as they did.
SAME_PERIOD_PATCH = "canary-same-period"


class RolloutEnded(Exception):
    def __init__(
        self, status: RolloutStatus, summary: str, verdict: CanaryVerdict | None = None
    ) -> None:
        super().__init__(summary)
        self.status = status
        self.summary = summary
        self.verdict = verdict


class _SkipToFull(Exception):
    """A `promote` command: leave the stages, go to 100% now."""


@workflow.defn(name=names.STAGED_ROLLOUT_WORKFLOW)
class StagedRollout:
    @workflow.init
    def __init__(self, input: RolloutInput) -> None:
        self._input = input
        self._id = workflow.info().workflow_id
        self._policy: DeploymentPolicy = input.policy
        self._candidate = variant_name(input.candidate_version)
        self._champion = (
            variant_name(input.champion_version) if input.champion_version is not None else None
        )
        self._step = RolloutStep.STARTING
        self._paused = False
        self._held = False
        self._promoted = False
        # Decisions waiting to be acted on (set by handlers, consumed by the run).
        self._abort: CommandRecord | None = None
        self._promote: CommandRecord | None = None
        self._approve: CommandRecord | None = None
        self._weights: dict[str, int] = {}
        self._shadow: str | None = None
        self._changes = 0
        # Endpoint clock at the current generation's start (capture partitions to read).
        self._stage_since = workflow.now()
        # A promote command already acted on (the stages were left for 100%).
        self._skipped = False
        self._stages: list[StageRecord] = []
        self._commands: list[CommandRecord] = []
        self._notifications = 0
        self._result: RolloutResult | None = None

    # ---- the rollout ---------------------------------------------------------------------

    @workflow.run
    async def run(self, input: RolloutInput) -> RolloutResult:
        self._refresh_details()
        try:
            summary = await self._rollout()
            return self._finish(RolloutStatus.PROMOTED, summary, self._last_verdict())
        except RolloutEnded as ended:
            return self._finish(ended.status, ended.summary, ended.verdict)
        except ActivityError as err:
            failure = activity_failure(err)
            return await self._fail_safe(f"rollout step failed: {failure}")
        except asyncio.CancelledError:
            if not self._promoted:
                await self._restore_champion("rollout cancelled")
            raise

    async def _rollout(self) -> str:
        candidate, champion = self._candidate, self._champion
        if champion is None:
            await self._shift("100%", {candidate: 100})
            await self._registry_promote(self._input.candidate_version)
            return (
                f"first deployment: {candidate} serves 100% and is champion (no champion to "
                "run a canary against)"
            )
        policy = self._policy
        # At 100% and during the watch, the champion answers mirrored traffic (same period);
        # without mirroring, its last live window is the reference.
        mirror = self._input.mirror_champion and workflow.patched(SAME_PERIOD_PATCH)
        mirrored = champion if mirror else None
        reference: WindowRef | None = None
        try:
            if policy.shadow is not None:
                stage = await self._shift("shadow", {champion: 100}, shadow=candidate)
                live, mirrored_candidate = self._windows(stage, shadow=True)
                await self._bake_and_analyse(
                    stage, policy.shadow, policy.shadow_min_requests, live, mirrored_candidate
                )
                reference = live
            for plan in policy.stages:
                weights = {champion: 100 - plan.weight, candidate: plan.weight}
                full = plan.weight == 100
                stage = await self._shift(
                    f"{plan.weight}%",
                    weights,
                    shadow=mirrored if full else None,
                    step=RolloutStep.CANARY,
                )
                champion_window, candidate_window = self._windows(
                    stage, champion_shadow=full and mirror
                )
                if not full:
                    reference = champion_window
                same_period = not full or mirror
                await self._bake_and_analyse(
                    stage,
                    plan.bake,
                    plan.min_requests,
                    champion_window if same_period else (reference or champion_window),
                    candidate_window,
                )
        except _SkipToFull:
            # A human decided: 100% without a canary of its own; the watch still guards it.
            self._skipped = True
            if self._weights != {candidate: 100}:
                await self._shift("100%", {candidate: 100})

        self._enter(RolloutStep.PROMOTING)
        await self._registry_promote(self._input.candidate_version)
        self._promoted = True
        watched = ""
        if policy.watch is not None and (reference is not None or mirror):
            # A new change id with the same split opens a fresh generation: the watch reads
            # only traffic served after promotion.
            stage = await self._shift(
                "watch", {candidate: 100}, shadow=mirrored, step=RolloutStep.WATCH
            )
            champion_window, candidate_window = self._windows(stage, champion_shadow=mirror)
            await self._bake_and_analyse(
                stage,
                policy.watch,
                policy.watch_min_requests,
                champion_window if mirror else (reference or champion_window),
                candidate_window,
            )
            watched = f", watched for {duration_text(policy.watch)}"
        if self._shadow is not None:
            # Done comparing: the previous champion stops answering mirrored traffic.
            await self._set_traffic("unmirror", {candidate: 100}, None, SHIFT_RETRY)
        return f"{candidate} promoted to champion through {self._path()}{watched}"

    def _windows(
        self, stage: StageRecord, shadow: bool = False, champion_shadow: bool = False
    ) -> tuple[WindowRef, WindowRef]:
        """(champion, challenger) windows of the stage's generation; `shadow`: the challenger's
        answers are mirrored ones, `champion_shadow`: the champion's are."""
        assert stage.generation is not None and self._champion is not None
        since = self._stage_since
        return (
            WindowRef(
                variant=self._champion,
                generation=stage.generation,
                since=since,
                shadow=champion_shadow,
            ),
            WindowRef(
                variant=self._candidate, generation=stage.generation, since=since, shadow=shadow
            ),
        )

    # ---- steps ---------------------------------------------------------------------------

    async def _shift(
        self,
        label: str,
        weights: dict[str, int],
        shadow: str | None = None,
        step: RolloutStep | None = None,
    ) -> StageRecord:
        await self._unpaused()
        if step is None:
            step = RolloutStep.SHADOW if shadow else RolloutStep.CANARY
        state = await self._set_traffic(label, weights, shadow, SHIFT_RETRY)
        self._stage_since = state.updated_at
        stage = StageRecord(
            label=label,
            weights=dict(state.weights),
            shadow=state.shadow,
            generation=state.generation,
            started_at=workflow.now(),
        )
        self._stages.append(stage)
        self._enter(step, label)
        return stage

    async def _set_traffic(
        self, label: str, weights: dict[str, int], shadow: str | None, retry: RetryPolicy
    ) -> EndpointState:
        self._changes += 1
        change = TrafficChange(
            model=self._input.model,
            endpoint_url=self._policy.endpoint_url,
            weights={variant: weight for variant, weight in weights.items() if weight > 0},
            shadow=shadow,
            # Idempotency key: a retried or replayed shift is applied once.
            change_id=f"{self._id}/{self._changes}-{label}",
        )
        state: EndpointState = await workflow.execute_activity(
            ActivityName.SHIFT_TRAFFIC,
            change,
            result_type=EndpointState,
            # Two admin calls of at most 10 s each; a worker lost mid-call is retried soon.
            start_to_close_timeout=timedelta(seconds=30),
            heartbeat_timeout=LIVENESS,
            retry_policy=retry,
        )
        self._weights, self._shadow = dict(state.weights), state.shadow
        return state

    async def _bake_and_analyse(
        self,
        stage: StageRecord,
        bake: timedelta,
        min_requests: int,
        champion: WindowRef,
        challenger: WindowRef,
    ) -> None:
        extensions = 0
        while True:
            await self._bake(bake)
            stats = await self._analyse(champion, challenger)
            verdict = canary_verdict(
                stats, self._policy.canary, min_requests, self._input.improvement
            )
            stage.bakes += 1
            stage.verdicts.append(verdict)
            labels = {"model": self._input.model, "verdict": verdict.outcome.value}
            metrics.count(workflow.metric_meter(), metrics.ROLLOUT_VERDICTS, labels)
            self._refresh_details()
            if verdict.outcome is Outcome.FAIL:
                await self._roll_back(f"canary failed at {stage.label}", verdict)
            if verdict.outcome is Outcome.PASS:
                break
            if extensions < self._policy.max_extensions:
                extensions += 1
                continue
            await self._hold_for_human(stage, verdict)
            break
        stage.ended_at = workflow.now()
        await self._unpaused()

    async def _bake(self, bake: timedelta) -> None:
        """Serve at the stage's weights for `bake`; an abort or a promote cuts it short."""
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(self._interrupted, timeout=bake)
        await self._act_on_commands()

    async def _analyse(self, champion: WindowRef, challenger: WindowRef) -> CanaryStatistics:
        seed_key = f"{self._id}/{len(self._stages)}/{self._stages[-1].bakes}"
        stats: CanaryStatistics = await workflow.execute_activity(
            ActivityName.ANALYSE_CANARY,
            CanaryRequest(
                model=self._input.model,
                endpoint_url=self._policy.endpoint_url,
                capture_dir=self._input.capture_dir,
                champion=champion,
                challenger=challenger,
                policy=self._policy.canary,
                seed=int.from_bytes(hashlib.sha256(seed_key.encode()).digest()[:4], "big"),
            ),
            result_type=CanaryStatistics,
            start_to_close_timeout=timedelta(minutes=10),
            # It heartbeats between its steps: a lost worker is noticed in seconds, not minutes.
            heartbeat_timeout=LIVENESS,
            retry_policy=ANALYSIS_RETRY,
        )
        await self._act_on_commands()
        return stats

    async def _hold_for_human(self, stage: StageRecord, verdict: CanaryVerdict) -> None:
        self._held = True
        self._enter(RolloutStep.HELD, stage.label)
        timeout = self._policy.human_timeout
        await self._notify(
            "warning",
            f"rollout held at {stage.label}: canary inconclusive after {stage.bakes} bakes",
            f"{verdict.summary}\n\nDecide within {duration_text(timeout)} (then it rolls back): "
            f"approve (continue), promote (skip to 100%) or abort (roll back), e.g.\n"
            f"  retrain rollout approve {self._input.model} --operator YOU --reason '...'\n"
            f"  temporal workflow signal --workflow-id {self._id} --name approve "
            """--input '{"operator": "YOU", "reason": "..."}'""",
        )
        try:
            await workflow.wait_condition(
                lambda: self._approve is not None or self._interrupted(), timeout=timeout
            )
        except TimeoutError:
            self._held = False
            await self._roll_back(
                f"no decision within {duration_text(timeout)} on the inconclusive canary at "
                f"{stage.label}",
                verdict,
            )
        self._held = False
        self._approve = None
        self._enter(self._step_of(stage), stage.label)
        await self._act_on_commands()

    async def _act_on_commands(self) -> None:
        if self._abort is not None:
            by = self._abort
            await self._roll_back(
                f"aborted by {by.operator}" + (f": {by.reason}" if by.reason else ""),
                self._last_verdict(),
            )
        if self._promote_pending():
            raise _SkipToFull()

    async def _unpaused(self) -> None:
        await workflow.wait_condition(lambda: not self._paused or self._interrupted())
        await self._act_on_commands()

    def _interrupted(self) -> bool:
        return self._abort is not None or self._promote_pending()

    def _promote_pending(self) -> bool:
        return self._promote is not None and not self._skipped and not self._promoted

    async def _registry_promote(self, version: str) -> Promotion:
        promotion: Promotion = await workflow.execute_activity(
            ActivityName.PROMOTE_CANDIDATE,
            PromoteRequest(model=self._input.model, version=version, loop_id=self._id),
            result_type=Promotion,
            start_to_close_timeout=timedelta(minutes=2),
            heartbeat_timeout=LIVENESS,
            retry_policy=QUICK_RETRY,
        )
        return promotion

    # ---- rollback ------------------------------------------------------------------------

    async def _roll_back(self, reason: str, verdict: CanaryVerdict | None) -> None:
        """Champion back to 100% (read back), the registry too when already promoted; raises."""
        self._enter(RolloutStep.ROLLING_BACK)
        restored = await self._restore_champion(reason)
        summary = f"rolled back: {reason}; {restored}"
        metrics.count(workflow.metric_meter(), metrics.ROLLBACKS, {"model": self._input.model})
        await self._notify(
            "warning",
            f"rollout rolled back ({reason})",
            summary + (f"\n\n{verdict.summary}" if verdict else ""),
        )
        raise RolloutEnded(RolloutStatus.ROLLED_BACK, summary, verdict)

    async def _restore_champion(self, reason: str) -> str:
        champion = self._champion
        if champion is None:
            # A first deployment has nothing to go back to: take the candidate out.
            return "no previous champion to restore; the endpoint keeps its last weights"
        try:
            await self._set_traffic("rollback", {champion: 100}, None, ROLLBACK_RETRY)
        except ActivityError as err:
            failure = activity_failure(err)
            await self._notify(
                "critical",
                "ROLLBACK FAILED: check the endpoint now",
                f"Tried to restore {champion} at 100% ({reason}) and failed: {failure}",
            )
            raise RolloutEnded(RolloutStatus.FAILED, f"rollback failed: {failure}") from None
        if self._promoted:
            assert self._input.champion_version is not None
            await self._registry_promote(self._input.champion_version)
            self._promoted = False
            return f"{champion} serves 100% and is champion again"
        return f"{champion} serves 100%"

    async def _fail_safe(self, failure: str) -> RolloutResult:
        """A step failed outright: never leave the candidate live on an unfinished rollout."""
        summary = failure
        if not self._promoted and (self._weights.get(self._candidate, 0) > 0 or self._shadow):
            try:
                summary += f"; {await self._restore_champion(failure)}"
            except RolloutEnded as ended:
                summary += f"; {ended.summary}"
        await self._notify("critical", "rollout failed", summary)
        return self._finish(RolloutStatus.FAILED, summary, self._last_verdict())

    # ---- operator commands ---------------------------------------------------------------

    def _refusal(self, verb: RolloutVerb) -> str | None:
        if self._result is not None:
            return "the rollout has finished"
        if self._abort is not None:
            return "the rollout is being aborted"
        if verb == "pause":
            return "already paused" if self._paused else None
        if verb == "resume":
            return None if self._paused else "not paused"
        if verb == "approve":
            return None if self._held else "nothing to approve: the rollout is not held"
        if verb == "promote":
            if self._promoted:
                return "already promoted"
            return "promotion already requested" if self._promote else None
        return None  # abort

    def _apply(
        self, verb: RolloutVerb, command: RolloutCommand, via: Literal["signal", "update"]
    ) -> CommandRecord:
        record = CommandRecord(
            verb=verb,
            operator=command.operator.strip(),
            reason=command.reason,
            at=workflow.now(),
            via=via,
        )
        self._commands.append(record)
        if verb == "pause":
            self._paused = True
        elif verb == "resume":
            self._paused = False
        elif verb == "approve":
            self._approve = record
        elif verb == "promote":
            # A decision to go ahead: it also lifts a pause.
            self._promote = record
            self._paused = False
        else:
            self._abort = record
        self._refresh_details()
        return record

    def _signal(self, verb: RolloutVerb, payload: tuple[Any, ...]) -> None:
        operator, reason = "?", ""
        try:
            command = one_message(payload, RolloutCommand, verb)
            operator, reason = command.operator, command.reason
            refusal = self._refusal(verb)
        except ValueError as err:
            refusal = f"malformed {err}"
        if refusal is None:
            self._apply(verb, command, "signal")
            return
        workflow.logger.warning("ignored %s signal: %s", verb, refusal)
        self._commands.append(
            CommandRecord(
                verb=verb,
                operator=operator,
                reason=reason,
                at=workflow.now(),
                via="signal",
                refused=refusal[:2000],
            )
        )
        del self._commands[:-200]
        self._refresh_details()

    def _validate(self, verb: RolloutVerb, payload: tuple[Any, ...]) -> None:
        """The update's payload and whether the command means anything now; raises ValueError
        (the Web UI shows it, e.g. "unknown field 'why'; expected {operator, reason}")."""
        one_message(payload, RolloutCommand, verb)
        if (refusal := self._refusal(verb)) is not None:
            raise ValueError(refusal)

    def _update(self, verb: RolloutVerb, payload: tuple[Any, ...]) -> CommandRecord:
        return self._apply(verb, one_message(payload, RolloutCommand, verb), "update")

    # Signals are untyped so that a malformed payload is recorded, not dropped by the SDK.
    @workflow.signal(name="pause")
    def pause_signal(self, *payload: Any) -> None:
        self._signal("pause", payload)

    @workflow.signal(name="resume")
    def resume_signal(self, *payload: Any) -> None:
        self._signal("resume", payload)

    @workflow.signal(name="approve")
    def approve_signal(self, *payload: Any) -> None:
        self._signal("approve", payload)

    @workflow.signal(name="promote")
    def promote_signal(self, *payload: Any) -> None:
        self._signal("promote", payload)

    @workflow.signal(name="abort")
    def abort_signal(self, *payload: Any) -> None:
        self._signal("abort", payload)

    @workflow.update(name="pause")
    def pause(self, *payload: Any) -> CommandRecord:
        return self._update("pause", payload)

    @pause.validator
    def _validate_pause(self, *payload: Any) -> None:
        self._validate("pause", payload)

    @workflow.update(name="resume")
    def resume(self, *payload: Any) -> CommandRecord:
        return self._update("resume", payload)

    @resume.validator
    def _validate_resume(self, *payload: Any) -> None:
        self._validate("resume", payload)

    @workflow.update(name="approve")
    def approve(self, *payload: Any) -> CommandRecord:
        return self._update("approve", payload)

    @approve.validator
    def _validate_approve(self, *payload: Any) -> None:
        self._validate("approve", payload)

    @workflow.update(name="promote")
    def promote(self, *payload: Any) -> CommandRecord:
        return self._update("promote", payload)

    @promote.validator
    def _validate_promote(self, *payload: Any) -> None:
        self._validate("promote", payload)

    @workflow.update(name="abort")
    def abort(self, *payload: Any) -> CommandRecord:
        return self._update("abort", payload)

    @abort.validator
    def _validate_abort(self, *payload: Any) -> None:
        self._validate("abort", payload)

    @workflow.query
    def status(self) -> RolloutView:
        return RolloutView(
            rollout_id=self._id,
            step=self._step,
            paused=self._paused,
            held=self._held,
            weights=self._weights,
            shadow=self._shadow,
            stages=self._stages,
            commands=self._commands,
            result=self._result,
        )

    # ---- bookkeeping ---------------------------------------------------------------------

    def _enter(self, step: RolloutStep, label: str | None = None) -> None:
        self._step = step
        value = f"rollout_{step.value}"
        if step is RolloutStep.CANARY and label:
            value += f"_{label.rstrip('%')}"
        workflow.upsert_search_attributes([names.LOOP_STAGE.value_set(value)])
        self._refresh_details()

    def _step_of(self, stage: StageRecord) -> RolloutStep:
        if stage.label == "watch":
            return RolloutStep.WATCH
        return RolloutStep.SHADOW if stage.label == "shadow" else RolloutStep.CANARY

    def _refresh_details(self) -> None:
        workflow.set_current_details(render_rollout_details(self.status()))

    def _last_verdict(self) -> CanaryVerdict | None:
        for stage in reversed(self._stages):
            if stage.verdicts:
                return stage.verdicts[-1]
        return None

    def _path(self) -> str:
        labels = [s.label for s in self._stages if s.label not in ("watch", "rollback")]
        path = " → ".join(labels)
        if self._promote is not None:
            path += f" (promoted by {self._promote.operator})"
        return path

    async def _notify(
        self, level: Literal["info", "warning", "critical"], subject: str, body: str
    ) -> None:
        self._notifications += 1
        notification = Notification(
            audience="reviewers",
            key=f"{self._id}-{self._notifications}",
            model=self._input.model,
            loop_id=self._input.loop_id,
            level=level,
            subject=f"{self._input.model}: {subject} ({self._id})",
            body=body,
        )
        await notify(notification)

    def _finish(
        self, status: RolloutStatus, summary: str, verdict: CanaryVerdict | None
    ) -> RolloutResult:
        self._held = False
        self._result = RolloutResult(
            rollout_id=self._id,
            status=status,
            summary=summary[:4000],
            champion_version=(
                self._input.candidate_version
                if status is RolloutStatus.PROMOTED
                else self._input.champion_version
            ),
            verdict=verdict,
            stages=self._stages,
            commands=self._commands,
            finished_at=workflow.now(),
        )
        self._enter(RolloutStep.DONE)
        return self._result
