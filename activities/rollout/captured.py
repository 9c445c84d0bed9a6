"""A cloud canary's labelled quality from the endpoint's capture and ground truth.

The cloud canaries (`activities/aws/canary.py`, `activities/gcp/canary.py`) read traffic, errors
and latency from the platform's metrics store; `captured_comparison` adds what only rows can
tell: it brings the capture and ground truth since the stage's window started into the capture
layout (the backend's `CaptureSource`), reads each variant's answers of the window (by time: a
cloud capture has no generation) with their latest labels, and measures them as the local
canary does (`activities.rollout.statistics.compare`). `counts.with_captured_quality` then
takes the quality checks from it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from temporalio.exceptions import ApplicationError

from activities.local.capture import capture_dir
from activities.ports import CaptureSource
from activities.rollout.statistics import compare
from activities.rollout.window import InvalidCaptureData, read_window
from activities.specs import SpecStore
from workflows.common.errors import ErrorType
from workflows.rollout.models import CanaryRequest, CanaryStatistics


def captured_comparison(
    source: CaptureSource,
    home: Path,
    request: CanaryRequest,
    heartbeat: Callable[[str], None],
) -> CanaryStatistics | None:
    """Both variants' captured answers of the window, compared; None without a spec."""
    spec = SpecStore(home).get(request.model)
    if spec is None:
        return None
    since = min(request.champion.since, request.challenger.since)
    source.sync(spec, since, datetime.now(UTC), heartbeat)
    directory = capture_dir(home, spec)
    try:
        champion = read_window(directory, request.champion, by_time=True)
        challenger = read_window(directory, request.challenger, by_time=True)
    except InvalidCaptureData as error:
        raise ApplicationError(
            f"{request.model}: {error}", type=ErrorType.INVALID_CAPTURE_DATA, non_retryable=True
        ) from error
    heartbeat(f"captured: {champion.size} champion, {challenger.size} challenger answers")
    return compare(
        champion,
        challenger,
        request.policy,
        seed=request.seed,
        shadow=request.challenger.shadow,
        champion_name=request.champion.variant,
        challenger_name=request.challenger.variant,
    )
