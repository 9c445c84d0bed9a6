"""RetrainingLoop: one retraining of one model, started by its coordinator (`retrain-<model>-<n>`).

data window → golden set check → train → register challenger → evaluate against the champion
→ guardrails → approval gate (when required) → deploy (a StagedRollout child by default, or
all at once) → audit record. Every step is an activity keyed by the loop id, so retries and
worker restarts never train or register twice.
Every ending, failures included, writes the audit record and returns a `LoopResult` the
coordinator records.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta
from typing import Any, Literal

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    is_cancelled_exception,
)
from temporalio.workflow import ParentClosePolicy

from workflows.common.errors import ErrorType
from workflows.common.names import ActivityName
from workflows.common.retries import LIVENESS, QUICK_RETRY

with workflow.unsafe.imports_passed_through():
    from workflows.common import metrics, names
    from workflows.common.errors import activity_failure
    from workflows.common.messages import one_message
    from workflows.common.notify import Notification, notify
    from workflows.drift.models import ProfileSummary
    from workflows.loop.approval import (
        ApprovalEventKind,
        approval_reasons,
        next_approval_event,
        review_refusal,
    )
    from workflows.loop.audit import (
        AuditRecord,
        DeploymentRecord,
        IgnoredReview,
        LoopStage,
        LoopView,
        ReviewRecord,
        ReviewVerb,
        StageEntry,
    )
    from workflows.loop.details import STATIC_DETAILS, render_loop_details
    from workflows.loop.models import (
        DataWindow,
        DataWindowRequest,
        EvaluationReport,
        EvaluationRequest,
        GoldenSet,
        Lineage,
        LoopResult,
        LoopStatus,
        ModelVersion,
        PromoteRequest,
        Promotion,
        RegisterRequest,
        RejectRequest,
        RetrainingLoopInput,
        ReviewDecision,
        TrainingJob,
        TrainingRequest,
        TrainingResult,
    )
    from workflows.loop.rules import (
        GateContext,
        candidate_loss,
        gate_verdict,
        improvement_metric,
    )
    from workflows.rollout.models import (
        RolloutInput,
        RolloutResult,
        RolloutStatus,
        canary_improvement,
    )
    from workflows.slots.lease import TrainingSlot
    from workflows.slots.models import SLOT_GRANTED_SIGNAL, SlotWait
    from workflows.spec.backends import backend_info
    from workflows.spec.models import FeatureKind, Metric, ModelSpec

QUICK = timedelta(minutes=2)
REFERENCE_PROFILE_PATCH = "reference-profile-on-promotion"
REJECTION_PATCH = "candidate-rejected-in-registry"
TRAINING_SLOT_PATCH = "training-slot"
# Added with the outcome search attribute (RetrainOutcome): loops started before do not set it.
OUTCOME_PATCH = "loop-outcome-attribute"
DATA_RETRY = RetryPolicy(
    maximum_attempts=5,
    maximum_interval=timedelta(minutes=2),
    non_retryable_error_types=[
        ErrorType.INVALID_DATA,
        ErrorType.UNKNOWN_MODEL,
        ErrorType.INVALID_MODEL_SPEC,
    ],
)
# A retried training adopts the earlier attempt's process or result (idempotent by loop id).
TRAINING_RETRY = RetryPolicy(
    maximum_attempts=3,
    initial_interval=timedelta(seconds=5),
    non_retryable_error_types=[ErrorType.TRAINING_ENTRYPOINT],
)
TRAINING_HEARTBEAT = LIVENESS
EVALUATION_RETRY = RetryPolicy(
    maximum_attempts=3,
    non_retryable_error_types=[
        ErrorType.INVALID_EVALUATION_DATA,
        ErrorType.INVALID_MODEL_OUTPUT,
        ErrorType.GOLDEN_SET_CHANGED,
    ],
)


# Outcomes that leave the registered candidate unpromoted (or demoted again).
_NOT_PROMOTED = frozenset(
    {LoopStatus.REJECTED_BY_GATE, LoopStatus.REJECTED_BY_REVIEWER, LoopStatus.ROLLED_BACK}
)


class LoopEnded(Exception):
    """Ends the loop early with a result (insufficient data, a failed gate, a rejection)."""

    def __init__(self, status: LoopStatus, summary: str) -> None:
        super().__init__(summary)
        self.status = status
        self.summary = summary


@workflow.defn(name=names.RETRAINING_LOOP_WORKFLOW)
class RetrainingLoop:
    @workflow.init
    def __init__(self, input: RetrainingLoopInput) -> None:
        self._input = input
        self._loop_id = workflow.info().workflow_id
        self._stage = LoopStage.STARTED
        self._spec: ModelSpec | None = None
        self._awaiting_approval = False
        self._slot = TrainingSlot(input.model, input.trigger.priority)
        self._record = AuditRecord(
            loop_id=self._loop_id,
            loop_number=input.loop_number,
            model=input.model,
            started_at=workflow.now(),
            coordinator_id=input.coordinator_id,
            trigger=input.trigger,
            estimated_cost=input.estimated_cost,
            policy_version=input.policy_version,
            stages=[StageEntry(stage=LoopStage.STARTED, at=workflow.now())],
        )

    # ---- the loop ----------------------------------------------------------------------

    @workflow.run
    async def run(self, input: RetrainingLoopInput) -> LoopResult:
        self._refresh_details()
        try:
            status, summary = LoopStatus.PROMOTED, await self._retrain()
        except LoopEnded as ended:
            status, summary = ended.status, ended.summary
        except ActivityError as err:
            status, summary = LoopStatus.FAILED, activity_failure(err)
            await self._notify("critical", "loop failed", summary)
        except asyncio.CancelledError:
            # Record the cancellation (activities still run once it is caught), then let the
            # workflow end as cancelled.
            await self._finish(LoopStatus.CANCELLED, "loop was cancelled")
            raise
        return await self._finish(status, summary)

    async def _retrain(self) -> str:
        spec = self._spec = await self._load_spec()
        self._record.spec_hash = spec.content_hash()

        self._enter(LoopStage.DATA_WINDOW)
        window = await self._select_window(spec)
        if not window.sufficient:
            failed = [c for c in window.checks if not c.passed]
            raise LoopEnded(
                LoopStatus.INSUFFICIENT_DATA,
                "insufficient data: "
                + "; ".join(
                    f"{c.name} {c.value:g} (needs {c.threshold:g}) {c.detail}" for c in failed
                ),
            )
        golden = await self._verify_golden_set(spec)

        # Added with the global training limit: loops already running train without a slot.
        if workflow.patched(TRAINING_SLOT_PATCH):
            training = await self._train_in_slot(spec, window)
        else:
            self._enter(LoopStage.TRAINING)
            training = await self._train(spec, window)

        self._enter(LoopStage.REGISTERING)
        champion = await self._champion(spec)
        candidate = await self._register(spec, window, training, champion)

        self._enter(LoopStage.EVALUATING)
        golden = await self._verify_golden_set(spec)
        report = await self._evaluate(spec, window, golden, candidate, champion)
        verdict = self._record.verdict = gate_verdict(
            report,
            spec,
            GateContext(regime_change=window.regime_start is not None, improve=self._improve()),
        )
        if not verdict.passed:
            await self._notify(
                "warning",
                "candidate rejected by the evaluation gate",
                f"{verdict.summary}\n\nWhat to do next: inspect `retrain audit {spec.name}` "
                "for the numbers; fix the data or the training entrypoint and send a manual "
                "trigger, or adjust the gates in the model spec if they are wrong.",
            )
            raise LoopEnded(LoopStatus.REJECTED_BY_GATE, verdict.summary)

        reasons = approval_reasons(
            spec.loop.approval, self._input.trigger, champion is None, verdict
        )
        if reasons:
            await self._approval_gate(spec, reasons)

        self._enter(LoopStage.DEPLOYING)
        if spec.loop.deployment.mode == "all_at_once":
            promotion = await self._deploy(spec, candidate)
            previous = promotion.previous_champion or "none"
            summary = f"version {promotion.champion} promoted to champion (previous: {previous})"
        else:
            summary = await self._staged_rollout(spec, candidate, champion)
        # Added with drift monitoring: loops that were running before do not know the step.
        if workflow.patched(REFERENCE_PROFILE_PATCH):
            await self._rebuild_reference_profile(spec)
        return summary

    # ---- steps -------------------------------------------------------------------------

    async def _load_spec(self) -> ModelSpec:
        spec: ModelSpec = await workflow.execute_activity(
            ActivityName.LOAD_MODEL_SPEC,
            self._input.model,
            result_type=ModelSpec,
            start_to_close_timeout=QUICK,
            heartbeat_timeout=LIVENESS,
            retry_policy=DATA_RETRY,
        )
        return spec

    async def _select_window(self, spec: ModelSpec) -> DataWindow:
        extra = sorted({arrival.uri for arrival in self._input.trigger.data})
        window: DataWindow = await workflow.execute_activity(
            ActivityName.SELECT_DATA_WINDOW,
            DataWindowRequest(
                loop_id=self._loop_id,
                spec=spec,
                as_of=workflow.now(),
                extra_uris=extra,
                regime_start=self._input.trigger.regime_start or self._input.trigger.change_at,
            ),
            result_type=DataWindow,
            start_to_close_timeout=timedelta(hours=1),
            heartbeat_timeout=LIVENESS,
            retry_policy=DATA_RETRY,
        )
        self._record.data_window = window
        return window

    async def _verify_golden_set(self, spec: ModelSpec) -> GoldenSet:
        try:
            golden: GoldenSet = await workflow.execute_activity(
                ActivityName.VERIFY_GOLDEN_SET,
                spec,
                result_type=GoldenSet,
                start_to_close_timeout=timedelta(minutes=30),
                heartbeat_timeout=LIVENESS,
                retry_policy=RetryPolicy(
                    maximum_attempts=5, non_retryable_error_types=[ErrorType.GOLDEN_SET_CHANGED]
                ),
            )
        except ActivityError as err:
            if _error_type(err) == "GoldenSetChanged":
                message = activity_failure(err)
                await self._notify(
                    "critical",
                    "GOLDEN SET CHANGED: evaluation refused",
                    f"{message}\n\nThe golden set is immutable. Restore the registered file, "
                    "or re-register it deliberately if the change is intended.",
                )
                raise LoopEnded(LoopStatus.FAILED, message) from None
            raise
        self._record.golden_set = golden
        return golden

    async def _train(self, spec: ModelSpec, window: DataWindow) -> TrainingResult:
        assert window.training_set is not None and window.holdout_set is not None
        timeout = spec.training.timeout
        request = TrainingRequest(
            model=spec.name,
            loop_id=self._loop_id,
            task=spec.task.value,
            train_path=window.training_set.uri,
            validation_path=window.holdout_set.uri,
            features=spec.feature_names,
            categorical_features=[
                f.name for f in spec.features if f.kind is FeatureKind.CATEGORICAL
            ],
            label=spec.label,
            hyperparameters=spec.training.hyperparameters,
            output_dir=f"runs/{spec.name}/{self._loop_id}/training",
            seed=self._seed(),
        )
        try:
            training: TrainingResult = await workflow.execute_activity(
                ActivityName.TRAIN_CANDIDATE,
                TrainingJob(
                    entrypoint=spec.training.entrypoint,
                    request=request,
                    timeout_seconds=timeout.total_seconds(),
                    tags=self._chargeback_tags(),
                    parameters=self._pipeline_parameters(),
                ),
                result_type=TrainingResult,
                # Room for the retries: each attempt adopts what the previous one left.
                start_to_close_timeout=timeout + timedelta(minutes=5),
                schedule_to_close_timeout=timeout * 3 + timedelta(minutes=15),
                heartbeat_timeout=TRAINING_HEARTBEAT,
                retry_policy=TRAINING_RETRY,
            )
        except ActivityError as err:
            raise LoopEnded(
                LoopStatus.FAILED, f"training failed: {activity_failure(err)}"
            ) from None
        self._record.training = training
        return training

    async def _train_in_slot(self, spec: ModelSpec, window: DataWindow) -> TrainingResult:
        """Train within the global limit of concurrent trainings, when one is set (the
        `training-slots` workflow runs): wait for a slot in priority order, give it back after
        training whatever happens."""
        async with self._slot.held(self._slot_changed):
            self._enter(LoopStage.TRAINING)
            return await self._train(spec, window)

    def _slot_changed(self, slot: SlotWait) -> None:
        self._record.training_slot = slot
        if slot.granted_at is None and self._stage is not LoopStage.WAITING_FOR_SLOT:
            self._enter(LoopStage.WAITING_FOR_SLOT)
        else:
            self._refresh_details()

    @workflow.signal(name=SLOT_GRANTED_SIGNAL)
    def training_slot_granted(self, *payload: Any) -> None:
        self._slot.granted(payload)

    def _improve(self) -> Metric | None:
        """The quality a performance trigger found degraded: the candidate must improve it
        significantly, offline (the gate) and live (the canary). None: not-worse suffices."""
        return improvement_metric(self._input.trigger)

    def _chargeback_tags(self) -> dict[str, str]:
        trigger = self._input.trigger
        return {
            "model": self._input.model,
            "loop-id": self._loop_id,
            "trigger": "+".join(kind.value for kind in trigger.kinds) or "none",
        }

    def _pipeline_parameters(self) -> dict[str, str]:
        trigger = self._input.trigger
        return {
            "trigger_type": "+".join(kind.value for kind in trigger.kinds) or "none",
            "trigger_reason": trigger.origin[:1000],
            "event_count": str(len(trigger.events)),
            "drift_severity": trigger.drift_severity.value if trigger.drift_severity else "none",
        }

    async def _champion(self, spec: ModelSpec) -> ModelVersion | None:
        champion: ModelVersion | None = await workflow.execute_activity(
            ActivityName.CHAMPION_VERSION,
            spec.name,
            result_type=ModelVersion | None,  # type: ignore[arg-type]
            start_to_close_timeout=QUICK,
            heartbeat_timeout=LIVENESS,
            retry_policy=QUICK_RETRY,
        )
        self._record.champion = champion
        return champion

    async def _register(
        self,
        spec: ModelSpec,
        window: DataWindow,
        training: TrainingResult,
        champion: ModelVersion | None,
    ) -> ModelVersion:
        trigger = self._input.trigger
        candidate: ModelVersion = await workflow.execute_activity(
            ActivityName.REGISTER_CANDIDATE,
            RegisterRequest(
                model=spec.name,
                loop_id=self._loop_id,
                artifact_path=training.artifact_path,
                artifact_sha256=training.artifact_sha256,
                lineage=Lineage(
                    loop_id=self._loop_id,
                    trigger_origin=trigger.origin,
                    trigger_kinds=[kind.value for kind in trigger.kinds],
                    trigger_event_ids=[event.event_id for event in trigger.events][:50],
                    dataset_hashes=_dataset_hashes(window),
                    training_metrics=training.metrics,
                    parent_champion=champion.version if champion else None,
                    spec_hash=spec.content_hash(),
                ),
            ),
            result_type=ModelVersion,
            start_to_close_timeout=timedelta(minutes=10),
            heartbeat_timeout=LIVENESS,
            retry_policy=QUICK_RETRY,
        )
        self._record.candidate = candidate
        return candidate

    async def _evaluate(
        self,
        spec: ModelSpec,
        window: DataWindow,
        golden: GoldenSet,
        candidate: ModelVersion,
        champion: ModelVersion | None,
    ) -> EvaluationReport:
        assert window.holdout_set is not None and window.baseline_eval_set is not None
        try:
            report: EvaluationReport = await workflow.execute_activity(
                ActivityName.EVALUATE_CANDIDATE,
                EvaluationRequest(
                    loop_id=self._loop_id,
                    spec=spec,
                    candidate=candidate,
                    champion=champion,
                    holdout=window.holdout_set,
                    baseline_eval=window.baseline_eval_set,
                    golden=golden,
                    seed=self._seed(),
                    recent=window.recent_set,
                    replay=window.replay_set,
                    extra_metrics=[metric] if (metric := self._improve()) is not None else [],
                ),
                result_type=EvaluationReport,
                start_to_close_timeout=timedelta(hours=1),
                heartbeat_timeout=LIVENESS,
                retry_policy=EVALUATION_RETRY,
            )
        except ActivityError as err:
            raise LoopEnded(
                LoopStatus.FAILED, f"evaluation failed: {activity_failure(err)}"
            ) from None
        self._record.evaluation = report
        return report

    async def _deploy(self, spec: ModelSpec, candidate: ModelVersion) -> Promotion:
        # all_at_once (SageMaker's all-at-once): the candidate becomes champion in one step.
        promotion: Promotion = await workflow.execute_activity(
            ActivityName.PROMOTE_CANDIDATE,
            PromoteRequest(model=spec.name, version=candidate.version, loop_id=self._loop_id),
            result_type=Promotion,
            start_to_close_timeout=QUICK,
            heartbeat_timeout=LIVENESS,
            retry_policy=QUICK_RETRY,
        )
        self._record.deployment = DeploymentRecord(
            mode=spec.loop.deployment.mode,
            promotion=promotion,
            verdict=f"version {promotion.champion} is champion",
        )
        return promotion

    async def _rebuild_reference_profile(self, spec: ModelSpec) -> None:
        """The drift monitor's reference becomes the new champion's training data now, not at
        its next check. The model is promoted whatever happens here: a failure is recorded and
        the next check builds the profile itself."""
        deployment = self._record.deployment
        assert deployment is not None
        try:
            profile: ProfileSummary = await workflow.execute_activity(
                ActivityName.BUILD_REFERENCE_PROFILE,
                spec.name,
                result_type=ProfileSummary,
                # Seconds of work (a model load and a pass over the training set), bounded.
                start_to_close_timeout=timedelta(minutes=10),
                heartbeat_timeout=LIVENESS,
                schedule_to_close_timeout=timedelta(minutes=30),
                retry_policy=QUICK_RETRY,
            )
        except ActivityError as err:
            deployment.reference_profile = f"not rebuilt: {activity_failure(err)}"
            return
        deployment.reference_profile = (
            f"{profile.key}: {profile.rows} rows of {profile.source} (champion v{profile.version})"
        )

    async def _staged_rollout(
        self, spec: ModelSpec, candidate: ModelVersion, champion: ModelVersion | None
    ) -> str:
        """The StagedRollout child: shadow/5/25/50/100% on live traffic, then promotion."""
        rollout_id = names.rollout_id(spec.name, self._input.loop_number)
        deployment = self._record.deployment = DeploymentRecord(
            mode="staged", rollout_id=rollout_id
        )
        self._refresh_details()
        try:
            result: RolloutResult = await workflow.execute_child_workflow(
                names.STAGED_ROLLOUT_WORKFLOW,
                RolloutInput(
                    model=spec.name,
                    loop_id=self._loop_id,
                    rollout_number=self._input.loop_number,
                    candidate_version=candidate.version,
                    champion_version=champion.version if champion else None,
                    policy=spec.loop.deployment,
                    capture_dir=spec.data.capture_location,
                    improvement=canary_improvement(self._improve(), champion is not None),
                    mirror_champion=backend_info(spec.backend).shadow_deployments,
                ),
                id=rollout_id,
                static_summary=f"{spec.name}: rollout of version {candidate.version}",
                static_details=STATIC_DETAILS,
                result_type=RolloutResult,
                search_attributes=TypedSearchAttributes(
                    [SearchAttributePair(names.MODEL_NAME, spec.name)]
                ),
                # A loop that is cancelled or terminated asks its rollout to put the champion
                # back rather than leaving the split half-way.
                parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
            )
        except ChildWorkflowError as err:
            if is_cancelled_exception(err):
                # The loop's cancellation reached the rollout, which put the champion back;
                # record it as the loop's own cancellation.
                raise asyncio.CancelledError(f"rollout {rollout_id} was cancelled") from err
            raise LoopEnded(
                LoopStatus.FAILED, f"rollout {rollout_id} failed: {err.cause or err}"
            ) from None
        deployment.rollout = result
        deployment.verdict = result.summary
        if result.status is RolloutStatus.PROMOTED:
            return f"version {candidate.version} promoted to champion: {result.summary}"
        status = (
            LoopStatus.ROLLED_BACK
            if result.status is RolloutStatus.ROLLED_BACK
            else LoopStatus.FAILED
        )
        raise LoopEnded(status, result.summary)

    # ---- approval gate -----------------------------------------------------------------

    async def _approval_gate(self, spec: ModelSpec, reasons: list[str]) -> None:
        policy = spec.loop.approval
        approval = self._record.approval
        approval.required = True
        approval.reasons = reasons
        approval.requested_at = requested_at = workflow.now()
        self._awaiting_approval = True
        self._enter(LoopStage.AWAITING_APPROVAL)
        self._count(metrics.APPROVALS_REQUESTED)
        await self._notify(
            "warning",
            "approval needed",
            "Why: " + "; ".join(reasons) + "\n\n" + self._details(),
            awaiting_review=True,
        )
        while approval.review is None:
            event = next_approval_event(
                policy, requested_at, approval.reminders_sent, approval.escalated_at is not None
            )
            if event is None:  # keep waiting, with nothing more to remind
                await workflow.wait_condition(lambda: approval.review is not None)
                break
            if event.at > workflow.now():
                try:
                    await workflow.wait_condition(
                        lambda: approval.review is not None, timeout=event.at - workflow.now()
                    )
                    break
                except TimeoutError:
                    pass
            waited = workflow.now() - requested_at
            if event.kind is ApprovalEventKind.REMINDER:
                approval.reminders_sent += 1
                await self._notify(
                    "warning",
                    f"reminder {approval.reminders_sent}: approval still needed",
                    f"Waiting for {_hours(waited)}.\n\n" + self._details(),
                    awaiting_review=True,
                )
            elif event.kind is ApprovalEventKind.ESCALATION:
                approval.escalated_at = workflow.now()
                await self._notify(
                    "critical",
                    "escalation: approval overdue",
                    f"No decision after {_hours(waited)}.\n\n" + self._details(),
                    channel="escalation",
                    awaiting_review=True,
                )
            else:
                approval.timed_out_at = workflow.now()
                self._awaiting_approval = False
                self._count(metrics.APPROVALS_RESOLVED, outcome="timed_out")
                raise LoopEnded(
                    LoopStatus.REJECTED_BY_REVIEWER,
                    f"no approval within {_hours(policy.timeout)}: rejected by the policy "
                    "(approval.on_timeout = reject)",
                )
        self._awaiting_approval = False
        review = approval.review
        if review is not None:
            outcome = "approved" if review.decision == "approve" else "rejected"
            self._count(metrics.APPROVALS_RESOLVED, outcome=outcome)
        if review is not None and review.decision == "reject":
            comment = f": {review.comment}" if review.comment else ""
            raise LoopEnded(
                LoopStatus.REJECTED_BY_REVIEWER, f"rejected by {review.reviewer}{comment}"
            )

    def _review_refusal(self, review: ReviewDecision) -> str | None:
        policy = self._spec.loop.approval if self._spec else None
        if policy is None:
            return "this loop is not awaiting approval"
        decided = self._record.approval.review is not None
        return review_refusal(policy, self._awaiting_approval, decided, review)

    def _accept_review(
        self, verb: ReviewVerb, review: ReviewDecision, via: Literal["signal", "update"]
    ) -> ReviewRecord:
        record = ReviewRecord(
            decision=verb,
            reviewer=review.reviewer.strip(),
            comment=review.comment,
            at=workflow.now(),
            via=via,
            origin=review.origin,
        )
        self._record.approval.review = record
        self._refresh_details()
        return record

    def _review_signal(self, verb: ReviewVerb, payload: tuple[Any, ...]) -> None:
        reviewer = None
        try:
            review = one_message(payload, ReviewDecision, verb)
            reviewer = review.reviewer
            refusal = self._review_refusal(review)
        except ValueError as err:
            refusal = f"malformed {err}"
        if refusal is None:
            self._accept_review(verb, review, "signal")
            return
        workflow.logger.warning("ignored %s signal: %s", verb, refusal)
        self._record.approval.ignored.append(
            IgnoredReview(
                decision=verb, reviewer=reviewer, at=workflow.now(), reason=refusal[:2000]
            )
        )
        del self._record.approval.ignored[:-50]
        self._refresh_details()

    # Signals are untyped so that a malformed payload is recorded, not dropped by the SDK.
    @workflow.signal(name="approve")
    def approve_signal(self, *payload: Any) -> None:
        self._review_signal("approve", payload)

    @workflow.signal(name="reject")
    def reject_signal(self, *payload: Any) -> None:
        self._review_signal("reject", payload)

    # Updates are untyped too: the validator explains a wrong payload in the Web UI ("unknown
    # field 'reason'; expected {reviewer, comment}") instead of "Failed decoding arguments".
    @workflow.update(name="approve")
    def approve(self, *payload: Any) -> ReviewRecord:
        return self._accept_review(
            "approve", one_message(payload, ReviewDecision, "approve"), "update"
        )

    @approve.validator
    def _validate_approve(self, *payload: Any) -> None:
        self._validate_review(one_message(payload, ReviewDecision, "approve"))

    @workflow.update(name="reject")
    def reject(self, *payload: Any) -> ReviewRecord:
        return self._accept_review(
            "reject", one_message(payload, ReviewDecision, "reject"), "update"
        )

    @reject.validator
    def _validate_reject(self, *payload: Any) -> None:
        self._validate_review(one_message(payload, ReviewDecision, "reject"))

    def _validate_review(self, review: ReviewDecision) -> None:
        if (refusal := self._review_refusal(review)) is not None:
            raise ValueError(refusal)

    @workflow.query
    def status(self) -> LoopView:
        return LoopView(
            stage=self._stage, awaiting_approval=self._awaiting_approval, record=self._record
        )

    # ---- bookkeeping -------------------------------------------------------------------

    def _enter(self, stage: LoopStage) -> None:
        self._stage = stage
        self._record.stages.append(StageEntry(stage=stage, at=workflow.now()))
        workflow.upsert_search_attributes([names.LOOP_STAGE.value_set(stage.value)])
        self._refresh_details()

    def _count(self, metric: metrics.Metric, **labels: str) -> None:
        metrics.count(workflow.metric_meter(), metric, {"model": self._input.model, **labels})

    def _details(self) -> str:
        return render_loop_details(self.status())

    def _refresh_details(self) -> None:
        workflow.set_current_details(self._details())

    def _seed(self) -> int:
        # Stable per loop: retried or replayed activities draw the same samples.
        return int.from_bytes(hashlib.sha256(self._loop_id.encode()).digest()[:4], "big")

    async def _notify(
        self,
        level: Literal["info", "warning", "critical"],
        subject: str,
        body: str,
        channel: Literal["primary", "escalation"] = "primary",
        awaiting_review: bool = False,
    ) -> None:
        key = f"{self._loop_id}-{len(self._record.notifications) + 1}"
        notification = Notification(
            audience="reviewers",
            key=key,
            model=self._input.model,
            loop_id=self._loop_id,
            level=level,
            subject=f"{self._input.model}: {subject} ({self._loop_id})",
            body=body,
            channel=channel,
            awaiting_review=awaiting_review,
        )
        self._record.notifications.append(key)
        await notify(notification)

    async def _mark_rejected(
        self, candidate: ModelVersion, status: LoopStatus, summary: str
    ) -> str:
        """The registry records our decision (SageMaker: ModelApprovalStatus Rejected); the
        loop's outcome stands whatever happens here, with the failure noted."""
        try:
            await workflow.execute_activity(
                ActivityName.REJECT_CANDIDATE,
                RejectRequest(
                    model=candidate.model,
                    version=candidate.version,
                    loop_id=self._loop_id,
                    reason=f"{status.value}: {summary}"[:4000],
                ),
                result_type=ModelVersion,
                start_to_close_timeout=QUICK,
                heartbeat_timeout=LIVENESS,
                retry_policy=QUICK_RETRY,
            )
        except ActivityError as err:
            return f"{summary} (registry not updated: {activity_failure(err)})"
        return summary

    async def _finish(self, status: LoopStatus, summary: str) -> LoopResult:
        self._awaiting_approval = False
        candidate = self._record.candidate
        # Added with the cloud backends: loops already running do not know the step.
        if status in _NOT_PROMOTED and candidate is not None and workflow.patched(REJECTION_PATCH):
            summary = await self._mark_rejected(candidate, status, summary)
        window = self._record.data_window
        fresh = (
            candidate_loss(self._record.evaluation, self._spec.task)
            if status is LoopStatus.PROMOTED and self._spec is not None
            else None
        )
        result = LoopResult(
            loop_id=self._loop_id,
            status=status,
            summary=summary[:4000],
            actual_cost=self._record.training.cost if self._record.training else None,
            finished_at=workflow.now(),
            retrieval_query=window.query if window else "",
            dataset_hashes=_dataset_hashes(window) if window else {},
            candidate_version=self._record.candidate.version if self._record.candidate else None,
            candidate_loss=fresh[0] if fresh else None,
            candidate_loss_rows=fresh[1] if fresh else None,
        )
        self._record.outcome = result
        if workflow.patched(OUTCOME_PATCH):
            workflow.upsert_search_attributes([names.RETRAIN_OUTCOME.value_set(status.value)])
        self._enter(LoopStage.DONE)
        audit_uri: str = await workflow.execute_activity(
            ActivityName.WRITE_AUDIT_RECORD,
            self._record,
            result_type=str,
            start_to_close_timeout=QUICK,
            heartbeat_timeout=LIVENESS,
            retry_policy=QUICK_RETRY,
        )
        result = result.model_copy(update={"audit_uri": audit_uri})
        self._record.outcome = result
        self._refresh_details()
        return result


def _dataset_hashes(window: DataWindow) -> dict[str, str]:
    hashes = {f.uri: f.sha256 for f in window.files}
    names = ("training_set", "holdout_set", "baseline_eval_set", "baseline", "recent_set")
    for name in (*names, "replay_set"):
        dataset = getattr(window, name)
        if dataset is not None:
            hashes[dataset.uri] = dataset.sha256
    return hashes


def _error_type(err: ActivityError) -> str | None:
    cause = err.cause
    return cause.type if isinstance(cause, ApplicationError) else None


def _hours(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:g}h" if hours >= 1 else f"{delta.total_seconds() / 60:g}m"
