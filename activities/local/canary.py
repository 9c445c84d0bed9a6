"""The local backend's canary: both variants' numbers from the local endpoint's capture."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.loop.data_window import resolve_uri
from activities.rollout.statistics import compare
from activities.rollout.window import InvalidCaptureData, read_window
from workflows.common.errors import ErrorType
from workflows.rollout.models import CanaryRequest, CanaryStatistics


class CaptureCanary:
    """The local endpoint's canary source: its capture files, per generation."""

    def __init__(self, home: Path, flush: Callable[[str], None]) -> None:
        self.home = home
        # flush(endpoint_url): the endpoint writes its buffered capture before returning.
        self.flush = flush

    def analyse(self, request: CanaryRequest, heartbeat: Callable[[str], None]) -> CanaryStatistics:
        self.flush(request.endpoint_url)
        heartbeat("flushed")
        capture_dir = resolve_uri(self.home, request.capture_dir)
        try:
            champion = read_window(capture_dir, request.champion)
            heartbeat("champion window read")
            challenger = read_window(capture_dir, request.challenger)
            heartbeat("challenger window read")
        except InvalidCaptureData as error:
            raise ApplicationError(
                f"{request.model}: {error}", type=ErrorType.INVALID_CAPTURE_DATA, non_retryable=True
            ) from error
        statistics = compare(
            champion,
            challenger,
            request.policy,
            seed=request.seed,
            shadow=request.challenger.shadow,
            champion_name=request.champion.variant,
            challenger_name=request.challenger.variant,
        )
        activity.logger.info(
            "canary of %s: %s (%d requests) vs %s (%d requests)",
            request.model,
            request.challenger.variant,
            challenger.size,
            request.champion.variant,
            champion.size,
        )
        return statistics
