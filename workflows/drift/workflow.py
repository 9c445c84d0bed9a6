"""DriftMonitor: one long-lived workflow per model (`drift-<model>`) that turns captured
production data into drift triggers.

Every `drift.interval` of the model spec (a durable timer), and whenever the `check` update asks
(`retrain drift check MODEL`), it runs the `check_drift` activity, which compares the current
window of captured traffic with the champion's reference profile and returns a `DriftReport`.
The pure `monitor_trigger` decides what the coordinator hears: a drift trigger for drifted
columns, a data-quality alarm for broken data, nothing for a clean or too-small window.

After each scheduled drift check (and whenever the `check_performance` update asks), a
performance check measures the champion's quality on the labelled traffic it answered
(`check_performance` activity); the pure `judge_check` decides whether the window has enough
labels to be judged (a low-volume window keeps gathering up to `performance.max_window_age`)
and its verdict, and a degradation becomes a `performance` trigger with its numbers (deduplicated
on the change point the detector found). The monitor remembers its recent checks and the last
reports (query `status`), and continues-as-new with that state every `checks_per_run` checks or
when the server suggests it.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, FailureError

from workflows.common.errors import ErrorType
from workflows.common.names import ActivityName
from workflows.common.retries import LIVENESS, SPEC_RETRY

with workflow.unsafe.imports_passed_through():
    from workflows.common import names
    from workflows.common.messages import one_message
    from workflows.coordinator.triggers import Severity, TriggerEvent
    from workflows.drift.models import (
        CheckRecord,
        CheckRequest,
        Delivery,
        DriftCheckInput,
        DriftMonitorInput,
        DriftReport,
        MonitorState,
        MonitorStatus,
        PerformanceCheck,
        PerformanceCheckInput,
        PerformanceRecord,
        ReportStatus,
    )
    from workflows.drift.performance_models import PerformanceReport, PerformanceStatus
    from workflows.drift.performance_rules import (
        judge_check,
        next_window_start,
        observation_of,
        performance_trigger,
    )
    from workflows.drift.rules import monitor_trigger, repeats_data_quality
    from workflows.spec.models import ModelSpec

HISTORY_KEPT = 50
MAX_QUEUED_CHECKS = 5
CHECK_RETRY = RetryPolicy(
    maximum_attempts=3,
    initial_interval=timedelta(seconds=5),
    non_retryable_error_types=[
        ErrorType.UNKNOWN_MODEL,
        ErrorType.INVALID_MODEL_SPEC,
        ErrorType.DRIFT_PROFILE,
    ],
)
CHECK_TIMEOUT = timedelta(minutes=15)
CHECK_HEARTBEAT = LIVENESS
# Added with performance monitoring: monitors already running do not know the check.
PERFORMANCE_PATCH = "performance-check"
# Event ids of performance triggers remembered, so a change found again is not sent again.
SENT_KEPT = 50


@workflow.defn(name=names.DRIFT_MONITOR_WORKFLOW)
class DriftMonitor:
    @workflow.init
    def __init__(self, input: DriftMonitorInput) -> None:
        self._model = input.model
        self._state = input.state or MonitorState()
        # One check at a time: scheduled and on-demand checks queue on it.
        self._lock = asyncio.Lock()
        self._queued = 0
        self._checking = False
        self._endpoint: str | None = None

    @workflow.run
    async def run(self, input: DriftMonitorInput) -> None:
        state = self._state
        checks_this_run = 0
        while True:
            await self._read_policy()
            now = workflow.now()
            if state.next_check_at is None:
                state.next_check_at = now + state.policy.interval
            if state.next_check_at > now:
                self._publish()
                await workflow.sleep(state.next_check_at - now)
            if state.policy.enabled:
                async with self._lock:
                    await self._check("scheduled", notify=True)
                checks_this_run += 1
            if state.performance_policy.enabled and workflow.patched(PERFORMANCE_PATCH):
                async with self._lock:
                    await self._check_performance("scheduled", notify=True)
            state.next_check_at = workflow.now() + state.policy.interval
            self._publish()
            due = checks_this_run >= input.checks_per_run
            if due or workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(
                    lambda: workflow.all_handlers_finished() and not self._lock.locked()
                )
                workflow.continue_as_new(
                    DriftMonitorInput(
                        model=self._model, state=state, checks_per_run=input.checks_per_run
                    )
                )

    # ------------------------------------------------------------------ messages

    @workflow.update(name="check")
    async def check(self, *payload: Any) -> DriftReport:
        """Check now; returns the report (or fails with why the check could not run).
        Untyped: the validator refuses a missing, doubled, null or malformed payload."""
        request = one_message(payload, CheckRequest, "check")
        self._queued += 1
        try:
            async with self._lock:
                report = await self._check(request.reason, notify=request.notify_coordinator)
        finally:
            self._queued -= 1
        if report is None:
            raise ApplicationError(
                f"the drift check failed: {self._state.last_error}",
                type=ErrorType.DRIFT_CHECK_FAILED,
            )
        return report

    @check.validator
    def _validate_check(self, *payload: Any) -> None:
        one_message(payload, CheckRequest, "check")
        if self._queued >= MAX_QUEUED_CHECKS:
            raise ValueError(f"{self._queued} checks are already queued; try again later")

    @workflow.update(name="check_performance")
    async def check_performance(self, *payload: Any) -> PerformanceCheck:
        """Measure the champion's quality on its labelled traffic now; returns the check (or
        fails with why it could not run). Untyped and validated like `check`."""
        request = one_message(payload, CheckRequest, "check_performance")
        self._queued += 1
        try:
            async with self._lock:
                result = await self._check_performance(
                    request.reason, notify=request.notify_coordinator
                )
        finally:
            self._queued -= 1
        if result is None:
            raise ApplicationError(
                f"the performance check failed: {self._state.performance.last_error}",
                type=ErrorType.DRIFT_CHECK_FAILED,
            )
        return result

    @check_performance.validator
    def _validate_check_performance(self, *payload: Any) -> None:
        one_message(payload, CheckRequest, "check_performance")
        if self._queued >= MAX_QUEUED_CHECKS:
            raise ValueError(f"{self._queued} checks are already queued; try again later")

    @workflow.query(name="status")
    def status(self) -> MonitorStatus:
        state = self._state
        return MonitorStatus(
            model=self._model,
            enabled=state.policy.enabled,
            interval_seconds=state.policy.interval.total_seconds(),
            checks=state.checks,
            checking=self._checking,
            next_check_at=state.next_check_at,
            last_report=state.last_report,
            history=list(reversed(state.history)),
            last_error=state.last_error,
            performance_enabled=state.performance_policy.enabled,
            last_performance=state.performance.last,
            performance_history=list(reversed(state.performance.history)),
            performance_window_start=state.performance.window_start,
            performance_error=state.performance.last_error,
        )

    # ------------------------------------------------------------------ steps

    async def _read_policy(self) -> None:
        """The spec's drift policy; the last known one when the spec cannot be read now."""
        try:
            spec: ModelSpec = await workflow.execute_activity(
                ActivityName.LOAD_MODEL_SPEC,
                self._model,
                result_type=ModelSpec,
                start_to_close_timeout=timedelta(minutes=1),
                heartbeat_timeout=LIVENESS,
                retry_policy=SPEC_RETRY,
            )
        except ActivityError as error:
            self._state.last_error = f"cannot read the model spec: {_cause(error)}"
            return
        self._state.policy = spec.drift
        self._state.performance_policy = spec.performance
        self._endpoint = spec.loop.deployment.endpoint_url

    async def _check(self, reason: str, *, notify: bool) -> DriftReport | None:
        state = self._state
        self._checking = True
        self._publish()
        now = workflow.now()
        state.checks += 1
        check_id = f"drift-{self._model}-{now:%Y%m%dT%H%M%S}-{state.checks}"
        try:
            report: DriftReport = await workflow.execute_activity(
                ActivityName.CHECK_DRIFT,
                DriftCheckInput(model=self._model, check_id=check_id, window_end=now),
                result_type=DriftReport,
                start_to_close_timeout=CHECK_TIMEOUT,
                heartbeat_timeout=CHECK_HEARTBEAT,
                retry_policy=CHECK_RETRY,
            )
        except ActivityError as error:
            state.last_error = _cause(error)
            self._remember(
                CheckRecord(
                    check_id=check_id,
                    checked_at=now,
                    status=ReportStatus.FAILED,
                    severity=Severity.LOW,
                    score=0.0,
                    reason=reason,
                    error=state.last_error,
                )
            )
            self._checking = False
            self._publish()
            return None

        previous = state.last_report
        event = monitor_trigger(report, previous) if notify else None
        delivery, note = Delivery.NOT_SENT, "" if notify else "not asked to notify"
        if notify and previous is not None and repeats_data_quality(report, previous):
            note = f"same data-quality problems as {previous.check_id}: not sent again"
        if event is not None:
            try:
                coordinator = workflow.get_external_workflow_handle(
                    names.coordinator_id(self._model)
                )
                await coordinator.signal("trigger", event)
                delivery, note = Delivery.SENT, f"{event.kind.value} -> {coordinator.id}"
            except FailureError as error:
                # No coordinator (model never registered or stopped): the report still stands.
                delivery, note = Delivery.FAILED, f"coordinator unreachable: {error.message}"
        state.last_report = report
        state.last_error = None
        self._remember(
            CheckRecord(
                check_id=report.check_id,
                checked_at=report.checked_at,
                status=report.status,
                severity=report.severity,
                score=report.score,
                drifted=report.drifted[:20],
                reason=reason,
                trigger=event.kind.value if event is not None else None,
                delivery=delivery,
                delivery_note=note,
            )
        )
        self._checking = False
        self._publish()
        return report

    async def _check_performance(self, reason: str, *, notify: bool) -> PerformanceCheck | None:
        """One performance check: the numbers (activity), whether the window is judged and its
        verdict (pure rules), the trigger for a degradation, the window moved on."""
        state = self._state
        perf, policy = state.performance, state.performance_policy
        self._checking = True
        self._publish()
        now = workflow.now()
        perf.checks += 1
        if perf.window_start is None:
            perf.window_start = now - policy.window
        check_id = f"perf-{self._model}-{now:%Y%m%dT%H%M%S}-{perf.checks}"
        try:
            report = await workflow.execute_activity(
                ActivityName.CHECK_PERFORMANCE,
                PerformanceCheckInput(
                    model=self._model,
                    check_id=check_id,
                    window_start=perf.window_start,
                    window_end=now,
                ),
                result_type=PerformanceReport,
                start_to_close_timeout=CHECK_TIMEOUT,
                heartbeat_timeout=CHECK_HEARTBEAT,
                retry_policy=CHECK_RETRY,
            )
        except ActivityError as error:
            perf.last_error = _cause(error)
            self._remember_performance(
                PerformanceRecord(
                    check_id=check_id,
                    checked_at=now,
                    reason=reason,
                    status="failed",
                    error=perf.last_error,
                )
            )
            self._checking = False
            self._publish()
            return None
        volume, verdict = judge_check(report, policy, perf.window_start, now)
        event: TriggerEvent | None = None
        delivery, note = Delivery.NOT_SENT, "" if notify else "not asked to notify"
        if notify:
            event = performance_trigger(report, verdict, self._endpoint)
        if event is not None and event.event_id in perf.sent:
            note = f"same degradation as an earlier check ({event.event_id}): not sent again"
            event = None
        observation = observation_of(check_id, report, verdict, volume, event)
        if notify and observation is not None:
            # Every judged window reaches the coordinator (the adaptive policy learns from its
            # loss), with the degradation trigger when there is one.
            try:
                coordinator = workflow.get_external_workflow_handle(
                    names.coordinator_id(self._model)
                )
                await coordinator.signal("performance_observed", observation)
                if event is not None:
                    assert event.event_id is not None
                    delivery, note = Delivery.SENT, f"performance -> {coordinator.id}"
                    perf.sent.append(event.event_id)
                    del perf.sent[:-SENT_KEPT]
                elif not note:
                    note = f"observation -> {coordinator.id}"
            except FailureError as error:
                delivery, note = Delivery.FAILED, f"coordinator unreachable: {error.message}"
                if event is None:
                    delivery = Delivery.NOT_SENT
        perf.window_start = next_window_start(volume, perf.window_start, now)
        perf.last_error = None
        result = PerformanceCheck(
            check_id=check_id,
            checked_at=now,
            reason=reason,
            volume=volume,
            report=report,
            verdict=verdict,
            event_id=event.event_id if event is not None else None,
            delivery=delivery,
            delivery_note=note,
        )
        perf.last = result
        headline = verdict.headline
        signal = event.performance if event is not None else None
        self._remember_performance(
            PerformanceRecord(
                check_id=check_id,
                checked_at=now,
                reason=reason,
                status=verdict.status,
                severity=verdict.severity,
                volume=volume,
                metric=headline.metric if headline else None,
                current=headline.current if headline else None,
                reference=headline.baseline if headline else None,
                rows=report.rows.labelled,
                version=report.version,
                change_at=signal.change_at if signal is not None else None,
                event_id=result.event_id,
                delivery=delivery,
                delivery_note=note,
            )
        )
        self._checking = False
        self._publish()
        return result

    def _remember_performance(self, record: PerformanceRecord) -> None:
        history = self._state.performance.history
        history.append(record)
        del history[:-HISTORY_KEPT]

    def _remember(self, record: CheckRecord) -> None:
        self._state.history.append(record)
        del self._state.history[:-HISTORY_KEPT]

    def _publish(self) -> None:
        """Current details for the Temporal UI: the last verdict and the next check."""
        state = self._state
        report = state.last_report
        lines = [f"**drift monitor** for `{self._model}`"]
        if self._checking:
            lines.append("checking now...")
        if report is not None:
            lines.append(
                f"last check {report.check_id}: **{report.status.value}**, "
                f"{report.severity.value} (score {report.score:.3g}) - {report.summary}"
            )
            if report.html_uri:
                lines.append(f"report: {report.html_uri}")
        if state.last_error:
            lines.append(f"last error: {state.last_error}")
        performance = state.performance.last
        if performance is not None:
            lines.append(
                f"performance {performance.check_id}: **{performance.verdict.status.value}**"
                + (
                    f", {performance.verdict.severity.value}"
                    if performance.verdict.status is PerformanceStatus.DEGRADED
                    else ""
                )
                + f" - {performance.verdict.summary}"
                + (f" ({performance.delivery_note})" if performance.delivery_note else "")
            )
        if state.performance.last_error:
            lines.append(f"last performance error: {state.performance.last_error}")
        if not state.policy.enabled:
            lines.append("scheduled checks are disabled in the spec (`drift.enabled = false`)")
        elif state.next_check_at is not None:
            lines.append(f"next check at {state.next_check_at.isoformat()}")
        workflow.set_current_details("\n\n".join(lines))


def _cause(error: ActivityError) -> str:
    cause = error.cause
    return str(cause.message if isinstance(cause, FailureError) else error)[:2000]
