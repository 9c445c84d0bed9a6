"""The workflow sandbox every worker and replayer uses.

Daily limits roll over in the policy's time zone, so workflow code needs real `ZoneInfo`
objects; the default sandbox hands out restricted proxies that `datetime.astimezone` refuses.
Reading the zone database is deterministic, so unrestricting it is safe.
"""

from __future__ import annotations

import dataclasses

from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions


def workflow_runner() -> SandboxedWorkflowRunner:
    members = SandboxRestrictions.invalid_module_members_default.with_child_unrestricted(
        "zoneinfo", "ZoneInfo"
    )
    restrictions = dataclasses.replace(
        SandboxRestrictions.default, invalid_module_members=members
    ).with_passthrough_modules("pydantic", "pydantic_core", "annotated_types")
    return SandboxedWorkflowRunner(restrictions=restrictions)
