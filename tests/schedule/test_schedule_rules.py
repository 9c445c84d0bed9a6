"""Scheduled-trigger rules without Temporal: cron and settings validation, the event a run sends,
what is new in Temporal's missed/skipped counters, staleness, the alerts, partition listing."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from temporalio.client import ScheduleOverlapPolicy
from temporalio.exceptions import ApplicationError

from activities.ports import StoredObject
from activities.schedule.checks import (
    ScheduleCheckActivities,
    local_partitions,
    newest_partition,
    remote_partitions,
)
from activities.specs import SpecStore
from starters.api.schedules import check_backfill_range, overlap_policy, parse_settings
from tests.support.cloud_data import sagemaker_settings
from tests.support.loop_harness import with_changes
from workflows.coordinator.triggers import TriggerKind
from workflows.schedule.models import (
    Freshness,
    FreshnessRequest,
    OverlapPolicy,
    ScheduledRunReport,
    ScheduledTriggerInput,
    ScheduleHealth,
    ScheduleSettings,
    validate_cron,
)
from workflows.schedule.rules import (
    NewCounts,
    assess_run,
    count_new,
    is_stale,
    new_since,
    partition_end,
    schedule_alert,
    scheduled_event,
    scheduled_event_id,
    stale_alert,
    stale_alert_due,
)
from workflows.spec.models import DataSources, Feature, ModelSpec

AT = datetime(2026, 3, 10, 3, 0, tzinfo=UTC)
NOW = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)

# ------------------------------------------------------------------ validation at the edge


@pytest.mark.parametrize(
    "expression",
    [
        "0 3 * * *",
        "*/15 9-17 * * MON-FRI",
        "0 0 1 jan,jul *",
        "5,35 */2 1-7 * 0",
        "@daily",
        "0 3 * * 7",
    ],
)
def test_cron_expressions_that_temporal_understands_pass(expression: str) -> None:
    assert validate_cron(expression) == " ".join(expression.lower().split())


@pytest.mark.parametrize(
    ("expression", "error"),
    [
        ("0 3 * *", "has 4 fields"),
        ("0 0 3 * * *", "has 6 fields"),
        ("60 * * * *", "minute: 60 is outside 0-59"),
        ("0 24 * * *", "hour: 24 is outside 0-23"),
        ("0 0 0 * *", "day of month: 0 is outside 1-31"),
        ("0 0 1 13 *", "month: 13 is outside 1-12"),
        ("0 0 * * 8", "day of week: 8 is outside 0-7"),
        ("0 0 * * funday", "is not a number or a name"),
        ("30-10 * * * *", "runs backwards"),
        ("*/0 * * * *", "a step of 0"),
        ("0 3 * * * # nightly", "has 7 fields"),
        ("@every 5m", "use --every"),
        ("@fortnightly", "use one of"),
        ("CRON_TZ=Europe/Paris 0 3 * * *", "--tz"),
        ("0,,3 * * * *", "cannot read"),
    ],
)
def test_bad_cron_expressions_say_what_is_wrong(expression: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        validate_cron(expression)


def test_settings_accept_the_project_duration_shorthand() -> None:
    settings = parse_settings(
        {"every": "1h 30m", "stale_after": "2d", "jitter": "5m", "catchup_window": "90s"}
    )
    assert settings.every == timedelta(minutes=90)
    assert settings.stale_after == timedelta(days=2)
    assert settings.describe_when() == "every 1h30m"
    assert parse_settings({"cron": ["0 3 * * *"], "timezone": "Europe/Paris"}).describe_when() == (
        "0 3 * * * (Europe/Paris)"
    )


def test_bad_settings_list_every_problem_in_one_message() -> None:
    with pytest.raises(ValueError) as error:
        parse_settings({"cron": ["0 3 * *", "0 99 * * *"], "timezone": "Nowhere/Land"})
    message = str(error.value)
    assert "cron.0" in message and "has 4 fields" in message
    assert "cron.1" in message and "hour: 99" in message
    assert "unknown time zone 'Nowhere/Land'" in message


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"every": "0s"}, "every must be at least 1s"),
        ({"every": "1h", "catchup_window": "5s"}, "catchup_window must be at least 10s"),
        ({"every": "1h", "stale_after": "0s"}, "stale_after must be positive"),
        ({"every": "1h", "unknown": 1}, "unknown field 'unknown'"),
    ],
)
def test_settings_bounds(fields: dict[str, object], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_settings(fields)


def test_backfill_range_is_checked_before_any_call() -> None:
    with pytest.raises(ValueError, match="need a time zone"):
        check_backfill_range(datetime(2026, 1, 1), datetime(2026, 1, 2, tzinfo=UTC))
    with pytest.raises(ValueError, match="is not before end"):
        check_backfill_range(AT, AT)
    with pytest.raises(ValueError, match="in the future"):
        check_backfill_range(AT, datetime.now(UTC) + timedelta(hours=1))
    check_backfill_range(AT - timedelta(days=1), AT)


def test_overlap_policies_map_to_temporal_by_name() -> None:
    for policy in OverlapPolicy:
        assert overlap_policy(ScheduleOverlapPolicy[policy.name]) is policy
    assert {p.name for p in OverlapPolicy} == {
        p.name for p in ScheduleOverlapPolicy if p.name != "UNSPECIFIED"
    }


# ------------------------------------------------------------------ the event


def test_event_id_is_the_model_and_the_scheduled_second_in_utc() -> None:
    paris = AT.astimezone(ZoneInfo("Europe/Paris"))
    assert scheduled_event_id("churn", AT) == "scheduled-churn-20260310T030000Z"
    assert scheduled_event_id("churn", paris) == scheduled_event_id("churn", AT)
    assert scheduled_event_id("churn", AT + timedelta(hours=1)) != scheduled_event_id("churn", AT)


def test_scheduled_event_carries_priority_and_where_it_came_from() -> None:
    settings = ScheduleSettings(cron=["0 3 * * *"], priority=2)
    event = scheduled_event(
        ScheduledTriggerInput(model="churn", settings=settings),
        AT,
        "schedule-churn",
        "scheduled-churn-2026-03-10T03:00:00Z",
    )
    assert event.kind is TriggerKind.SCHEDULED and event.source == "schedule"
    assert event.priority == 2 and event.occurred_at == AT
    assert event.metadata["schedule_id"] == "schedule-churn"
    assert event.metadata["scheduled_at"] == "2026-03-10T03:00:00+00:00"


# ------------------------------------------------------------------ missed and skipped


@pytest.mark.parametrize(
    ("total", "seen", "new"),
    [(0, None, 0), (4, None, 4), (4, 4, 0), (7, 4, 3), (2, 9, 2)],
)
def test_new_since_counts_growth_and_survives_a_reset(
    total: int, seen: int | None, new: int
) -> None:
    assert new_since(total, seen) == new


def report(workflow_id: str, missed: int, skipped: int, **fields: object) -> ScheduledRunReport:
    return ScheduledRunReport.model_validate(
        {
            "model": "churn",
            "schedule_id": "schedule-churn",
            "workflow_id": workflow_id,
            "scheduled_at": AT,
            "event_id": "e",
            "missed_total": missed,
            "skipped_total": skipped,
            **fields,
        }
    )


def health(missed: int, skipped: int, *earlier: ScheduledRunReport) -> ScheduleHealth:
    return ScheduleHealth(
        schedule_id="schedule-churn",
        exists=True,
        overlap=OverlapPolicy.SKIP,
        catchup_window=timedelta(hours=1),
        missed_total=missed,
        skipped_total=skipped,
        runs_compared=len(earlier),
        seen_missed=max((r.missed_total or 0 for r in earlier), default=None),
        seen_skipped=max((r.skipped_total or 0 for r in earlier), default=None),
        previous=earlier[-1] if earlier else None,
    )


def test_counts_are_new_relative_to_the_most_any_earlier_run_reported() -> None:
    counts = count_new(health(1, 5, report("run-a", 1, 2), report("run-b", 0, 4)))
    assert counts == NewCounts(missed=0, skipped=1, since=counts.since)
    assert counts.since.startswith("run-b") and "2 earlier runs" in counts.since


def test_first_run_counts_everything_since_the_schedule_was_created() -> None:
    counts = count_new(health(0, 3))
    assert (counts.missed, counts.skipped) == (0, 3)
    assert "creation" in counts.since


def test_a_missing_schedule_counts_nothing() -> None:
    counts = count_new(ScheduleHealth(schedule_id="schedule-churn", exists=False))
    assert not counts.any and counts.since == "schedule not found"


def test_no_alert_when_nothing_is_new() -> None:
    state = health(2, 3, report("run-a", 2, 3))
    assert schedule_alert("churn", state, count_new(state), AT) is None


def test_alert_names_the_counts_the_overlap_policy_and_the_catchup_window() -> None:
    state = health(3, 5, report("run-a", 1, 2))
    alert = schedule_alert("churn", state, count_new(state), AT)
    assert alert is not None and alert.level == "warning"
    assert alert.subject == "churn: 3 skipped and 2 missed scheduled run(s)"
    assert "3 scheduled runs skipped by the overlap policy 'skip' (5 in total)" in alert.body
    assert "2 scheduled runs missed outside the catch-up window of 1h (3 in total)" in alert.body
    assert "retrain schedule backfill churn" in alert.body
    assert "Counted since run-a" in alert.body
    # Keyed by the totals: two runs seeing the same counters notify once.
    assert alert.key == "schedule-churn-missed3-skipped5"


# ------------------------------------------------------------------ freshness


def test_a_partition_holds_data_to_the_end_of_its_utc_day() -> None:
    assert partition_end(date(2026, 3, 9)) == datetime(2026, 3, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("newest", "known", "stale_after", "stale"),
    [
        (date(2026, 3, 9), True, timedelta(days=1), False),  # ended 15 h ago
        (date(2026, 3, 8), True, timedelta(days=1), True),  # ended 39 h ago
        (None, True, timedelta(days=1), True),  # no data at all
        (date(2026, 3, 1), True, None, None),  # not asked
        (None, False, timedelta(days=1), None),  # unknown: no spec
    ],
)
def test_staleness(
    newest: date | None, known: bool, stale_after: timedelta | None, stale: bool | None
) -> None:
    freshness = Freshness(model="churn", known=known, newest_partition=newest)
    assert is_stale(freshness, NOW, stale_after) is stale


def test_stale_data_alert_once_per_newest_partition() -> None:
    day = date(2026, 3, 1)
    assert stale_alert_due(True, day, None)
    assert not stale_alert_due(False, day, None)
    assert not stale_alert_due(None, day, None)
    assert not stale_alert_due(True, day, report("a", 0, 0, stale=True, newest_partition=day))
    assert stale_alert_due(True, day, report("a", 0, 0, stale=False, newest_partition=day))
    assert stale_alert_due(
        True, day, report("a", 0, 0, stale=True, newest_partition=day - timedelta(days=1))
    )


def test_stale_alert_says_how_old_and_what_is_allowed() -> None:
    freshness = Freshness(
        model="churn", known=True, newest_partition=date(2026, 3, 1), location="data/labelled"
    )
    alert = stale_alert("churn", freshness, timedelta(days=2), NOW)
    assert alert.key == "data-stale-churn-2026-03-01"
    assert "date=2026-03-01 under data/labelled, ends 8d15h ago" in alert.body
    assert "allows 2d" in alert.body
    empty = stale_alert(
        "churn", freshness.model_copy(update={"newest_partition": None}), timedelta(days=2), NOW
    )
    assert empty.key == "data-stale-churn-none" and "No labelled partition" in empty.body


def test_newest_partition_skips_what_the_data_window_skips() -> None:
    paths = [
        "date=2026-03-01/part-0.parquet",
        "date=2026-03-04/.tmp-part.parquet",  # an atomic writer's temp file
        "date=2026-03-05/_SUCCESS",
        "date=2026-03-06/part-0.csv",
        "date=2026-03-07/nested/part-0.parquet",
        "date=2026-13-01/part-0.parquet",  # not a date
        "other/part-0.parquet",
        "date=2026-03-02/part-1.parquet",
    ]
    assert newest_partition(paths) == date(2026, 3, 2)
    assert newest_partition([]) is None


class ListingStore:
    """An object store that only lists (the freshness check never reads objects)."""

    def __init__(self, uris: list[str]) -> None:
        self.uris = uris

    def list(self, prefix_uri: str) -> list[StoredObject]:
        return [
            StoredObject(uri=u, size=1, etag="e", updated=NOW)
            for u in sorted(self.uris)
            if u.startswith(prefix_uri)
        ]

    def head(self, uri: str) -> StoredObject | None:
        return next((o for o in self.list(uri) if o.uri == uri), None)

    def download(self, uri: str, target: Path) -> StoredObject:
        raise AssertionError("freshness checks must not download")

    def upload(self, source: Path, uri: str, tags: dict[str, str] | None = None) -> StoredObject:
        raise AssertionError("freshness checks must not upload")

    def put_text(self, uri: str, text: str, content_type: str = "application/json") -> str:
        raise AssertionError("freshness checks must not write")


def spec(name: str = "churn", labelled: str = "data/labelled") -> ModelSpec:
    return ModelSpec(
        name=name,
        features=[Feature(name="x")],
        label="y",
        data=DataSources(
            labelled=labelled,
            baseline_holdout="data/baseline.parquet",
            golden_set="data/golden.parquet",
        ),
    )


def test_remote_listing_is_relative_to_the_labelled_prefix() -> None:
    store = ListingStore(
        [
            "s3://lake/churn/labelled/date=2026-03-01/a.parquet",
            "s3://lake/churn/labelled/date=2026-03-03/b.parquet",
            "s3://lake/churn/labelled-old/date=2026-03-09/c.parquet",
        ]
    )
    paths = remote_partitions(store, "s3://lake/churn/labelled")
    assert paths == ["date=2026-03-01/a.parquet", "date=2026-03-03/b.parquet"]


def test_freshness_activity_local_remote_and_unknown(tmp_path: Path) -> None:
    specs = SpecStore(tmp_path)
    store = ListingStore(["s3://lake/churn/labelled/date=2026-03-03/b.parquet"])
    activities = ScheduleCheckActivities(
        client=None,  # type: ignore[arg-type]  # freshness never calls Temporal
        home=tmp_path,
        specs=specs,
        store_for=lambda s: store if s.backend == "sagemaker" else None,
    )
    unknown = activities.freshness(FreshnessRequest(model="churn"))
    assert not unknown.known and "no registered spec" in unknown.note

    specs.register(spec())
    empty = activities.freshness(FreshnessRequest(model="churn"))
    assert empty.known and empty.newest_partition is None and empty.note == "no labelled partitions"
    day = tmp_path / "data" / "labelled" / "date=2026-03-02"
    day.mkdir(parents=True)
    (day / "part-0.parquet").write_bytes(b"PAR1")
    assert local_partitions(tmp_path / "data" / "labelled") == ["date=2026-03-02/part-0.parquet"]
    local = activities.freshness(FreshnessRequest(model="churn"))
    assert local.newest_partition == date(2026, 3, 2) and local.location == "data/labelled"

    cloud = with_changes(
        spec(),
        {
            "backend": "sagemaker",
            "sagemaker": sagemaker_settings(),
            "data": {
                "labelled": "s3://lake/churn/labelled",
                "baseline_holdout": "s3://lake/churn/baseline.parquet",
                "golden_set": "s3://lake/churn/golden.parquet",
            },
        },
    )
    specs.register(cloud)
    remote = activities.freshness(FreshnessRequest(model="churn"))
    assert remote.known and remote.newest_partition == date(2026, 3, 3)


def test_a_broken_spec_is_a_non_retryable_freshness_error(tmp_path: Path) -> None:
    specs = SpecStore(tmp_path)
    specs.directory.mkdir(parents=True)
    specs.path("churn").write_text("{not json")
    activities = ScheduleCheckActivities(
        client=None,  # type: ignore[arg-type]
        home=tmp_path,
        specs=specs,
        store_for=lambda s: None,
    )
    with pytest.raises(ApplicationError) as error:
        activities.freshness(FreshnessRequest(model="churn"))
    assert error.value.type == "InvalidModelSpec" and error.value.non_retryable


# ------------------------------------------------------------------ one run


def base_report(**fields: object) -> ScheduledRunReport:
    return ScheduledRunReport.model_validate(
        {
            "model": "churn",
            "schedule_id": "schedule-churn",
            "workflow_id": "scheduled-churn-2026-03-10T03:00:00Z",
            "scheduled_at": AT,
            "event_id": scheduled_event_id("churn", AT),
            **fields,
        }
    )


RUN_INPUT = ScheduledTriggerInput(
    model="churn", settings=ScheduleSettings(cron=["0 3 * * *"], stale_after=timedelta(days=1))
)


def test_a_run_with_skipped_runs_and_stale_data_sends_both_alerts() -> None:
    freshness = Freshness(model="churn", known=True, newest_partition=date(2026, 3, 1))
    result, alerts = assess_run(
        RUN_INPUT, base_report(), health(0, 2, report("run-a", 0, 1)), freshness, None, NOW
    )
    assert (result.skipped_total, result.skipped_new, result.missed_new) == (2, 1, 0)
    assert result.overlap is OverlapPolicy.SKIP and result.counted_since == "run-a"
    assert result.stale is True and result.newest_data_at == partition_end(date(2026, 3, 1))
    assert (
        result.alerts
        == [a.key for a in alerts]
        == [
            "schedule-churn-missed0-skipped2",
            "data-stale-churn-2026-03-01",
        ]
    )


def test_failed_checks_and_delivery_are_reported_not_fatal() -> None:
    result, alerts = assess_run(
        RUN_INPUT,
        base_report(delivery_error="no worker answered"),
        ScheduleHealth(schedule_id="schedule-churn", exists=False),
        None,
        "cannot list s3://lake/churn/labelled: AccessDenied",
        NOW,
    )
    assert [a.level for a in alerts] == ["critical"]
    assert "no worker answered" in alerts[0].body
    assert result.counted_since == "schedule not found" and result.missed_total is None
    assert result.stale is None and "AccessDenied" in result.freshness_note


def test_a_healthy_run_sends_nothing() -> None:
    freshness = Freshness(model="churn", known=True, newest_partition=date(2026, 3, 9))
    result, alerts = assess_run(
        RUN_INPUT, base_report(), health(0, 0, report("run-a", 0, 0)), freshness, None, NOW
    )
    assert alerts == [] and result.alerts == [] and result.stale is False
