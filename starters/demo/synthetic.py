"""The demo's data: a loan-approval stream whose concept changes on a known day.

Rows come from river's Agrawal generator (nine applicant features, a 0/1 label). Before the
drift day labels follow Agrawal function 0, from the drift day on function 2:

- function 0: approve (1) iff age < 40 or age >= 60 -- about 67% positives, age only;
- function 2: the age band decides which education levels are approved (age < 40: elevel 0-1,
  40-59: elevel 1-3, 60+: elevel 2-4) -- about 53% positives, age and elevel.

Only the labelling changes; every feature keeps its distribution (pure concept drift). The
change is detectable from labelled data: the two functions agree on only about half of the
rows, so a model of the old concept drops from ~0.95 accuracy to ~0.5 on new-concept days,
and the positive rate falls from ~0.67 to ~0.53. Input-feature drift statistics alone would
not see it, which is the point of retraining on labelled windows.

A share `LABEL_NOISE` of labels is flipped so metrics are not trivially perfect; the most
recent days can keep part of their labels null (labels arrive late). Everything is a function
of the seed and the day, so a rerun writes the same bytes.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
from river.datasets import synth

from activities.loop.data_window import resolve_uri, write_parquet_atomic
from workflows.spec.models import DataSources, Feature, FeatureKind, ModelSpec

FEATURES = ("salary", "commission", "age", "elevel", "car", "zipcode", "hvalue", "hyears", "loan")
CATEGORICAL = ("elevel", "car", "zipcode")
PRE_DRIFT_FUNCTION = 0
POST_DRIFT_FUNCTION = 2
LABEL_NOISE = 0.05
LABEL = "label"
TIMESTAMP = "event_time"
# The segment column: three regions of three zipcodes each, for the error-concentration check.
SEGMENT = "region"
_REGIONS = np.array(["north", "central", "south"])
_SCHEMA = pa.schema(
    [
        *(
            (name, pa.int64() if name in (*CATEGORICAL, "age", "hyears") else pa.float64())
            for name in FEATURES
        ),
        (LABEL, pa.int64()),
        (TIMESTAMP, pa.timestamp("us", tz="UTC")),
        (SEGMENT, pa.string()),
    ]
)
# Seed streams: production days, the baseline holdout and the golden set never share rows.
_PRODUCTION, _BASELINE, _GOLDEN = 0, 1, 2


def synthetic_spec(model: str) -> ModelSpec:
    """The spec matching the generated files (data under `data/<model>/` in the home)."""
    root = f"data/{model}"
    return ModelSpec(
        name=model,
        features=[
            Feature(
                name=name,
                kind=FeatureKind.CATEGORICAL if name in CATEGORICAL else FeatureKind.NUMERIC,
            )
            for name in FEATURES
        ],
        label=LABEL,
        segment_column=SEGMENT,
        data=DataSources(
            labelled=f"{root}/labelled",
            baseline_holdout=f"{root}/baseline_holdout.parquet",
            golden_set=f"{root}/golden_set.parquet",
            timestamp_column=TIMESTAMP,
        ),
    )


def concept_on(day: date, drift_day: date | None) -> int:
    """The Agrawal function labelling `day`: the new one from `drift_day` on."""
    return POST_DRIFT_FUNCTION if drift_day is not None and day >= drift_day else PRE_DRIFT_FUNCTION


def generate_rows(
    day: date,
    rows: int,
    *,
    function: int,
    seed: int,
    stream: int = _PRODUCTION,
    part: int = 0,
    unlabelled_share: float = 0.0,
    between: tuple[datetime, datetime] | None = None,
) -> pa.Table:
    """`rows` rows of `day` (event times spread through it, or through `between`, a stretch of
    that day), deterministic for the arguments."""
    sequence = np.random.SeedSequence([seed, stream, day.toordinal(), part])
    river_seed = int(sequence.generate_state(1)[0])
    rng = np.random.default_rng(sequence)
    samples = list(synth.Agrawal(classification_function=function, seed=river_seed).take(rows))
    columns = {name: [x[name] for x, _ in samples] for name in FEATURES}
    labels = np.array([y for _, y in samples], dtype=np.int64)
    labels = np.where(rng.random(rows) < LABEL_NOISE, 1 - labels, labels)
    low, high = 0.0, 86_400.0
    if between is not None:
        midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
        low, high = ((moment - midnight).total_seconds() for moment in between)
        if not 0 <= low <= high <= 86_400:
            raise ValueError(f"{between} is not a stretch of {day}")
    seconds = np.sort(rng.uniform(low, high, rows))
    times = np.datetime64(day.isoformat(), "us") + (seconds * 1e6).astype("timedelta64[us]")
    zipcodes = np.array(columns["zipcode"], dtype=np.int64)
    return pa.table(
        {
            **columns,
            LABEL: pa.array(labels, mask=rng.random(rows) < unlabelled_share),
            TIMESTAMP: times,
            SEGMENT: _REGIONS[zipcodes // 3],
        },
        schema=_SCHEMA,
    )


def write_day(
    home: Path,
    spec: ModelSpec,
    day: date,
    *,
    function: int,
    rows: int,
    seed: int,
    part: int = 0,
    unlabelled_share: float = 0.0,
    between: tuple[datetime, datetime] | None = None,
) -> Path:
    """Write `date=<day>/part-<part>.parquet` under the spec's labelled directory."""
    table = generate_rows(
        day,
        rows,
        function=function,
        seed=seed,
        part=part,
        unlabelled_share=unlabelled_share,
        between=between,
    )
    path = resolve_uri(home, spec.data.labelled) / f"date={day.isoformat()}/part-{part}.parquet"
    write_parquet_atomic(table, path)
    return path


def write_demo_dataset(
    home: Path,
    model: str,
    start: date,
    days: int,
    drift_day: date | None,
    rows_per_day: int = 400,
    seed: int = 0,
    *,
    label_delay_days: int = 2,
    unlabelled_share: float = 0.5,
    baseline_rows: int = 10_000,
    golden_rows: int = 2_000,
) -> ModelSpec:
    """Write `days` daily partitions from `start`, the baseline holdout and the golden set.

    Days from `drift_day` on follow the new concept; the last `label_delay_days` days keep
    `unlabelled_share` of their labels null. The baseline holdout and the golden set are drawn
    from the old concept on the day before `start`. Returns the matching spec.
    """
    spec = synthetic_spec(model)
    for offset in range(days):
        day = start + timedelta(days=offset)
        write_day(
            home,
            spec,
            day,
            function=concept_on(day, drift_day),
            rows=rows_per_day,
            seed=seed,
            unlabelled_share=unlabelled_share if offset >= days - label_delay_days else 0.0,
        )
    before = start - timedelta(days=1)
    for stream, rows, uri in (
        (_BASELINE, baseline_rows, spec.data.baseline_holdout),
        (_GOLDEN, golden_rows, spec.data.golden_set),
    ):
        table = generate_rows(before, rows, function=PRE_DRIFT_FUNCTION, seed=seed, stream=stream)
        write_parquet_atomic(table, resolve_uri(home, uri))
    return spec


def append_fresh_data(
    home: Path,
    spec: ModelSpec,
    *,
    part: int,
    day: date | None = None,
    rows: int = 400,
    seed: int = 0,
) -> str:
    """Land one more fully labelled file of the new concept (a `data_arrived` event's object).

    It goes into `day`'s partition (default: today, UTC) as `part-<part>.parquet`, beside the
    day's regular `part-0`; returns its absolute path.
    """
    when = day or datetime.now(UTC).date()
    path = write_day(
        home, spec, when, function=POST_DRIFT_FUNCTION, rows=rows, seed=seed, part=part
    )
    return str(path.resolve())
