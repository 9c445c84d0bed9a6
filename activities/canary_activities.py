"""The canary analysis activity (`analyse_canary`) of a staged rollout.

Asks the endpoint to write its buffered capture (so the window holds every answer served so
far), reads the champion's and the challenger's windows from the capture files and measures
them (`activities.canary_statistics.compare`). The verdict is the workflow's
(`workflows.canary.canary_verdict`). The request's capture directory is the spec's
(`ModelSpec.data.capture_location`): relative to the retrain home unless absolute. A synchronous
activity: the worker runs it in its thread pool. Unreadable capture files are a non-retryable
`InvalidCaptureData` error; a failing flush or a vanished file is retried under the workflow's
retry policy.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.backends import CanarySource
from activities.canary_statistics import compare
from activities.canary_window import InvalidCaptureData, read_window
from activities.data_window import resolve_uri
from workflows.rollout_models import CanaryRequest, CanaryStatistics

INVALID_CAPTURE_DATA = "InvalidCaptureData"


class CanaryActivities:
    def __init__(self, source: CanarySource) -> None:
        self.source = source

    @activity.defn(name="analyse_canary")
    def analyse(self, request: CanaryRequest) -> CanaryStatistics:
        return self.source.analyse(request, activity.heartbeat)


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
                f"{request.model}: {error}", type=INVALID_CAPTURE_DATA, non_retryable=True
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
