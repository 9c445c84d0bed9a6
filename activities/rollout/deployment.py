"""The rollout's `shift_traffic` activity over any `ServingBackend` (rollout stages, rollbacks).

Every change is read back
from the endpoint after it is set: an endpoint that does not report what was asked fails the
activity loudly (non-retryable), since a rollout must never go on believing a split that is
not live. Changes are idempotent by `change_id` on the endpoint, so a retried activity (or a
worker restarted mid-call) never applies a stage twice.
"""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.ports import ServingBackend, TrafficRefused
from workflows.common.errors import ErrorType
from workflows.common.names import ActivityName
from workflows.rollout.models import EndpointState, TrafficChange


def live_split(weights: dict[str, int]) -> dict[str, int]:
    """Weights as compared: variants at 0% are not part of the split."""
    return {variant: weight for variant, weight in sorted(weights.items()) if weight > 0}


def check_reported(change: TrafficChange, state: EndpointState) -> None:
    """Raise unless the endpoint reports exactly the requested split and shadow."""
    wanted, reported = live_split(change.weights), live_split(state.weights)
    if wanted != reported or change.shadow != state.shadow:
        raise ApplicationError(
            f"endpoint reports weights {reported} shadow {state.shadow} (generation "
            f"{state.generation}, change {state.change_id}) after setting {wanted} shadow "
            f"{change.shadow} ({change.change_id}): traffic is not what the rollout set",
            type=ErrorType.TRAFFIC_MISMATCH,
            non_retryable=True,
        )


class DeploymentActivities:
    def __init__(self, backend: ServingBackend) -> None:
        self._backend = backend

    @activity.defn(name=ActivityName.SHIFT_TRAFFIC)
    def shift_traffic(self, change: TrafficChange) -> EndpointState:
        """Set the split, then read it back (a separate call) and insist it is what was set."""
        try:
            self._backend.set_traffic(change)
            state = self._backend.read_traffic(change.model, change.endpoint_url)
        except TrafficRefused as exc:
            raise ApplicationError(
                str(exc), type=ErrorType.TRAFFIC_REFUSED, non_retryable=True
            ) from exc
        check_reported(change, state)
        activity.logger.info(
            "%s: traffic %s shadow %s (generation %d)",
            change.model,
            live_split(state.weights),
            state.shadow,
            state.generation,
        )
        return state
