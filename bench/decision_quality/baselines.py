"""Baselines whose decisions do not depend on the retraining cost, run once per stream.

Each walks the stream as a deployment would (the model it retrained serves from the next batch)
and returns the batches after which it retrains:

- `adwin`, `ddm`, `page_hinkley`: river's detectors on the serving model's row-by-row 0/1 errors
  (defaults; Page-Hinkley watches increases only, as an error monitor should); a detection
  during batch j retrains at the end of batch j, and the detector starts afresh for the new
  model.
- `psi`: retrain when any feature's PSI (this project's statistics: the reference's 10 quantile
  bins, categories for categorical features) between the serving model's training window and
  the batch exceeds 0.2.
- `default_spec`: what this project does with a default spec, through its own code: the drift
  monitor's statistics (`activities.drift_statistics`) of the batch (one day of traffic: the
  monitor's 24 h window) against the serving model's training data - features, the model's
  score and the label - judged by `workflows.drift_rules.assess` with `DriftPolicy()`, the
  trigger from `monitor_trigger`, and the decision from the real `CoordinatorRules` with
  `TriggerPolicy()` (severity cut points, medium -> retrain, high -> retrain with approval,
  critical -> human review, 6 h cooldown, 4 trainings a day, daily budget). The reviewer is as
  kind to it as can be: every approval is granted and a critical drift gets its manual
  retraining at once; loops succeed and close before the next batch.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import numpy as np

from activities.drift.check import column_result
from activities.drift.profile import class_text
from activities.drift.statistics import (
    CategoricalReference,
    NumericReference,
    build_categorical_reference,
    build_numeric_reference,
    categorical_drift,
    numeric_drift,
)
from bench.decision_quality.matrix import Models
from workflows.coordinator.models import Action
from workflows.coordinator.policy import TriggerPolicy
from workflows.coordinator.rules import CoordinatorRules, new_state
from workflows.coordinator.triggers import TriggerEvent, TriggerKind
from workflows.drift.models import ColumnDrift, ColumnRole, DriftPolicy, DriftReport
from workflows.drift.rules import assess, monitor_trigger
from workflows.loop.models import LoopResult, LoopStatus

PSI_THRESHOLD = 0.2


def detector_schedule(models: Models, make: Callable[[], Any]) -> list[int]:
    stream = models.stream
    serving, detector = models.window - 1, make()
    schedule: list[int] = []
    for j in range(models.window, stream.batches - 1):
        fired = False
        for wrong in models.row_errors(serving, j):
            detector.update(int(wrong))
            if detector.drift_detected:
                fired = True
                break
        if fired:
            schedule.append(j)
            serving, detector = j, make()
    return schedule


def detectors() -> dict[str, Callable[[], Any]]:
    from river import drift

    return {
        "adwin": drift.ADWIN,
        "ddm": drift.binary.DDM,
        "page_hinkley": lambda: drift.PageHinkley(mode="up"),
    }


class _Profiles:
    """Per serving model: the drift references of its training window (features, the
    model's scores on it, the labels), built once."""

    def __init__(self, models: Models) -> None:
        self.models = models
        stream = models.stream
        self.numeric = [
            j for j, name in enumerate(stream.feature_names) if name not in stream.categorical
        ]
        self.categorical = [
            j for j, name in enumerate(stream.feature_names) if name in stream.categorical
        ]
        self._cache: dict[int, tuple[NumericReference, CategoricalReference, Any, Any]] = {}

    def names(self, columns: list[int]) -> list[str]:
        return [self.models.stream.feature_names[j] for j in columns]

    def text(self, values: Any) -> Any:
        return class_text(np.asarray(values, dtype=np.float64))

    def outputs(self, i: int, rows: slice) -> tuple[str, Any, bool]:
        """The model's captured output: the positive-class score for two classes, else the
        predicted class (as the endpoint and the profile record them)."""
        model = self.models.model(i)
        features = self.models.stream.features[rows]
        if len(getattr(model, "classes_", [])) == 2:
            return "score", model.predict_proba(features)[:, 1].astype(np.float64), True
        return "prediction", self.text(model.predict(features)), False

    def get(self, i: int) -> tuple[NumericReference, CategoricalReference, Any, Any]:
        if i not in self._cache:
            stream, rows = self.models.stream, self.models.training_rows(i)
            features = stream.features[rows]
            numeric = build_numeric_reference(
                self.names(self.numeric),
                features[:, self.numeric] if self.numeric else np.empty((features.shape[0], 0)),
            )
            categorical = build_categorical_reference(
                self.names(self.categorical), [self.text(features[:, j]) for j in self.categorical]
            )
            name, output, is_numeric = self.outputs(i, rows)
            prediction = (
                build_numeric_reference([name], output[:, None])
                if is_numeric
                else build_categorical_reference([name], [output])
            )
            label = build_categorical_reference(["label"], [self.text(stream.labels[rows])])
            self._cache[i] = (numeric, categorical, prediction, label)
        return self._cache[i]

    def feature_stats(self, i: int, j: int) -> list[Any]:
        numeric, categorical, _, _ = self.get(i)
        features = self.models.stream.features[self.models.slices[j]]
        stats: list[Any] = []
        if self.numeric:
            stats += numeric_drift(numeric, features[:, self.numeric], threads=1)
        if self.categorical:
            stats += categorical_drift(
                categorical, [self.text(features[:, c]) for c in self.categorical], threads=1
            )
        return stats

    def columns(self, i: int, j: int) -> list[ColumnDrift]:
        """Every column the monitor checks, as `activities.drift.check` reports them."""
        _, _, prediction, label = self.get(i)
        rows = self.models.slices[j]
        columns = [
            column_result(s, ColumnRole.FEATURE, []).column for s in self.feature_stats(i, j)
        ]
        _, output, is_numeric = self.outputs(i, rows)
        predicted = (
            numeric_drift(prediction, output[:, None], threads=1)
            if is_numeric
            else categorical_drift(prediction, [output], threads=1)
        )
        columns += [column_result(s, ColumnRole.PREDICTION, []).column for s in predicted]
        labels = categorical_drift(label, [self.text(self.models.stream.labels[rows])], threads=1)
        columns += [column_result(s, ColumnRole.LABEL, []).column for s in labels]
        return columns


def psi_schedule(models: Models, threshold: float = PSI_THRESHOLD) -> list[int]:
    profiles = _Profiles(models)
    serving, schedule = models.window - 1, []
    for j in range(models.window, models.stream.batches - 1):
        worst = max(
            (s.psi for s in profiles.feature_stats(serving, j) if s.psi is not None), default=0.0
        )
        if worst > threshold:
            schedule.append(j)
            serving = j
    return schedule


def default_spec_schedule(models: Models) -> tuple[list[int], dict[str, int]]:
    """The default spec's decisions on the stream, and how many of each kind it took."""
    stream = models.stream
    drift_policy, trigger_policy = DriftPolicy(), TriggerPolicy()
    rules = CoordinatorRules(new_state("bench", trigger_policy))
    profiles = _Profiles(models)
    serving, schedule = models.window - 1, []
    tally: dict[str, int] = {}

    def started(step: Any, now: Any) -> bool:
        for decision in step.decisions:
            key = f"{decision.action.value}:{decision.reason.value}"
            tally[key] = tally.get(key, 0) + 1
        if step.start is None:
            return False
        rules.on_loop_closed(
            LoopResult(loop_id=step.start.loop_id, status=LoopStatus.PROMOTED),
            now + timedelta(hours=1),
        )
        return True

    for j in range(models.window, stream.batches - 1):
        now = stream.batch_end[j]
        # Work deferred by a cooldown comes due before this batch's check.
        retrain = started(rules.on_timer(now), now)
        if not retrain:
            columns = profiles.columns(serving, j)
            rows = models.slices[j].stop - models.slices[j].start
            verdict = assess(columns, drift_policy, trigger_policy.severity_cut_points, rows)
            report = DriftReport(
                model="bench",
                check_id=f"check-{j}",
                checked_at=now,
                window_start=now - drift_policy.window,
                window_end=now,
                rows=rows,
                score=verdict.score,
                severity=verdict.severity,
                status=verdict.status,
                drifted=verdict.drifted,
                data_quality=verdict.data_quality,
                columns=verdict.columns,
                summary=verdict.summary,
            )
            event = monitor_trigger(report)
            if event is not None:
                step = rules.on_trigger(event, now)
                retrain = started(step, now)
                if step.decision.action is Action.ESCALATE:
                    # The reviewer looks at once and asks for the retraining.
                    manual = TriggerEvent(
                        kind=TriggerKind.MANUAL, source="reviewer", event_id=f"review-{j}"
                    )
                    retrain = started(rules.on_trigger(manual, now), now)
        if retrain:
            schedule.append(j)
            serving = j
    return schedule, tally
