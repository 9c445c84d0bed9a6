"""`retrain simulate SPEC STREAM`: what the model's coordinator would have decided on a labelled
stream, and what it would have cost against never retraining, fixed periods and the oracle.

The numpy side of the simulator: the stream (`starters.api.streams.load_parquet`: features,
label, timestamps, in decision periods), its prequential error matrix (a stand-in model, a
scikit-learn decision tree, trained at the end of every batch on the last `window` batches and
scored on every later batch: the same protocol as `bench/decision_quality`), then the pure
replay (`workflows.coordinator.simulation.simulate`: the coordinator's rules and the adaptive
policy of the spec's trigger policy), the baselines' costs, and a self-contained HTML page with
an SVG plot of the error rate over time and the retraining points.

Money: an error costs `adaptive.value_per_error`; a retraining the trigger policy's cost model
estimate plus `adaptive.retraining_overhead` (what the coordinator uses), both in
`cost.currency`. Every row of the stream counts as served and labelled.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from starters.api.streams import Stream, StreamError, load_parquet
from workflows.coordinator.policy import AdaptiveSettings, TriggerPolicy
from workflows.coordinator.simulation import (
    UNDEFINED,
    ErrorMatrix,
    SimulatedDecision,
    oracle,
    periodic,
    schedule_cost,
    simulate,
)
from workflows.spec.models import ModelSpec, Task

if TYPE_CHECKING:
    from sklearn.tree import DecisionTreeClassifier  # type: ignore[import-untyped, unused-ignore]

WINDOW = 5  # batches a model is trained on
PERIODS = (1, 2, 3, 5, 7, 10, 14, 21, 30)


def make_model() -> DecisionTreeClassifier:
    # Imported here: the CLI imports this module and starts without scikit-learn.
    from sklearn.tree import DecisionTreeClassifier  # type: ignore[import-untyped, unused-ignore]

    return DecisionTreeClassifier(max_depth=8, min_samples_leaf=5, random_state=0)


class _Constant:
    """A stream window with a single class: predict it (a tree needs two classes)."""

    def __init__(self, label: int) -> None:
        self.label = label
        self.classes_ = np.array([label])

    def predict(self, features: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        return np.full(features.shape[0], self.label, dtype=np.int64)

    def predict_proba(self, features: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.ones((features.shape[0], 1), dtype=np.float64)


class Models:
    """The models of a stream, fitted once, and their row-level errors on demand."""

    def __init__(self, stream: Stream, window: int = WINDOW) -> None:
        if stream.batches < window + 2:
            raise StreamError(
                f"{stream.name}: {stream.batches} batches; at least {window + 2} are needed "
                f"(a {window}-batch training window, then two served batches)"
            )
        self.stream = stream
        self.window = window
        self.slices = stream.batch_slices()
        self.fitted: dict[int, Any] = {}

    def training_rows(self, i: int) -> slice:
        return slice(self.slices[i - self.window + 1].start, self.slices[i].stop)

    def model(self, i: int) -> Any:
        if i not in self.fitted:
            rows = self.training_rows(i)
            labels = self.stream.labels[rows]
            if np.unique(labels).size < 2:
                self.fitted[i] = _Constant(int(labels[0]))
            else:
                self.fitted[i] = make_model().fit(self.stream.features[rows], labels)
        return self.fitted[i]

    def row_errors(self, i: int, j: int) -> npt.NDArray[np.bool_]:
        rows = self.slices[j]
        predicted = self.model(i).predict(self.stream.features[rows])
        return np.asarray(predicted != self.stream.labels[rows])

    def matrix(self) -> list[list[int]]:
        stream, t = self.stream, self.stream.batches
        errors = np.full((t, t), UNDEFINED, dtype=np.int64)
        starts = np.array([s.start for s in self.slices], dtype=np.int64)
        for i in range(self.window - 1, t - 1):
            future = slice(self.slices[i + 1].start, stream.features.shape[0])
            wrong = self.model(i).predict(stream.features[future]) != stream.labels[future]
            errors[i, i + 1 :] = np.add.reduceat(
                wrong.astype(np.int64), starts[i + 1 :] - future.start
            )
        return [[int(v) for v in row] for row in errors]


def error_matrix(stream: Stream, window: int = WINDOW) -> ErrorMatrix:
    counts = [s.stop - s.start for s in stream.batch_slices()]
    return ErrorMatrix(counts=counts, errors=Models(stream, window).matrix(), window=window)


# ---- the report ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyCost:
    name: str
    retrainings: int
    errors: int
    cost: float  # in money
    ratio: float  # cost / the oracle's cost
    schedule: list[int] = field(default_factory=list)


@dataclass
class SimulationReport:
    model: str
    stream: str
    batches: int
    window: int
    currency: str
    value_per_error: float
    retraining_cost: float
    decisions: list[SimulatedDecision]
    costs: list[PolicyCost]
    # Per served batch: its end, its rows, and the error rate of the model serving it under
    # the adaptive policy, never retraining and the oracle.
    ends: list[str]
    rows: list[int]
    rates: dict[str, list[float]]
    matrix_seconds: float
    decision_seconds: float

    def cost_of(self, name: str) -> PolicyCost:
        return next(c for c in self.costs if c.name == name)

    @property
    def retrainings(self) -> list[SimulatedDecision]:
        """The adaptive decisions that started a retraining."""
        return [d for d in self.decisions if d.loop_id is not None and "retrain" in d.numbers]


def adaptive_policy(spec: ModelSpec, value_per_error: float | None) -> TriggerPolicy:
    """The spec's trigger policy, adaptive: with `value_per_error` given, it sets (or
    overrides) the adaptive settings; without, the spec must have them."""
    policy = spec.trigger_policy
    if value_per_error is not None:
        settings = policy.adaptive or AdaptiveSettings(value_per_error=value_per_error)
        changes = {
            "mode": "adaptive",
            "adaptive": {**settings.model_dump(mode="json"), "value_per_error": value_per_error},
        }
        return policy.with_changes(changes)
    if policy.mode != "adaptive" or policy.adaptive is None:
        raise ValueError(
            f"the spec of {spec.name} is not adaptive (trigger_policy.mode = {policy.mode!r}, "
            "no adaptive.value_per_error): give --value-per-error to simulate its adaptive "
            "policy with its cost model"
        )
    return policy


def load_stream(
    spec: ModelSpec,
    path: Path,
    *,
    period: str | None = None,
    batch_size: int | None = None,
    label: str | None = None,
    time_column: str | None = None,
) -> Stream:
    """The stream in decision periods: the spec's label and timestamp column (or the ones
    given), its features when the file has them all (else every other column)."""
    if spec.task is not Task.CLASSIFICATION:
        raise StreamError("the simulator replays classifiers (0/1 errors); this is a regressor")
    if not path.exists():
        raise StreamError(f"no stream file {path}")
    import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]

    try:
        names = set(pq.read_schema(path).names)
    except (OSError, ValueError) as error:
        raise StreamError(f"cannot read {path}: {error}") from error
    features = spec.feature_names if set(spec.feature_names) <= names else None
    return load_parquet(
        path,
        label or spec.label,
        time_column or spec.data.timestamp_column,
        batch_size=batch_size,
        period=period,
        features=features,
    )


def run(
    spec: ModelSpec,
    stream: Stream,
    *,
    value_per_error: float | None = None,
    window: int = WINDOW,
) -> SimulationReport:
    """Simulate the spec's adaptive policy on the stream, with the baselines' costs."""
    policy = adaptive_policy(spec, value_per_error)
    assert policy.adaptive is not None
    started = time.perf_counter()
    matrix = error_matrix(stream, window)
    built = time.perf_counter()
    result = simulate(policy, matrix, stream.batch_end, model=spec.name)
    decided = time.perf_counter()

    value = policy.adaptive.value_per_error
    retraining = policy.retraining_cost()
    in_errors = retraining / value
    oracle_errors_cost, oracle_schedule = oracle(matrix, in_errors)
    schedules: dict[str, list[int]] = {
        "adaptive": result.schedule,
        "oracle": oracle_schedule,
        "never": [],
        "every_batch": periodic(matrix, 1),
    }
    best_period, best_cost = None, float("inf")
    for period in PERIODS:
        cost, _ = schedule_cost(matrix, periodic(matrix, period), in_errors)
        if cost < best_cost:
            best_period, best_cost = period, cost
    if best_period is not None:
        schedules[f"best_period ({best_period})"] = periodic(matrix, best_period)
    costs = []
    for name, schedule in schedules.items():
        cost, errors = schedule_cost(matrix, schedule, in_errors)
        retrainings = len([b for b in schedule if matrix.window <= b < matrix.batches - 1])
        costs.append(
            PolicyCost(
                name=name,
                retrainings=retrainings,
                errors=errors,
                cost=round(cost * value, 6),
                ratio=cost / oracle_errors_cost if oracle_errors_cost > 0 else 1.0,
                schedule=schedule,
            )
        )
    served = range(matrix.window, matrix.batches)
    return SimulationReport(
        model=spec.name,
        stream=stream.description,
        batches=matrix.batches,
        window=matrix.window,
        currency=policy.cost.currency,
        value_per_error=value,
        retraining_cost=retraining,
        decisions=result.decisions,
        costs=costs,
        ends=[stream.batch_end[j].isoformat() for j in served],
        rows=[matrix.counts[j] for j in served],
        rates={name: _rates(matrix, schedules[name]) for name in ("adaptive", "never", "oracle")},
        matrix_seconds=round(built - started, 3),
        decision_seconds=round(decided - built, 4),
    )


def _rates(matrix: ErrorMatrix, schedule: list[int]) -> list[float]:
    when = set(schedule)
    serving, rates = matrix.first, []
    for j in range(matrix.window, matrix.batches):
        rates.append(matrix.errors[serving][j] / matrix.counts[j])
        if j in when:
            serving = j
    return rates


# ---- the plot ------------------------------------------------------------------------------

_WIDTH, _HEIGHT, _PAD = 900, 320, 44
_STYLE = {
    "adaptive": ("#1f6feb", ""),
    "never": ("#8b949e", "6 4"),
    "oracle": ("#2da44e", "2 3"),
}


def render_svg(report: SimulationReport) -> str:
    """The error rate of the serving model per batch (adaptive, never, oracle) with the adaptive
    policy's retraining points: a self-contained SVG."""
    n = len(report.ends)
    top = max(max(rates) for rates in report.rates.values()) or 1.0

    def x(index: float) -> float:
        return _PAD + (_WIDTH - 2 * _PAD) * (index / max(n - 1, 1))

    def y(rate: float) -> float:
        return _HEIGHT - _PAD - (_HEIGHT - 2 * _PAD) * (rate / top)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{_HEIGHT}" '
        f'viewBox="0 0 {_WIDTH} {_HEIGHT}" font-family="sans-serif" font-size="11">',
        f'<rect width="{_WIDTH}" height="{_HEIGHT}" fill="white"/>',
        f'<line x1="{_PAD}" y1="{_HEIGHT - _PAD}" x2="{_WIDTH - _PAD}" y2="{_HEIGHT - _PAD}" '
        'stroke="#444"/>',
        f'<line x1="{_PAD}" y1="{_PAD}" x2="{_PAD}" y2="{_HEIGHT - _PAD}" stroke="#444"/>',
    ]
    for tick in range(5):
        rate = top * tick / 4
        parts.append(
            f'<text x="{_PAD - 6}" y="{y(rate) + 4:.1f}" text-anchor="end">{rate:.0%}</text>'
        )
    first = report.ends[0][:10] if report.ends else ""
    last = report.ends[-1][:10] if report.ends else ""
    parts.append(f'<text x="{_PAD}" y="{_HEIGHT - _PAD + 16}">{html.escape(first)}</text>')
    parts.append(
        f'<text x="{_WIDTH - _PAD}" y="{_HEIGHT - _PAD + 16}" text-anchor="end">'
        f"{html.escape(last)}</text>"
    )
    parts.append(
        f'<text x="{_WIDTH / 2}" y="{_HEIGHT - 8}" text-anchor="middle">served batch '
        "(decision period)</text>"
    )
    for batch in report.cost_of("adaptive").schedule:
        index = batch - report.window + 0.5
        parts.append(
            f'<line x1="{x(index):.1f}" y1="{_PAD}" x2="{x(index):.1f}" y2="{_HEIGHT - _PAD}" '
            'stroke="#d29922" stroke-width="1"><title>retrained after batch '
            f"{batch}</title></line>"
        )
    for name, (color, dash) in _STYLE.items():
        points = " ".join(f"{x(i):.1f},{y(r):.1f}" for i, r in enumerate(report.rates[name]))
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(
            f'<polyline fill="none" stroke="{color}" stroke-width="1.6"{dashes} points="{points}"/>'
        )
    for k, (name, (color, dash)) in enumerate(_STYLE.items()):
        left = _PAD + 10 + 150 * k
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(
            f'<line x1="{left}" y1="{_PAD - 18}" x2="{left + 24}" y2="{_PAD - 18}" '
            f'stroke="{color}" stroke-width="2"{dashes}/>'
            f'<text x="{left + 30}" y="{_PAD - 14}">{name}</text>'
        )
    parts.append(
        f'<line x1="{_PAD + 460}" y1="{_PAD - 24}" x2="{_PAD + 460}" y2="{_PAD - 12}" '
        f'stroke="#d29922"/><text x="{_PAD + 466}" y="{_PAD - 14}">adaptive retraining</text>'
    )
    parts.append("</svg>")
    return "\n".join(parts)


def render_html(report: SimulationReport) -> str:
    """A self-contained page: the plot, the costs, every retraining and why. No scripts,
    nothing fetched."""
    rows = "".join(
        f"<tr><td>{html.escape(c.name)}</td><td>{c.retrainings}</td><td>{c.errors:,}</td>"
        f"<td>{c.cost:,.2f} {html.escape(report.currency)}</td><td>{c.ratio:.3f}</td></tr>"
        for c in report.costs
    )
    retrainings = "".join(
        f"<tr><td>{d.batch}</td><td>{html.escape(d.at.isoformat())}</td>"
        f"<td>{html.escape(d.action.value)}</td><td>{html.escape(d.message)}</td></tr>"
        for d in report.decisions
        if d.action.value != "ignore"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>retrain simulate {html.escape(report.model)}</title>"
        "<style>body{font-family:sans-serif;margin:24px}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:13px}</style>"
        f"</head><body><h1>{html.escape(report.model)}: simulated decisions</h1>"
        f"<p>{html.escape(report.stream)}; a model trained on the last {report.window} "
        f"batches; an error costs {report.value_per_error:g} {html.escape(report.currency)}, "
        f"a retraining {report.retraining_cost:g} {html.escape(report.currency)}.</p>"
        f"{render_svg(report)}"
        "<h2>Cost</h2><table><tr><th>policy</th><th>retrainings</th><th>errors</th>"
        f"<th>cost</th><th>cost / oracle</th></tr>{rows}</table>"
        "<h2>Decisions (retrain, and what the limits made of it)</h2><table><tr><th>batch</th>"
        f"<th>at</th><th>action</th><th>why</th></tr>{retrainings}</table>"
        "</body></html>\n"
    )
