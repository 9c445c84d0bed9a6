"""The coordinator's decision rules, as plain deterministic code (no Temporal import).

`CoordinatorRules` owns a `CoordinatorState` and turns what happens to a model (a trigger
arrives, a timer comes due, a loop ends, the policy changes) into recorded decisions plus the
effects the workflow must carry out (start a loop, send notifications). The rules, in order:

1. paused -> suppress                  2. duplicate event id -> ignore
3. data_arrived -> buffer into the batch; the batch fires at batch_size events, or when its
   debounce window / max wait expires (with MAX_PENDING_EVENTS already waiting for a loop,
   new data is refused: suppress / backlog_full, not remembered, so the sender can retry)
4. drift and performance severity: low -> ignore (logged); medium -> retrain if auto_retrain;
   high -> retrain with approval + notify; critical -> escalate: no automatic retrain until a
   human's manual trigger; alarms that are not firing -> ignore; data-quality alarms -> ignore
   + notify (retraining on broken data would learn garbage). A change point a performance or
   drift trigger carries becomes the regime start of every later loop.
5. cooldown since the last start (drift of priority <= 2 bypasses) -> defer until it ends
6. daily training limit (priority <= 2 passes)   7. daily budget (priority 1 passes)
8. a loop running or awaiting approval -> coalesce into one follow-up
9. otherwise -> start a loop

Adaptive mode (`policy.mode = "adaptive"`): every window of labelled traffic the performance
monitor measures (`on_observation`), and every automatic trigger that reaches rule 5 (not a
human's, not a business alarm), is decided by the cost-aware policy (`adaptive.py`): retrain
only when keeping the model is expected to cost more than retraining it (`adaptive_keep`
otherwise); what it decides still meets rules 1, 2 and 5-9, and critical degradations still
ask a human.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from workflows.common.models import earlier, format_duration
from workflows.common.names import retraining_loop_id
from workflows.common.notify import Level, Notification
from workflows.coordinator.adaptive import AdaptiveConfig, AdaptivePolicy, AdaptiveState
from workflows.coordinator.models import (
    DECISIONS_KEPT,
    DECISIONS_UNARCHIVED,
    EVENT_IDS_PER_LOGGED_DECISION,
    MAX_PENDING_EVENTS,
    OUTCOMES_KEPT,
    Action,
    ActiveLoop,
    BatchView,
    CoordinatorState,
    CoordinatorStatus,
    Decision,
    LoopOutcome,
    LoopStart,
    Number,
    PendingBatch,
    PendingView,
    Reason,
    RetrainRequest,
    ReviewRequest,
    cooldown_until,
)
from workflows.coordinator.policy import TriggerPolicy
from workflows.coordinator.triggers import (
    AlarmCategory,
    AlarmState,
    PerformanceObservation,
    Severity,
    TriggerEvent,
    TriggerKind,
    severity_from_score,
)
from workflows.loop.models import AdaptiveRecord, EventRef, LoopResult, LoopStatus

# Metadata carried with each accepted event (into the loop and its audit record); larger
# metadata is summarised (its size and keys), so a thousand waiting events stay small.
CARRIED_METADATA_BYTES = 512
# Features named in a notification; the rest are counted and the decision has them all.
FEATURES_IN_NOTIFICATIONS = 10
COOLDOWN_BYPASS_PRIORITY = 2  # drift at this priority or more urgent skips the cooldown
DAILY_LIMIT_BYPASS_PRIORITY = 2
BUDGET_BYPASS_PRIORITY = 1


@dataclass
class Step:
    """What one call to the rules produced."""

    decisions: list[Decision] = field(default_factory=list)
    start: LoopStart | None = None
    notifications: list[Notification] = field(default_factory=list)

    def extend(self, other: Step) -> None:
        self.decisions.extend(other.decisions)
        self.notifications.extend(other.notifications)
        if other.start is not None:
            assert self.start is None, "the rules start at most one loop at a time"
            self.start = other.start

    @property
    def decision(self) -> Decision:
        """The decision that answers the triggering event (the last one recorded for it)."""
        return self.decisions[-1]


class CoordinatorRules:
    def __init__(self, state: CoordinatorState) -> None:
        self.state = state

    @property
    def policy(self) -> TriggerPolicy:
        return self.state.policy

    # ---------------------------------------------------------------- inputs

    def on_trigger(self, event: TriggerEvent, now: datetime) -> Step:
        state = self.state
        state.events_received += 1
        self._roll_day(now)
        event_id = event.event_id or self._auto_event_id()
        # model_construct: built from already-validated values, once per event (hot path).
        ref = EventRef.model_construct(
            event_id=event_id,
            kind=event.kind,
            priority=event.priority,
            source=event.source,
            received_at=now,
            occurred_at=event.occurred_at,
            metadata=carried_metadata(event.metadata),
            summary=event_summary(event),
        )
        if state.paused:
            return self._decide(
                now,
                Action.SUPPRESS,
                Reason.PAUSED,
                [ref],
                f"coordinator is paused: {state.paused_reason or 'no reason given'}",
            )
        first_seen = state.seen_events.get(event_id)
        if first_seen is not None and first_seen >= earlier(now, self.policy.dedup_window):
            return self._decide(
                now,
                Action.IGNORE,
                Reason.DUPLICATE_EVENT,
                [ref],
                f"event {event_id} was already accepted",
                numbers={"first_seen_at": first_seen.isoformat()},
            )
        if event.kind is TriggerKind.DATA_ARRIVED and self._pending_events() >= MAX_PENDING_EVENTS:
            return self._decide(
                now,
                Action.SUPPRESS,
                Reason.BACKLOG_FULL,
                [ref],
                f"{MAX_PENDING_EVENTS} events already wait for a loop; retry later",
                numbers={"pending_events": self._pending_events()},
            )
        self._remember(event_id, now)
        state.events_accepted += 1

        if event.kind is TriggerKind.DATA_ARRIVED:
            return self._buffer(event, ref, now)
        if event.kind is TriggerKind.DRIFT:
            return self._route_drift(event, ref, now)
        if event.kind is TriggerKind.PERFORMANCE:
            return self._route_performance(event, ref, now)
        if event.kind is TriggerKind.ALARM:
            assert event.alarm is not None
            if event.alarm.state is not AlarmState.ALARM:
                return self._decide(
                    now,
                    Action.IGNORE,
                    Reason.ALARM_NOT_FIRING,
                    [ref],
                    f"alarm {event.alarm.name} is {event.alarm.state.value}",
                )
            if event.alarm.category is AlarmCategory.DATA_QUALITY:
                return self._data_quality(event, ref, now)
            request = RetrainRequest(
                events=[ref], priority=event.priority, alarms=[event.alarm.name]
            )
            return self._evaluate(request, now, origin="direct")
        if event.kind is TriggerKind.MANUAL:
            return self._manual(ref, now)
        request = RetrainRequest(events=[ref], priority=event.priority)
        return self._evaluate(request, now, origin="direct")

    def on_invalid_trigger(self, raw: Any, error: str, now: datetime) -> Step:
        """A signal that failed validation: record it, change nothing else."""
        self.state.events_received += 1
        claimed_id = raw.get("event_id") if isinstance(raw, dict) else None
        event_id = claimed_id if isinstance(claimed_id, str) and claimed_id else "(invalid)"
        return self._decide(
            now,
            Action.IGNORE,
            Reason.INVALID_TRIGGER,
            [],
            "trigger rejected",
            event_ids=[event_id[:200]],
            error=error[:2000],
        )

    def on_timer(self, now: datetime) -> Step:
        """Fire whatever is due: a batch whose window or max wait expired, a deferral's end."""
        step = Step()
        if self.state.paused:
            return step
        self._roll_day(now)
        batch = self.state.batch
        if batch is not None:
            if len(batch.events) >= self.policy.batch_size:
                step.extend(self._fire_batch(now, origin="batch_full"))
            elif now >= batch.fires_at(self.policy):
                waited = now - batch.opened_at >= self.policy.max_wait
                step.extend(self._fire_batch(now, "batch_max_wait" if waited else "batch_window"))
        until = self.state.deferred_until
        if self.state.deferred is not None and (until is None or now >= until):
            request, self.state.deferred, self.state.deferred_until = (
                self.state.deferred,
                None,
                None,
            )
            step.extend(self._evaluate(request, now, origin="deferred"))
        if self.state.follow_up is not None and self.state.active_loop is None:
            request, self.state.follow_up = self.state.follow_up, None
            step.extend(self._evaluate(request, now, origin="follow_up"))
        return step

    def on_loop_closed(self, result: LoopResult, now: datetime) -> Step:
        """Record how a loop ended; then the follow-up (if any) gets its turn."""
        active = self.state.active_loop
        if active is None or active.loop_id != result.loop_id:
            return Step()  # not the active loop (a stale or repeated report): nothing to do
        self._roll_day(now)
        if result.actual_cost is not None and self.state.day == active.day:
            self.state.spent_today = max(
                0.0, self.state.spent_today - active.estimated_cost + result.actual_cost
            )
        self.state.outcomes.append(
            LoopOutcome(
                loop_id=active.loop_id,
                status=result.status,
                summary=result.summary,
                started_at=active.started_at,
                closed_at=now,
                estimated_cost=active.estimated_cost,
                actual_cost=result.actual_cost,
            )
        )
        del self.state.outcomes[:-OUTCOMES_KEPT]
        self.state.active_loop = None
        if result.actual_cost is not None:
            self.state.last_training_cost = result.actual_cost
        adaptive = self._adaptive_policy()
        if (
            adaptive is not None
            and result.status is LoopStatus.PROMOTED
            and result.candidate_version is not None
        ):
            # A new model serves: the policy starts a new cycle, with the candidate's own loss
            # on the newest data as what a fresh model achieves.
            adaptive.retrained(
                version=result.candidate_version,
                holdout_loss=result.candidate_loss if result.candidate_loss_rows else None,
                holdout_count=result.candidate_loss_rows or None,
            )
        return self.on_timer(now)

    def on_observation(self, observation: PerformanceObservation, now: datetime) -> Step:
        """The monitor measured the champion on a window of labelled traffic. Rules mode: its
        degradation trigger (if any) is routed as usual. Adaptive mode: the policy learns the
        window's loss and decides whether retraining pays, within the same hard limits; the
        degradation trigger brings its change point (the regime start) and, when critical, a
        human review as always."""
        state = self.state
        state.last_observation = observation.model_copy(update={"event": None})
        adaptive = self._adaptive_policy()
        if self.policy.mode != "adaptive" or adaptive is None:
            if adaptive is not None:
                self._observe(adaptive, observation)
            if observation.event is None:
                return Step()
            return self.on_trigger(observation.event, now)
        state.events_received += 1
        self._roll_day(now)
        event = observation.event
        event_id = (event.event_id if event is not None else None) or f"obs-{observation.check_id}"
        ref = EventRef.model_construct(
            event_id=event_id,
            kind=TriggerKind.PERFORMANCE,
            priority=event.priority if event is not None else 3,
            source=event.source if event is not None else "performance-monitor",
            received_at=now,
        )
        numbers: dict[str, Number] = {
            "check_id": observation.check_id,
            "observed_version": observation.version,
            "observed_loss": round(observation.loss_sum / observation.count, 6)
            if observation.count
            else None,
            "labelled": observation.count,
            "served": observation.volume,
        }
        first_seen = state.seen_events.get(event_id)
        if first_seen is not None and first_seen >= now - self.policy.dedup_window:
            return self._decide(
                now,
                Action.IGNORE,
                Reason.DUPLICATE_EVENT,
                [ref],
                f"observation {event_id} was already taken into account",
                numbers={"first_seen_at": first_seen.isoformat()},
            )
        self._remember(event_id, now)
        state.events_accepted += 1
        if not self._observe(adaptive, observation):
            return self._decide(
                now,
                Action.IGNORE,
                Reason.STALE_OBSERVATION,
                [ref],
                f"v{observation.version} no longer serves (v{adaptive.state.version} does): "
                "its observation is not the serving model's",
                numbers=numbers,
            )
        signal = event.performance if event is not None else None
        if signal is not None and signal.severity is not Severity.LOW:
            self._note_regime_change(signal.change_at)
        if signal is not None and signal.severity is Severity.CRITICAL:
            assert event is not None
            # A critical degradation asks a human whatever the costs say.
            return self._route_performance(event, ref, now)
        decision = adaptive.decide(retraining_cost=state.last_training_cost)
        record = AdaptiveRecord(reason=decision.reason, numbers=decision.numbers())
        numbers = {**numbers, **record.numbers}
        if state.paused:
            step = self._decide(
                now,
                Action.SUPPRESS,
                Reason.PAUSED,
                [ref],
                f"coordinator is paused ({state.paused_reason or 'no reason given'}); "
                f"the adaptive policy said: {decision.reason}",
                numbers=numbers,
            )
            state.last_adaptive = step.decision
            return step
        if not decision.retrain:
            step = self._decide(
                now, Action.IGNORE, Reason.ADAPTIVE_KEEP, [ref], decision.reason, numbers=numbers
            )
            state.last_adaptive = step.decision
            return step
        request = RetrainRequest(
            events=[ref],
            priority=ref.priority,
            performance=signal,
            adaptive=record,
            bypass_cooldown=ref.priority <= COOLDOWN_BYPASS_PRIORITY,
        )
        if signal is not None and signal.severity is Severity.HIGH:
            request.requires_approval = True
            request.approval_reasons.append(
                f"high performance degradation ({signal.metric} {signal.current:.4g} vs "
                f"reference {signal.reference:.4g})"
            )
        step = self._evaluate(request, now, origin="adaptive", context=numbers)
        state.last_adaptive = step.decision
        return step

    def _adaptive_policy(self) -> AdaptivePolicy | None:
        """The pure cost-aware policy over the coordinator's carried state (None without the
        policy's adaptive settings)."""
        settings = self.policy.adaptive
        if settings is None:
            return None
        if self.state.adaptive is None:
            self.state.adaptive = AdaptiveState()
        return AdaptivePolicy(adaptive_config(self.policy), self.state.adaptive)

    def _observe(self, adaptive: AdaptivePolicy, observation: PerformanceObservation) -> bool:
        """Feed the window to the policy; False when it measured a version that no longer
        serves (a check in flight while a new model was promoted)."""
        known = {level.version for level in adaptive.state.fresh}
        version = observation.version
        if version is not None and version != adaptive.state.version:
            if version in known:
                return False
            # A champion the coordinator did not see promoted (the first observation, or a
            # promotion outside its loops): a new cycle without a holdout estimate.
            adaptive.retrained(version=version)
        loss_sq = observation.loss_sq_sum
        if loss_sq is None and observation.loss != "zero_one" and observation.count:
            loss_sq = None  # bounded by loss_bound instead (0/1 losses need no squares)
        adaptive.observe(
            loss_sum=observation.loss_sum,
            count=observation.count,
            volume=float(max(observation.volume, observation.count)),
            loss_sq_sum=loss_sq,
        )
        return True

    def on_loop_id_taken(self, start: LoopStart) -> LoopStart:
        """The loop id is held by an older execution: take the next number for the same loop."""
        active = self.state.active_loop
        assert active is not None and active.loop_id == start.loop_id
        self.state.loops_started += 1
        number = self.state.loops_started
        loop_id = retraining_loop_id(self.state.model, number)
        self.state.active_loop = active.model_copy(update={"number": number, "loop_id": loop_id})
        return LoopStart(
            loop_id=loop_id,
            number=number,
            trigger=start.trigger,
            estimated_cost=start.estimated_cost,
        )

    def set_paused(self, paused: bool, reason: str, now: datetime) -> Step:
        self.state.paused = paused
        self.state.paused_reason = (reason or None) if paused else None
        return Step() if paused else self.on_timer(now)

    def set_policy(self, policy: TriggerPolicy, now: datetime) -> Step:
        self.state.policy = policy
        self.state.policy_version += 1
        # A shorter cooldown or smaller batch may make pending work due right now.
        if self.state.deferred is not None:
            self.state.deferred_until = cooldown_until(self.state) or now
        return self.on_timer(now)

    def next_wakeup(self) -> datetime | None:
        """When on_timer has something to do next (None: only a message can change things)."""
        if self.state.paused:
            return None
        times = []
        if self.state.batch is not None:
            times.append(self.state.batch.fires_at(self.policy))
        if self.state.deferred_until is not None:
            times.append(self.state.deferred_until)
        return min(times) if times else None

    # ---------------------------------------------------------------- views

    def status(self, now: datetime) -> CoordinatorStatus:
        state, policy = self.state, self.policy
        same_day = state.day == policy.local_day(now)
        trainings = state.trainings_today if same_day else 0
        spent = state.spent_today if same_day else 0.0
        until = cooldown_until(state)
        batch = state.batch
        return CoordinatorStatus(
            model=state.model,
            paused=state.paused,
            paused_reason=state.paused_reason,
            policy_version=state.policy_version,
            policy=policy,
            day=policy.local_day(now),
            trainings_today=trainings,
            spent_today=round(spent, 6),
            budget_left=round(max(0.0, policy.daily_budget - spent), 6),
            cooldown_until=until if until and until > now else None,
            batch=None
            if batch is None
            else BatchView(
                events=len(batch.events),
                uris=len(batch.data),
                rows=sum(d.rows or 0 for d in batch.data),
                opened_at=batch.opened_at,
                fires_at=batch.fires_at(policy),
            ),
            deferred=_pending_view(state.deferred, state.deferred_until),
            follow_up=_pending_view(state.follow_up, None),
            active_loop=state.active_loop.loop_id if state.active_loop else None,
            active_loop_started_at=state.active_loop.started_at if state.active_loop else None,
            review_pending=state.review is not None,
            loops_started=state.loops_started,
            events_received=state.events_received,
            events_accepted=state.events_accepted,
            last_outcome=state.outcomes[-1] if state.outcomes else None,
            recent_decisions=state.decisions[-5:],
            mode=policy.mode,
            last_adaptive=state.last_adaptive,
            last_observation=state.last_observation,
        )

    # ---------------------------------------------------------------- rules

    def _buffer(self, event: TriggerEvent, ref: EventRef, now: datetime) -> Step:
        assert event.data is not None
        batch = self.state.batch
        if batch is None:
            batch = self.state.batch = PendingBatch(opened_at=now, last_event_at=now)
        batch.add(ref, event.data, now)
        if len(batch.events) >= self.policy.batch_size:
            return self._fire_batch(now, origin="batch_full")
        return self._decide(
            now,
            Action.BUFFER,
            Reason.BATCH_BUFFERED,
            [ref],
            f"batched {len(batch.events)}/{self.policy.batch_size} data events",
            numbers={
                "batch_events": len(batch.events),
                "batch_size": self.policy.batch_size,
                "fires_at": batch.fires_at(self.policy).isoformat(),
            },
        )

    def _fire_batch(self, now: datetime, origin: str) -> Step:
        batch = self.state.batch
        assert batch is not None
        self.state.batch = None
        request = RetrainRequest(
            events=batch.events,
            priority=min(e.priority for e in batch.events),
            data=batch.data,
        )
        return self._evaluate(request, now, origin=origin)

    def _manual(self, ref: EventRef, now: datetime) -> Step:
        request = RetrainRequest(events=[ref], priority=ref.priority, from_human=True)
        review = self.state.review
        if review is None:
            return self._evaluate(request, now, origin="direct")
        request.requires_approval = True
        request.approval_reasons.append(
            f"manual override of critical drift review ({review.event_id})"
        )
        step = self._evaluate(request, now, origin="direct")
        # The human's go-ahead lifts the block only if their retraining goes ahead; if limits
        # suppress it, automation stays blocked and the next manual trigger decides again.
        if step.decision.action in (Action.START, Action.DEFER):
            self.state.review = None
        return step

    def _data_quality(self, event: TriggerEvent, ref: EventRef, now: datetime) -> Step:
        alarm = event.alarm
        assert alarm is not None
        step = self._decide(
            now,
            Action.IGNORE,
            Reason.DATA_QUALITY,
            [ref],
            f"data-quality alarm {alarm.name}: no retraining on broken data",
        )
        step.notifications.append(
            self._notification(
                step.decision,
                "warning",
                f"[{self.state.model}] data quality: {alarm.name}",
                f"{alarm.reason or 'no details'}\nNo retraining was started: fix the data "
                "(or the model spec) first.",
            )
        )
        return step

    def _route_drift(self, event: TriggerEvent, ref: EventRef, now: datetime) -> Step:
        drift = event.drift
        assert drift is not None
        derived = (
            severity_from_score(drift.score, self.policy.severity_cut_points)
            if drift.score is not None
            else None
        )
        severity = drift.severity or derived
        assert severity is not None
        numbers: dict[str, Number] = {
            "score": drift.score,
            "severity": severity.value,
            "severity_from_score": derived.value if derived else None,
            "drifted_features": len(drift.features),
        }
        if severity is Severity.LOW:
            return self._decide(
                now,
                Action.IGNORE,
                Reason.DRIFT_LOW,
                [ref],
                "low drift: logged, no retraining",
                numbers=numbers,
            )
        if severity is Severity.CRITICAL:
            self.state.review = ReviewRequest(
                requested_at=now,
                event_id=ref.event_id,
                severity=severity,
                score=drift.score,
                features=drift.features[:50],
            )
            step = self._decide(
                now,
                Action.ESCALATE,
                Reason.DRIFT_CRITICAL,
                [ref],
                "critical drift: automation blocked, human review requested",
                numbers=numbers,
            )
            step.notifications.append(
                self._notification(
                    step.decision,
                    "critical",
                    f"[{self.state.model}] critical drift: human review needed",
                    f"Drift score {drift.score} ({severity.value}) on "
                    f"{features_text(drift.features)} at "
                    f"{drift.endpoint or 'unknown endpoint'}. Automatic retraining is blocked; "
                    f"send a manual trigger to retrain (it will require approval) once reviewed.",
                )
            )
            return step
        if severity is Severity.MEDIUM and not self.policy.auto_retrain:
            return self._decide(
                now,
                Action.SUPPRESS,
                Reason.AUTO_RETRAIN_OFF,
                [ref],
                "medium drift but auto_retrain is off",
                numbers=numbers,
            )
        self._note_regime_change(drift.change_at)
        request = RetrainRequest(
            events=[ref],
            priority=event.priority,
            drift=drift,
            drift_severity=severity,
            bypass_cooldown=event.priority <= COOLDOWN_BYPASS_PRIORITY,
        )
        if severity is Severity.HIGH:
            request.requires_approval = True
            request.approval_reasons.append(f"high drift (score {drift.score})")
        step = self._evaluate(request, now, origin="direct", context=numbers)
        if severity is Severity.HIGH and step.decision.action in (Action.START, Action.DEFER):
            step.notifications.append(
                self._notification(
                    step.decision,
                    "warning",
                    f"[{self.state.model}] high drift: retraining needs approval",
                    f"Drift score {drift.score} on {features_text(drift.features)}. "
                    f"Decision: {step.decision.action.value} ({step.decision.message}). "
                    "The candidate will wait for an approval before rollout.",
                )
            )
        return step

    def _route_performance(self, event: TriggerEvent, ref: EventRef, now: datetime) -> Step:
        """Degraded quality on labelled traffic, routed by its severity like drift (low: logged;
        medium: retrain if auto_retrain; high: retrain with approval; critical: human review).
        A change point it carries becomes the regime start of every loop from now on."""
        signal = event.performance
        assert signal is not None
        severity = signal.severity
        numbers: dict[str, Number] = {
            "metric": signal.metric,
            "reference": signal.reference,
            "current": signal.current,
            "ci_low": signal.ci_low,
            "ci_high": signal.ci_high,
            "confidence": signal.confidence,
            "rows": signal.rows,
            "severity": severity.value,
            "degradation": signal.score,
            "basis": signal.basis.value,
            "version": signal.version,
            "change_at": signal.change_at.isoformat() if signal.change_at else None,
            "mean_loss_before": signal.mean_loss_before,
            "mean_loss_after": signal.mean_loss_after,
            "estimated_accuracy": signal.estimated_accuracy,
        }
        what = f"{signal.metric} {signal.current:.4g} vs reference {signal.reference:.4g}" + (
            f" on {signal.rows} labelled rows" if signal.rows else ""
        )
        if severity is Severity.LOW:
            return self._decide(
                now,
                Action.IGNORE,
                Reason.PERFORMANCE_LOW,
                [ref],
                f"low performance degradation ({what}): logged, no retraining",
                numbers=numbers,
            )
        self._note_regime_change(signal.change_at)
        if severity is Severity.CRITICAL:
            self.state.review = ReviewRequest(
                requested_at=now,
                event_id=ref.event_id,
                severity=severity,
                score=signal.score,
                features=[signal.metric],
            )
            step = self._decide(
                now,
                Action.ESCALATE,
                Reason.PERFORMANCE_CRITICAL,
                [ref],
                f"critical performance degradation ({what}): automation blocked, human review "
                "requested",
                numbers=numbers,
            )
            step.notifications.append(
                self._notification(
                    step.decision,
                    "critical",
                    f"[{self.state.model}] critical performance degradation: human review needed",
                    f"{signal.summary or what}. Automatic retraining is blocked; send a manual "
                    "trigger to retrain (it will require approval) once reviewed.",
                )
            )
            return step
        if severity is Severity.MEDIUM and not self.policy.auto_retrain:
            return self._decide(
                now,
                Action.SUPPRESS,
                Reason.AUTO_RETRAIN_OFF,
                [ref],
                f"medium performance degradation ({what}) but auto_retrain is off",
                numbers=numbers,
            )
        request = RetrainRequest(
            events=[ref],
            priority=event.priority,
            performance=signal,
            bypass_cooldown=event.priority <= COOLDOWN_BYPASS_PRIORITY,
        )
        if severity is Severity.HIGH:
            request.requires_approval = True
            request.approval_reasons.append(f"high performance degradation ({what})")
        step = self._evaluate(request, now, origin="direct", context=numbers)
        if severity is Severity.HIGH and step.decision.action in (Action.START, Action.DEFER):
            step.notifications.append(
                self._notification(
                    step.decision,
                    "warning",
                    f"[{self.state.model}] high performance degradation: retraining needs approval",
                    f"{signal.summary or what}. Decision: {step.decision.action.value} "
                    f"({step.decision.message}). The candidate will wait for an approval "
                    "before rollout.",
                )
            )
        return step

    def _note_regime_change(self, change_at: datetime | None) -> None:
        if change_at is not None and (
            self.state.regime_start is None or change_at > self.state.regime_start
        ):
            self.state.regime_start = change_at

    def _evaluate(
        self,
        request: RetrainRequest,
        now: datetime,
        origin: str,
        context: dict[str, Number] | None = None,
    ) -> Step:
        """Rules 5-9 for a request that wants a loop. `context` numbers (e.g. the drift score)
        are recorded with whatever decision comes out."""
        state, policy = self.state, self.policy

        def decide(
            action: Action,
            reason: Reason,
            message: str,
            numbers: dict[str, Number],
            loop_id: str | None = None,
        ) -> Step:
            if request.adaptive is not None and reason is not Reason.ADAPTIVE_KEEP:
                # The adaptive policy's reason first: why retraining pays, then what the
                # limits made of it.
                message = f"{request.adaptive.reason}; {message}"
            return self._decide(
                now,
                action,
                reason,
                request.events,
                message,
                request=request,
                origin=origin,
                loop_id=loop_id,
                numbers={**(context or {}), **numbers},
            )

        if state.review is not None and not request.from_human:
            return decide(
                Action.SUPPRESS,
                Reason.HUMAN_REVIEW_PENDING,
                f"critical drift {state.review.event_id} awaits human review; "
                "only a manual trigger can start a loop",
                {"review_requested_at": state.review.requested_at.isoformat()},
            )
        adaptive = self._adaptive_policy() if policy.mode == "adaptive" else None
        if adaptive is not None and origin != "adaptive" and self._automatic(request):
            # Adaptive mode: an automatic trigger retrains only when retraining pays now.
            verdict = adaptive.decide(retraining_cost=state.last_training_cost)
            request.adaptive = AdaptiveRecord(reason=verdict.reason, numbers=verdict.numbers())
            context = {**(context or {}), **request.adaptive.numbers}
            if not verdict.retrain:
                step = decide(Action.SUPPRESS, Reason.ADAPTIVE_KEEP, verdict.reason, {})
                state.last_adaptive = step.decision
                return step
        until = cooldown_until(state)
        if until is not None and now < until and not request.bypass_cooldown:
            if state.deferred is None:
                state.deferred = request
            else:
                state.deferred.absorb(request)
            state.deferred_until = until
            return decide(
                Action.DEFER,
                Reason.COOLDOWN,
                f"cooldown until {until.isoformat()}; re-evaluated then",
                {
                    "cooldown_until": until.isoformat(),
                    "cooldown_remaining_s": (until - now).total_seconds(),
                },
            )
        if (
            state.trainings_today >= policy.max_daily_trainings
            and request.priority > DAILY_LIMIT_BYPASS_PRIORITY
        ):
            return decide(
                Action.SUPPRESS,
                Reason.DAILY_LIMIT,
                f"daily limit reached ({state.trainings_today}/"
                f"{policy.max_daily_trainings}); priority <= "
                f"{DAILY_LIMIT_BYPASS_PRIORITY} may exceed it",
                {
                    "trainings_today": state.trainings_today,
                    "max_daily_trainings": policy.max_daily_trainings,
                },
            )
        estimate = policy.cost.estimate(request.rows)
        if not self._affordable(request, estimate):
            return decide(
                Action.SUPPRESS,
                Reason.DAILY_BUDGET,
                f"estimated {estimate:.2f} {policy.cost.currency} would exceed the "
                f"daily budget ({state.spent_today:.2f} of "
                f"{policy.daily_budget:.2f} spent); priority 1 may exceed it",
                {
                    "estimated_cost": estimate,
                    "spent_today": round(state.spent_today, 6),
                    "daily_budget": policy.daily_budget,
                },
            )
        if state.active_loop is not None:
            if state.follow_up is None:
                state.follow_up = request
            else:
                state.follow_up.absorb(request)
            return decide(
                Action.DEFER,
                Reason.LOOP_ACTIVE,
                f"{state.active_loop.loop_id} is still running; coalesced into "
                f"one follow-up of {len(state.follow_up.events)} events",
                {
                    "active_loop": state.active_loop.loop_id,
                    "follow_up_events": len(state.follow_up.events),
                    "follow_up_priority": state.follow_up.priority,
                },
            )
        request, estimate = self._with_deferred_work(request, estimate)
        state.loops_started += 1
        number = state.loops_started
        loop_id = retraining_loop_id(state.model, number)
        trigger = request.context(origin)
        if state.regime_start is not None:
            trigger = trigger.model_copy(update={"regime_start": state.regime_start})
        state.active_loop = ActiveLoop(
            loop_id=loop_id,
            number=number,
            started_at=now,
            day=policy.local_day(now),
            estimated_cost=estimate,
            priority=request.priority,
            kinds=trigger.kinds,
            event_count=len(request.events),
            requires_approval=request.requires_approval,
        )
        state.last_started_at = now
        state.trainings_today += 1
        state.spent_today += estimate
        step = decide(
            Action.START,
            Reason.ELIGIBLE,
            f"started {loop_id}" + (" (approval required)" if request.requires_approval else ""),
            {
                "estimated_cost": estimate,
                "trainings_today": state.trainings_today,
                "spent_today": round(state.spent_today, 6),
                "data_uris": len(request.data),
                "cooldown": format_duration(policy.cooldown),
                **(
                    {"regime_start": state.regime_start.isoformat()}
                    if state.regime_start is not None
                    else {}
                ),
            },
            loop_id=loop_id,
        )
        step.start = LoopStart(
            loop_id=loop_id, number=number, trigger=trigger, estimated_cost=estimate
        )
        return step

    @staticmethod
    def _automatic(request: RetrainRequest) -> bool:
        """Triggers the adaptive policy decides on: not a human's, not a business alarm."""
        return not request.from_human and not request.alarms

    def _affordable(self, request: RetrainRequest, estimate: float) -> bool:
        within = self.state.spent_today + estimate <= self.policy.daily_budget
        return within or request.priority <= BUDGET_BYPASS_PRIORITY

    def _with_deferred_work(
        self, request: RetrainRequest, estimate: float
    ) -> tuple[RetrainRequest, float]:
        """Work the cooldown deferred wants the same retraining: a loop that starts anyway (a
        bypass) answers it too, if the budget still allows the larger training."""
        deferred = self.state.deferred
        if deferred is None:
            return request, estimate
        merged = request.model_copy(deep=True)
        merged.absorb(deferred)
        merged_estimate = self.policy.cost.estimate(merged.rows)
        if not self._affordable(merged, merged_estimate):
            return request, estimate
        self.state.deferred, self.state.deferred_until = None, None
        return merged, merged_estimate

    # ---------------------------------------------------------------- helpers

    def _decide(
        self,
        now: datetime,
        action: Action,
        reason: Reason,
        events: list[EventRef],
        message: str,
        *,
        request: RetrainRequest | None = None,
        origin: str = "direct",
        loop_id: str | None = None,
        numbers: dict[str, Number] | None = None,
        event_ids: list[str] | None = None,
        error: str | None = None,
    ) -> Step:
        self.state.decision_seq += 1
        ids = event_ids if event_ids is not None else [e.event_id for e in events]
        decision = Decision.model_construct(
            seq=self.state.decision_seq,
            at=now,
            action=action,
            reason=reason,
            message=message,
            event_ids=ids,
            event_count=len(ids),
            kinds=request.kinds if request else sorted({e.kind for e in events}),
            priority=request.priority
            if request
            else (min(e.priority for e in events) if events else None),
            origin=origin,
            loop_id=loop_id,
            requires_approval=bool(request and request.requires_approval),
            numbers=numbers or {},
            error=error,
        )
        logged = decision
        if len(ids) > EVENT_IDS_PER_LOGGED_DECISION:
            logged = decision.model_copy(update={"event_ids": ids[:EVENT_IDS_PER_LOGGED_DECISION]})
        self.state.decisions.append(logged)
        del self.state.decisions[:-DECISIONS_KEPT]
        unarchived = self.state.unarchived
        unarchived.append(logged)
        if len(unarchived) > DECISIONS_UNARCHIVED:
            self.state.decisions_dropped += len(unarchived) - DECISIONS_UNARCHIVED
            del unarchived[:-DECISIONS_UNARCHIVED]
        return Step(decisions=[decision])

    def _notification(
        self, decision: Decision, level: Level, subject: str, body: str
    ) -> Notification:
        return Notification(
            key=f"{self.state.model}-decision-{decision.seq}",
            model=self.state.model,
            level=level,
            subject=subject,
            body=body,
            decision_seq=decision.seq,
        )

    def _remember(self, event_id: str, now: datetime) -> None:
        seen = self.state.seen_events
        seen[event_id] = now
        seen.move_to_end(event_id)  # an id seen again after its window expired is newest now
        horizon = earlier(now, self.policy.dedup_window)
        while seen and (
            len(seen) > self.policy.dedup_max_events or next(iter(seen.values())) < horizon
        ):
            seen.popitem(last=False)

    def _pending_events(self) -> int:
        state = self.state
        return sum(
            len(pending.events)
            for pending in (state.batch, state.deferred, state.follow_up)
            if pending is not None
        )

    def _auto_event_id(self) -> str:
        self.state.auto_event_seq += 1
        return f"auto-{self.state.auto_event_seq}"

    def _roll_day(self, now: datetime) -> None:
        today = self.policy.local_day(now)
        if self.state.day != today:
            self.state.day = today
            self.state.trainings_today = 0
            self.state.spent_today = 0.0


def carried_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """The metadata as carried with the event: whole up to CARRIED_METADATA_BYTES, else a note
    of its size and first keys (the sender's log has the rest)."""
    if not metadata:
        return {}
    size = len(json.dumps(metadata, separators=(",", ":")))
    if size <= CARRIED_METADATA_BYTES:
        return metadata
    return {"truncated_bytes": size, "keys": [key[:50] for key in list(metadata)[:10]]}


def event_summary(event: TriggerEvent) -> str | None:
    """One line about an event for the loop and its audit record."""
    if event.alarm is not None:
        text = f"alarm {event.alarm.name} {event.alarm.state.value}"
        if event.alarm.reason:
            text += f": {event.alarm.reason}"
        return text[:500]
    if event.drift is not None:
        drift = event.drift
        parts = [f"drift score {drift.score}" if drift.score is not None else "drift"]
        if drift.severity is not None:
            parts.append(drift.severity.value)
        if drift.endpoint:
            parts.append(f"at {drift.endpoint}")
        parts.append(f"on {len(drift.features)} features")
        return " ".join(parts)[:500]
    if event.data is not None:
        return f"data {event.data.uri}"[:500]
    return None


def features_text(features: list[str]) -> str:
    """At most FEATURES_IN_NOTIFICATIONS feature names: notifications carry references (the
    decision has them all), never a copy of a thousand names."""
    if not features:
        return "n/a"
    shown = ", ".join(name[:60] for name in features[:FEATURES_IN_NOTIFICATIONS])
    rest = len(features) - FEATURES_IN_NOTIFICATIONS
    return shown + (f" and {rest} more (see the decision)" if rest > 0 else "")


def _pending_view(request: RetrainRequest | None, until: datetime | None) -> PendingView | None:
    if request is None:
        return None
    return PendingView(
        events=len(request.events),
        priority=request.priority,
        kinds=request.kinds,
        requires_approval=request.requires_approval,
        until=until,
    )


def adaptive_config(policy: TriggerPolicy) -> AdaptiveConfig:
    """The pure policy's configuration from a trigger policy with adaptive settings."""
    settings = policy.adaptive
    assert settings is not None
    return AdaptiveConfig(
        value_per_loss=settings.value_per_error,
        retraining_cost=policy.cost.estimate(0),
        retraining_overhead=settings.retraining_overhead,
        currency=policy.cost.currency,
        confidence=settings.confidence,
        training_batches=settings.training_batches,
        max_horizon=settings.max_horizon,
    )


def new_state(model: str, policy: TriggerPolicy | None = None) -> CoordinatorState:
    return CoordinatorState(
        model=model, policy=policy or TriggerPolicy(), seen_events=OrderedDict()
    )
