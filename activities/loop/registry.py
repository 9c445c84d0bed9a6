"""The loop's registry activities (register, champion, promote, reject) over any `ModelRegistry`."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.ports import ModelRegistry, RegistryError
from workflows.common import metrics
from workflows.common.errors import ErrorType
from workflows.common.names import ActivityName, validate_model_name
from workflows.loop.models import (
    ModelVersion,
    PromoteRequest,
    Promotion,
    RegisterRequest,
    RejectRequest,
)

_LOOP_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,199}$")
_T = TypeVar("_T")


class RegistryActivities:
    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    @activity.defn(name=ActivityName.REGISTER_CANDIDATE)
    def register_candidate(self, request: RegisterRequest) -> ModelVersion:
        version = _permanent(lambda: self.registry.register(request))
        activity.logger.info("candidate of %s: %s", request.loop_id, version.source)
        return version

    @activity.defn(name=ActivityName.CHAMPION_VERSION)
    def champion_version(self, model: str) -> ModelVersion | None:
        champion = _permanent(lambda: self.registry.champion(model))
        if champion is not None and champion.registered_at is not None:
            trained = champion.registered_at.timestamp()
            meter = metrics.activity_meter()
            metrics.set_gauge(meter, metrics.CHAMPION_TRAINED, {"model": model}, trained)
        return champion

    @activity.defn(name=ActivityName.PROMOTE_CANDIDATE)
    def promote_candidate(self, request: PromoteRequest) -> Promotion:
        return _permanent(lambda: self.registry.promote(request))

    @activity.defn(name=ActivityName.REJECT_CANDIDATE)
    def reject_candidate(self, request: RejectRequest) -> ModelVersion:
        return _permanent(lambda: self.registry.reject(request))


def checked_model(model: str) -> str:
    try:
        return validate_model_name(model)
    except ValueError as exc:
        raise RegistryError(str(exc)) from exc


def checked_loop_id(loop_id: str) -> str:
    # Loop ids go into MLflow filter strings between quotes.
    if not _LOOP_ID.fullmatch(loop_id):
        raise RegistryError(f"invalid loop id {loop_id!r}")
    return loop_id


def _permanent(call: Callable[[], _T]) -> _T:
    try:
        return call()
    except RegistryError as exc:
        raise ApplicationError(str(exc), type=ErrorType.REGISTRY, non_retryable=True) from exc
