"""Public names shared by workflows, workers and clients: task queue, workflow and activity
names, ids, search attributes."""

from __future__ import annotations

import re
from typing import Final

from temporalio.common import SearchAttributeKey

TASK_QUEUE = "retraining"


class ActivityName:
    """Every activity's registered name: workflows call them by these, activities register them
    (`@activity.defn(name=...)`), and a test checks the worker registers each one a workflow
    calls (tests/common/test_contract.py). Names are part of recorded histories: never rename."""

    LOAD_MODEL_SPEC: Final = "load_model_spec"
    SELECT_DATA_WINDOW: Final = "select_data_window"
    VERIFY_GOLDEN_SET: Final = "verify_golden_set"
    REQUEST_TRAINING_SLOT: Final = "request_training_slot"
    TRAIN_CANDIDATE: Final = "train_candidate"
    CHAMPION_VERSION: Final = "champion_version"
    REGISTER_CANDIDATE: Final = "register_candidate"
    EVALUATE_CANDIDATE: Final = "evaluate_candidate"
    PROMOTE_CANDIDATE: Final = "promote_candidate"
    REJECT_CANDIDATE: Final = "reject_candidate"
    BUILD_REFERENCE_PROFILE: Final = "build_reference_profile"
    WRITE_AUDIT_RECORD: Final = "write_audit_record"
    SHIFT_TRAFFIC: Final = "shift_traffic"
    ANALYSE_CANARY: Final = "analyse_canary"
    CHECK_DRIFT: Final = "check_drift"
    CHECK_PERFORMANCE: Final = "check_performance"
    AWAIT_LOOP_RESULT: Final = "await_loop_result"
    ARCHIVE_DECISIONS: Final = "archive_decisions"
    DELIVER_SCHEDULED_TRIGGER: Final = "deliver_scheduled_trigger"
    CHECK_SCHEDULE_HEALTH: Final = "check_schedule_health"
    CHECK_DATA_FRESHNESS: Final = "check_data_freshness"
    FIND_CLOSED_LOOPS: Final = "find_closed_loops"
    NOTIFY: Final = "notify"
    NOTIFY_REVIEWERS: Final = "notify_reviewers"


COORDINATOR_WORKFLOW = "ModelCoordinator"
RETRAINING_LOOP_WORKFLOW = "RetrainingLoop"
STAGED_ROLLOUT_WORKFLOW = "StagedRollout"
DRIFT_MONITOR_WORKFLOW = "DriftMonitor"
TRAINING_SLOTS_WORKFLOW = "TrainingSlots"
TRAINING_SLOTS_ID = "training-slots"

# Model names end up in workflow ids, search attributes and file paths: keep them boring.
MODEL_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
_MODEL_NAME_RE = re.compile(MODEL_NAME_PATTERN)


def validate_model_name(model: str) -> str:
    if not _MODEL_NAME_RE.fullmatch(model):
        raise ValueError(
            f"invalid model name {model!r}: use 1-63 lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return model


def coordinator_id(model: str) -> str:
    return f"coordinator-{model}"


def retraining_loop_id(model: str, number: int) -> str:
    return f"retrain-{model}-{number}"


def rollout_id(model: str, number: int) -> str:
    return f"rollout-{model}-{number}"


def drift_monitor_id(model: str) -> str:
    return f"drift-{model}"


def schedule_id(model: str) -> str:
    """The model's Temporal Schedule (`retrain schedule set`)."""
    return f"schedule-{model}"


def loop_number(loop_id: str) -> int:
    """`retrain-<model>-<n>` -> n."""
    return int(loop_id.rsplit("-", 1)[-1])


# Custom search attributes. `retrain server` registers them on the dev server; on a cluster,
# `retrain worker` registers missing ones when the operator API allows it.
MODEL_NAME = SearchAttributeKey.for_keyword("ModelName")
TRIGGER_KIND = SearchAttributeKey.for_keyword_list("TriggerKind")
LOOP_STAGE = SearchAttributeKey.for_keyword("LoopStage")
RETRAIN_PAUSED = SearchAttributeKey.for_bool("RetrainPaused")
ACTIVE_LOOP = SearchAttributeKey.for_keyword("ActiveLoop")
# How a loop ended (promoted, rolled_back, rejected_by_gate, ...): the list finds them.
RETRAIN_OUTCOME = SearchAttributeKey.for_keyword("RetrainOutcome")

SEARCH_ATTRIBUTES = (
    MODEL_NAME,
    TRIGGER_KIND,
    LOOP_STAGE,
    RETRAIN_PAUSED,
    ACTIVE_LOOP,
    RETRAIN_OUTCOME,
)
