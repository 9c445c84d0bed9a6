"""The Python client API for staged rollouts: status and the operator commands.

rollouts = Rollouts(client)
await rollouts.command("churn", "abort", RolloutCommand(operator="ana", reason="p99 alarms"))
"""

from __future__ import annotations

from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError

from starters.api.connection import workflow_missing
from starters.api.coordinators import Coordinators
from workflows.common import names
from workflows.rollout.models import CommandRecord, RolloutCommand, RolloutVerb, RolloutView
from workflows.rollout.workflow import StagedRollout


class RolloutNotFound(LookupError):
    """No such rollout, or none running for the model; the message says which."""


_UPDATES = {
    "pause": StagedRollout.pause,
    "resume": StagedRollout.resume,
    "approve": StagedRollout.approve,
    "promote": StagedRollout.promote,
    "abort": StagedRollout.abort,
}


class Rollouts:
    def __init__(self, client: Client) -> None:
        self.client = client

    def handle(self, model: str, number: int) -> WorkflowHandle[StagedRollout, object]:
        rollout_id = names.rollout_id(names.validate_model_name(model), number)
        return self.client.get_workflow_handle_for(StagedRollout.run, rollout_id)

    async def current(self, model: str) -> int:
        """The number of the model's rollout in progress (that of its active loop)."""
        active = (await Coordinators(self.client).status(model)).active_loop
        if active is None:
            raise RolloutNotFound(f"model {model!r} has no active loop, so no rollout runs")
        return names.loop_number(active)

    async def view(self, model: str, number: int | None = None) -> RolloutView:
        number = number or await self.current(model)
        try:
            return await self.handle(model, number).query(StagedRollout.status)
        except RPCError as err:
            if workflow_missing(err):
                raise RolloutNotFound(f"no rollout {names.rollout_id(model, number)}") from None
            raise

    async def command(
        self, model: str, verb: RolloutVerb, command: RolloutCommand, number: int | None = None
    ) -> CommandRecord:
        """Send through the update, so a refused command comes back as an error."""
        number = number or await self.current(model)
        try:
            return await self.handle(model, number).execute_update(_UPDATES[verb], command)
        except RPCError as err:
            if workflow_missing(err):
                rollout = names.rollout_id(model, number)
                raise RolloutNotFound(f"no running rollout {rollout}") from None
            raise
