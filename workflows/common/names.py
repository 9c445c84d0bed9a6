"""Public names shared by workflows, workers and clients: task queue, ids, search attributes."""

from __future__ import annotations

import re

from temporalio.common import SearchAttributeKey

TASK_QUEUE = "retraining"

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

SEARCH_ATTRIBUTES = (MODEL_NAME, TRIGGER_KIND, LOOP_STAGE, RETRAIN_PAUSED, ACTIVE_LOOP)
