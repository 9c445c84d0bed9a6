"""Record the RetrainingLoop histories that tests/test_replay.py replays (`make histories`).

Real loops on the local backend, on the time-skipping server: one that waits for approval
(a refused signal, a reminder, then an approval) and is deployed, and one a guardrail rejects.
"""

from __future__ import annotations

import asyncio
import sysconfig
import tempfile
import uuid
from pathlib import Path

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from tests.support.helpers import eventually
from tests.support.loop_harness import (
    awaiting_approval,
    register,
    start_loop,
    with_changes,
    write_dataset,
)
from workers.search_attributes import ensure_search_attributes
from workers.worker import build_worker

HERE = Path(__file__).parent


async def record() -> None:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(Path(sysconfig.get_path("scripts")) / "temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    try:
        await ensure_search_attributes(env.client)
        today = (await env.get_current_time()).date()
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp)
            task_queue = f"record-{uuid.uuid4().hex[:8]}"
            approved, gated = "replay-approved", "replay-gated"
            register(
                home,
                with_changes(
                    write_dataset(home, approved, today),
                    {"loop": {"approval": {"reviewers": ["ana"], "reminder_every": "1m"}}},
                ),
            )
            register(
                home,
                with_changes(
                    write_dataset(home, gated, today),
                    {"loop": {"guardrails": {"golden_floor": 0.999}}},
                ),
            )
            async with build_worker(env.client, home=home, task_queue=task_queue):
                handle = await start_loop(env.client, task_queue, approved)
                await eventually(lambda: awaiting_approval(handle), timeout=120, what="approval")
                await handle.signal("approve", {"reviewer": "eve"})
                await env.sleep(90)  # one reminder
                await handle.signal("approve", {"reviewer": "ana", "comment": "replay"})
                await handle.result()
                gated_handle = await start_loop(env.client, task_queue, gated)
                await gated_handle.result()
            for name, h in (("approved", handle), ("rejected-by-gate", gated_handle)):
                history = await h.fetch_history()
                (HERE / f"retraining-loop-{name}.json").write_text(history.to_json())
                print(f"recorded retraining-loop-{name}.json ({len(history.events)} events)")
    finally:
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(record())
