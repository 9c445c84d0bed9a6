"""The canary analysis activity (`analyse_canary`) of a staged rollout.

Asks the endpoint to write its buffered capture (so the window holds every answer served so
far), reads the champion's and the challenger's windows from the capture files and measures
them (`activities.rollout.statistics.compare`). The verdict is the workflow's
(`workflows.rollout.rules.canary_verdict`). The request's capture directory is the spec's
(`ModelSpec.data.capture_location`): relative to the retrain home unless absolute. A synchronous
activity: the worker runs it in its thread pool. Unreadable capture files are a non-retryable
`InvalidCaptureData` error; a failing flush or a vanished file is retried under the workflow's
retry policy.
"""

from __future__ import annotations

from temporalio import activity

from activities.ports import CanarySource
from workflows.common.names import ActivityName
from workflows.rollout.models import CanaryRequest, CanaryStatistics


class CanaryActivities:
    def __init__(self, source: CanarySource) -> None:
        self.source = source

    @activity.defn(name=ActivityName.ANALYSE_CANARY)
    def analyse(self, request: CanaryRequest) -> CanaryStatistics:
        return self.source.analyse(request, activity.heartbeat)
