"""The loop's `train_candidate` activity over any `TrainingBackend`."""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import CancelledError

from activities.ports import TrainingBackend
from workflows.common import metrics
from workflows.common.names import ActivityName
from workflows.loop.models import TrainingJob, TrainingResult


class TrainingActivities:
    def __init__(self, backend: TrainingBackend) -> None:
        self.backend = backend

    # Cancellation is checked at each heartbeat rather than raised at an arbitrary point of the
    # thread, so it can never land between starting the runner and recording it.
    @activity.defn(name=ActivityName.TRAIN_CANDIDATE, no_thread_cancel_exception=True)
    def train(self, job: TrainingJob) -> TrainingResult:
        result = self.backend.train(job, _heartbeat)
        if not result.reused:  # a reused job was measured by the attempt that ran it
            meter = metrics.activity_meter()
            labels = {"model": job.request.model, "backend": result.backend}
            metrics.observe(meter, metrics.TRAINING_DURATION, labels, result.duration_seconds)
            if result.cost is not None:
                metrics.observe(meter, metrics.TRAINING_COST, labels, result.cost)
        return result


def _heartbeat(progress: str) -> None:
    activity.heartbeat(progress)
    if activity.is_cancelled():
        raise CancelledError("training cancelled")
