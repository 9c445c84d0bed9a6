"""`retrain dlq replay`: deliver dead letters again, through Temporal, from any process.

Entries without a model are routed again first (a spec registered since may match). Each
delivered entry is removed; each failure keeps its entry with the new reason, the time and
the attempts added (an event the coordinator refused for now, its backlog being full, too:
replay again later). Coordinators deduplicate by event id, so replaying is safe to repeat.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from starters.gateway import dead_letters
from starters.gateway.database import now_text, transaction
from starters.gateway.delivery import (
    DeliveryPolicy,
    Failure,
    Outcomes,
    parse_events,
    send_grouped,
)
from starters.gateway.routing import RouteKeys, SpecRouter
from starters.gateway.temporal import TemporalLink
from workflows.common.names import validate_model_name


@dataclass
class ReplayReport:
    delivered: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    # Ids asked for that are not in the store.
    missing: list[int] = field(default_factory=list)


def _route(letter: dead_letters.DeadLetter, router: SpecRouter) -> tuple[str | None, str | None]:
    """(model, None) or (None, why not)."""
    if letter.model is not None:
        try:
            return validate_model_name(letter.model), None
        except ValueError as err:
            return None, str(err)
    try:
        keys = RouteKeys(**json.loads(letter.route))
    except (ValueError, TypeError) as err:
        return None, f"stored routing keys are unreadable: {err}"
    route = router.route(keys)
    return route.model, route.reason


async def replay(
    conn: sqlite3.Connection,
    link: TemporalLink,
    router: SpecRouter,
    ids: Sequence[int] | None,
    policy: DeliveryPolicy,
) -> ReplayReport:
    """Replay the dead letters `ids` (all of them when None)."""
    letters = dead_letters.select(conn, ids)
    report = ReplayReport()
    if ids is not None:
        report.missing = sorted(set(ids) - {letter.id for letter in letters})
    groups: dict[str, list[dead_letters.DeadLetter]] = defaultdict(list)
    failures: list[tuple[Failure[int], str | None]] = []
    for letter in letters:
        model, reason = _route(letter, router)
        if model is None:
            failures.append((Failure([letter.id], reason or "no model", 0), None))
        else:
            groups[model].append(letter)

    for model, group in groups.items():
        valid, invalid = parse_events([(letter.id, letter.event) for letter in group])
        failures.extend((failure, model) for failure in invalid)

        async def sent(outcomes: Outcomes[int], model: str = model) -> None:
            with transaction(conn):
                dead_letters.remove(conn, outcomes.delivered)
            report.delivered.extend(outcomes.delivered)
            for key, reason in outcomes.later:
                failures.append((Failure([key], reason, policy.attempts), model))
            failures.extend((failure, model) for failure in outcomes.failed)

        await send_grouped(link, model, valid, policy, sent, retries=True)

    now = now_text()
    with transaction(conn):
        for failure, model in failures:
            dead_letters.failed_again(
                conn, failure.keys, failure.reason, failure.attempts, now, model=model
            )
    for failure, _ in failures:
        report.failed.update(dict.fromkeys(failure.keys, failure.reason))
    return report
