"""The evaluation activity on real scikit-learn models and real Parquet files.

Datasets are drawn with numpy; a logistic-regression Pipeline (candidate) and a shallow tree
(champion, whose tied probabilities exercise ROC-AUC's tie handling) are trained, pickled with
joblib and loaded back through the activity's `load_model`, as the registry's loader would.
Every metric is checked against `sklearn.metrics`, on the full sample and on bootstrap resamples.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib  # type: ignore[import-untyped]
import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from sklearn import metrics as skm  # type: ignore[import-untyped]
from sklearn.compose import ColumnTransformer  # type: ignore[import-untyped]
from sklearn.linear_model import LinearRegression, LogisticRegression  # type: ignore[import-untyped]
from sklearn.pipeline import Pipeline  # type: ignore[import-untyped]
from sklearn.preprocessing import OneHotEncoder  # type: ignore[import-untyped]
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor  # type: ignore[import-untyped]
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.loop import evaluation
from activities.loop.evaluation import (
    FALSE_NEGATIVE,
    FALSE_POSITIVE,
    ClassifierOutcome,
    EvaluationActivities,
    LabelledSet,
    Outcome,
    RegressorOutcome,
    bootstrap_deltas,
    count_errors,
    metric_values,
    point_metrics,
    predict,
    prediction_bin_edges,
    prediction_counts,
    read_labelled_set,
    resample_weights,
    shared_classes,
)
from workflows.common.errors import ErrorType
from workflows.loop.models import DatasetFile, EvaluationRequest, GoldenSet, ModelVersion
from workflows.loop.rules import BASELINE, GOLDEN, HOLDOUT, gate_verdict
from workflows.spec.models import EvaluationPolicy, Metric, ModelSpec, Task

FEATURES = ["x1", "x2", "channel"]
CHANNELS = np.array(["web", "store", "phone"])
REGIONS = np.array(["north", "south", "east"])
CLASSIFICATION_METRICS = [m for m in Metric if m.task is Task.CLASSIFICATION]
REGRESSION_METRICS = [m for m in Metric if m.task is Task.REGRESSION]
TOLERANCE = 1e-9


# ---- data and models -----------------------------------------------------------------------


def make_frame(rows: int, task: Task, *, classes: int = 2, seed: int = 0) -> pd.DataFrame:
    """Two numeric features, one categorical, a region segment and a label that depends on all."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=rows), rng.normal(size=rows)
    channel = rng.choice(CHANNELS, size=rows)
    signal = 1.5 * x1 - x2 + 0.8 * (channel == "web")
    if task is Task.REGRESSION:
        label: Any = signal + rng.normal(scale=0.5, size=rows)
    elif classes == 2:
        label = (rng.random(rows) < 1 / (1 + np.exp(-signal))).astype(np.int64)
    else:
        noisy = signal + rng.normal(scale=0.7, size=rows)
        label = np.digitize(noisy, np.quantile(noisy, np.linspace(0, 1, classes + 1)[1:-1]))
    return pd.DataFrame(
        {
            "x1": x1,
            "x2": x2,
            "channel": channel,
            "region": rng.choice(REGIONS, size=rows, p=[0.5, 0.3, 0.2]),
            "event_time": pd.date_range("2024-06-01", periods=rows, freq="min", tz="UTC"),
            "label": label,
        }
    )


def candidate_model(task: Task) -> Pipeline:
    encode = ColumnTransformer(
        [("channel", OneHotEncoder(handle_unknown="ignore"), ["channel"])],
        remainder="passthrough",
    )
    estimator = LinearRegression() if task is Task.REGRESSION else LogisticRegression()
    return Pipeline([("encode", encode), ("model", estimator)])


def champion_model(task: Task) -> Any:
    if task is Task.REGRESSION:
        return DecisionTreeRegressor(max_depth=2, random_state=0)
    return DecisionTreeClassifier(max_depth=2, random_state=0)


def make_spec(task: Task) -> ModelSpec:
    metrics = CLASSIFICATION_METRICS if task is Task.CLASSIFICATION else REGRESSION_METRICS
    golden_metric = "accuracy" if task is Task.CLASSIFICATION else "rmse"
    return ModelSpec.model_validate(
        {
            "name": "churn",
            "task": task,
            "features": [
                {"name": "x1"},
                {"name": "x2"},
                {"name": "channel", "kind": "categorical"},
            ],
            "label": "label",
            "segment_column": "region",
            "data": {
                "labelled": "data/labelled",
                "baseline_holdout": "data/baseline.parquet",
                "golden_set": "data/golden.parquet",
            },
            "loop": {
                "evaluation": {"metrics": metrics, "bootstrap_samples": 200},
                "guardrails": {"golden_metric": golden_metric, "baseline_metric": golden_metric},
            },
        }
    )


def load_with_joblib(version: ModelVersion) -> Any:
    return joblib.load(version.source)


@dataclass
class Workspace:
    home: Path
    spec: ModelSpec
    request: EvaluationRequest
    candidate: Any
    champion: Any

    def activities(self) -> EvaluationActivities:
        return EvaluationActivities(self.home, load_with_joblib)

    def read(self, name: str) -> LabelledSet:
        path = self.home / "data" / f"{name}.parquet"
        return read_labelled_set(name, path, self.spec, with_segments=True)


def make_workspace(
    home: Path, task: Task = Task.CLASSIFICATION, *, classes: int = 2, with_champion: bool = True
) -> Workspace:
    """Train both models, pickle them, and write holdout/baseline/golden files under `home`."""
    spec = make_spec(task)
    train = make_frame(2000, task, classes=classes, seed=1)
    candidate = candidate_model(task).fit(train[FEATURES], train["label"])
    # The champion is a shallow tree on x2 alone: clearly worse, so the deltas have a known sign.
    only_x2 = ColumnTransformer([("x2", "passthrough", ["x2"])])
    champion = Pipeline([("select", only_x2), ("model", champion_model(task))])
    champion.fit(train[FEATURES], train["label"])
    (home / "models").mkdir(parents=True)
    (home / "data").mkdir()
    joblib.dump(candidate, home / "models" / "candidate.joblib")
    joblib.dump(champion, home / "models" / "champion.joblib")
    for seed, name in enumerate(("holdout", "baseline", "golden"), start=2):
        make_frame(600, task, classes=classes, seed=seed).to_parquet(
            home / "data" / f"{name}.parquet"
        )

    def version(name: str) -> ModelVersion:
        return ModelVersion(
            model="churn", version=name, source=str(home / "models" / f"{name}.joblib")
        )

    request = EvaluationRequest(
        loop_id="retrain-churn-1",
        spec=spec,
        candidate=version("candidate"),
        champion=version("champion") if with_champion else None,
        holdout=DatasetFile(uri="data/holdout.parquet", sha256="0" * 64, rows=600),
        baseline_eval=DatasetFile(uri="data/baseline.parquet", sha256="1" * 64, rows=600),
        golden=GoldenSet(
            uri=str(home / "data" / "golden.parquet"),  # absolute paths work too
            sha256="2" * 64,
            rows=600,
            registered_at=datetime(2024, 1, 1, tzinfo=UTC),
        ),
        seed=7,
    )
    return Workspace(home, spec, request, candidate, champion)


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path)


def outcomes(space: Workspace, name: str = HOLDOUT) -> tuple[Outcome, Outcome]:
    data = space.read(name)
    classes = None
    if space.spec.task is Task.CLASSIFICATION:
        classes = shared_classes([space.candidate, space.champion])
    return (
        predict(space.candidate, data, classes, "candidate"),
        predict(space.champion, data, classes, "champion"),
    )


# ---- scikit-learn as the reference ---------------------------------------------------------


def sklearn_metric(metric: Metric, outcome: Outcome) -> float:
    if isinstance(outcome, RegressorOutcome):
        regression: dict[Metric, Callable[..., float]] = {
            Metric.RMSE: skm.root_mean_squared_error,
            Metric.MAE: skm.mean_absolute_error,
            Metric.R2: skm.r2_score,
        }
        return float(regression[metric](outcome.truth, outcome.predicted))
    classes = outcome.classes
    truth, predicted = classes[outcome.truth], classes[outcome.predicted]
    averaging: dict[str, Any] = (
        {"pos_label": classes[-1]} if outcome.binary else {"average": "macro"}
    )
    match metric:
        case Metric.ACCURACY:
            return float(skm.accuracy_score(truth, predicted))
        case Metric.PRECISION:
            return float(skm.precision_score(truth, predicted, zero_division=0, **averaging))
        case Metric.RECALL:
            return float(skm.recall_score(truth, predicted, zero_division=0, **averaging))
        case Metric.ROC_AUC if outcome.binary:
            return float(skm.roc_auc_score(truth, outcome.proba[:, 1]))
        case Metric.ROC_AUC:
            return float(skm.roc_auc_score(truth, outcome.proba, multi_class="ovr", labels=classes))
        case Metric.LOG_LOSS:
            return float(skm.log_loss(truth, y_proba=outcome.proba, labels=classes))
    raise AssertionError(metric)


def resampled(outcome: Outcome, counts: np.ndarray) -> Outcome:
    """The outcome on the rows a bootstrap drew (each row repeated as often as drawn)."""
    rows = np.repeat(np.arange(len(counts)), counts.astype(np.int64))
    if isinstance(outcome, RegressorOutcome):
        return RegressorOutcome(truth=outcome.truth[rows], predicted=outcome.predicted[rows])
    return ClassifierOutcome(
        classes=outcome.classes,
        truth=outcome.truth[rows],
        predicted=outcome.predicted[rows],
        proba=outcome.proba[rows],
    )


TASKS = [
    pytest.param(Task.CLASSIFICATION, 2, id="binary"),
    pytest.param(Task.CLASSIFICATION, 3, id="multiclass"),
    pytest.param(Task.REGRESSION, 0, id="regression"),
]


@pytest.mark.parametrize(("task", "classes"), TASKS)
def test_point_metrics_match_sklearn(tmp_path: Path, task: Task, classes: int) -> None:
    space = make_workspace(tmp_path, task, classes=classes)
    for outcome in outcomes(space):
        values = point_metrics(outcome)
        expected_metrics = (
            CLASSIFICATION_METRICS if task is Task.CLASSIFICATION else REGRESSION_METRICS
        )
        assert set(values) == set(expected_metrics)
        for metric, value in values.items():
            assert value == pytest.approx(sklearn_metric(metric, outcome), abs=TOLERANCE), metric


@pytest.mark.parametrize(("task", "classes"), TASKS)
def test_bootstrap_resamples_match_sklearn(tmp_path: Path, task: Task, classes: int) -> None:
    space = make_workspace(tmp_path, task, classes=classes)
    for outcome in outcomes(space):
        weights = next(resample_weights(len(outcome.truth), 4, np.random.default_rng(3)))
        for metric in point_metrics(outcome):
            values = metric_values(metric, outcome, weights)
            for counts, value in zip(weights, values, strict=True):
                expected = sklearn_metric(metric, resampled(outcome, counts))
                assert value == pytest.approx(expected, abs=TOLERANCE), metric


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_with_many_ties_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, size=5000)
    scores = np.round(np.clip(0.2 * truth + rng.random(5000), 0, 1), 1)  # 11 distinct scores
    outcome = ClassifierOutcome(
        classes=np.array([0, 1]),
        truth=truth,
        predicted=(scores > 0.5).astype(np.int64),
        proba=np.c_[1 - scores, scores],
    )
    everyone = np.ones((1, 5000))
    auc = metric_values(Metric.ROC_AUC, outcome, everyone)[0]
    assert auc == pytest.approx(skm.roc_auc_score(truth, scores), abs=TOLERANCE)


def test_precision_and_recall_are_zero_when_undefined_like_sklearn() -> None:
    # Nothing predicted positive (precision 0/0) and no positive in the truth (recall 0/0).
    outcome = ClassifierOutcome(
        classes=np.array([0, 1]),
        truth=np.zeros(4, dtype=np.int64),
        predicted=np.zeros(4, dtype=np.int64),
        proba=np.tile([0.9, 0.1], (4, 1)),
    )
    values = point_metrics(outcome)
    assert values[Metric.PRECISION] == 0.0 == sklearn_metric(Metric.PRECISION, outcome)
    assert values[Metric.RECALL] == 0.0 == sklearn_metric(Metric.RECALL, outcome)
    # ROC-AUC needs both classes: undefined, so it is left out.
    assert Metric.ROC_AUC not in values


@pytest.mark.parametrize("predicted", [[2.0, 2.0, 2.0], [2.0, 2.5, 2.0]])
def test_r2_of_a_constant_target_follows_sklearn(predicted: list[float]) -> None:
    outcome = RegressorOutcome(truth=np.full(3, 2.0), predicted=np.array(predicted))
    assert point_metrics(outcome)[Metric.R2] == sklearn_metric(Metric.R2, outcome)


# ---- bootstrap -----------------------------------------------------------------------------


def test_resample_weights_come_in_bounded_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(evaluation, "MAX_BOOTSTRAP_CELLS", 7 * 50)
    chunks = list(resample_weights(50, 20, np.random.default_rng(0)))
    assert [len(chunk) for chunk in chunks] == [7, 7, 6]
    weights = np.concatenate(chunks)
    assert (weights.sum(axis=1) == 50).all()  # each resample draws as many rows as there are
    again = np.concatenate(list(resample_weights(50, 20, np.random.default_rng(0))))
    assert np.array_equal(weights, again)


def test_bootstrap_interval_contains_the_delta_and_is_deterministic(workspace: Workspace) -> None:
    candidate, champion = outcomes(workspace)
    policy = EvaluationPolicy(metrics=CLASSIFICATION_METRICS, bootstrap_samples=500)

    def deltas(seed: int) -> list[Any]:
        return bootstrap_deltas(
            HOLDOUT, policy.metrics, candidate, champion, policy, np.random.default_rng(seed)
        )

    first = deltas(11)
    assert first == deltas(11)
    assert first != deltas(12)
    assert [delta.metric for delta in first] == CLASSIFICATION_METRICS
    for delta in first:
        assert delta.dataset == HOLDOUT
        assert delta.ci_low <= delta.delta <= delta.ci_high, delta.metric
    by_metric = {delta.metric: delta for delta in first}
    # Oriented so that positive is better: log loss falls, ROC-AUC rises, both count as gains.
    log_loss = by_metric[Metric.LOG_LOSS]
    assert log_loss.delta == pytest.approx(log_loss.champion - log_loss.candidate)
    assert log_loss.delta > 0
    roc_auc = by_metric[Metric.ROC_AUC]
    assert roc_auc.delta == pytest.approx(roc_auc.candidate - roc_auc.champion)
    assert roc_auc.ci_low > 0


def test_bootstrap_is_paired(workspace: Workspace) -> None:
    # The same model against itself: every resample sees the same rows for both, so each
    # delta and both ends of each interval are exactly zero.
    candidate, _ = outcomes(workspace)
    policy = EvaluationPolicy(metrics=CLASSIFICATION_METRICS, bootstrap_samples=100)
    deltas = bootstrap_deltas(
        HOLDOUT, policy.metrics, candidate, candidate, policy, np.random.default_rng(0)
    )
    assert len(deltas) == len(CLASSIFICATION_METRICS)
    assert all(d.delta == d.ci_low == d.ci_high == 0 for d in deltas)


# ---- prediction distributions and errors ---------------------------------------------------


def test_binary_histograms_count_positive_probabilities(workspace: Workspace) -> None:
    candidate, champion = outcomes(workspace)
    edges = prediction_bin_edges(candidate, champion)
    assert np.allclose(edges, np.linspace(0, 1, 11))
    assert isinstance(candidate, ClassifierOutcome)
    expected = np.histogram(candidate.proba[:, 1], bins=edges)[0]
    assert prediction_counts(candidate, edges) == expected.tolist()
    assert sum(prediction_counts(champion, edges)) == len(champion.truth)


def test_multiclass_histograms_count_the_top_probability(tmp_path: Path) -> None:
    candidate, _ = outcomes(make_workspace(tmp_path, classes=3))
    counts = prediction_counts(candidate, prediction_bin_edges(candidate, None))
    assert sum(counts) == len(candidate.truth)
    assert counts[:3] == [0, 0, 0]  # the top of three probabilities is at least 1/3


def test_regression_bins_follow_the_champions_deciles() -> None:
    rng = np.random.default_rng(0)
    champion = RegressorOutcome(truth=np.zeros(1000), predicted=rng.normal(size=1000))
    candidate = RegressorOutcome(truth=np.zeros(1000), predicted=rng.normal(1.0, size=1000))
    edges = prediction_bin_edges(candidate, champion)
    assert len(edges) == 11
    assert edges[0] == min(champion.predicted.min(), candidate.predicted.min())
    assert edges[-1] == max(champion.predicted.max(), candidate.predicted.max())
    assert all(99 <= count <= 101 for count in prediction_counts(champion, edges))
    assert sum(prediction_counts(candidate, edges)) == 1000
    # Without a champion: equal-width bins over the candidate's range.
    alone = prediction_bin_edges(candidate, None)
    assert np.allclose(np.diff(alone), np.ptp(candidate.predicted) / 10)
    # Constant predictions: one bin.
    constant = RegressorOutcome(truth=np.zeros(3), predicted=np.full(3, 5.0))
    assert prediction_counts(constant, prediction_bin_edges(constant, None)) == [3]


def classifier(truth: list[int], predicted: list[int], classes: list[str]) -> ClassifierOutcome:
    proba = np.eye(len(classes))[predicted]
    return ClassifierOutcome(
        classes=np.array(classes), truth=np.array(truth), predicted=np.array(predicted), proba=proba
    )


def test_errors_by_segment() -> None:
    outcome = classifier([0, 0, 1, 1, 1], [1, 0, 0, 0, 1], ["no", "yes"])
    segments = np.array(["eu", "eu", "us", "eu", "us"], dtype=object)
    errors, source = count_errors(outcome, segments, "region")
    assert errors == {"eu": 2, "us": 1}
    assert source == "segment column 'region'"


def test_errors_by_type_binary_and_multiclass() -> None:
    binary = classifier([0, 0, 1, 1, 1], [1, 0, 0, 0, 1], ["no", "yes"])
    assert count_errors(binary, None, None) == (
        {FALSE_POSITIVE: 1, FALSE_NEGATIVE: 2},
        "error type",
    )
    multiclass = classifier([0, 1, 2, 2, 2], [1, 1, 0, 0, 2], ["a", "b", "c"])
    errors, _ = count_errors(multiclass, None, None)
    assert errors == {"true=a,pred=b": 1, "true=c,pred=a": 2}


def test_regression_errors_are_the_rows_worse_than_average() -> None:
    # Absolute errors 0.1, 0.1, 3, 2 (mean 1.3): the two large ones count, one over, one under.
    outcome = RegressorOutcome(
        truth=np.array([0.0, 0.0, 0.0, 0.0]), predicted=np.array([0.1, -0.1, 3.0, -2.0])
    )
    assert count_errors(outcome, None, None) == ({"over": 1, "under": 1}, "error type")
    segments = np.array(["a", "b", "c", "c"], dtype=object)
    assert count_errors(outcome, segments, "shop")[0] == {"c": 2}


# ---- the activity --------------------------------------------------------------------------


def test_activity_report(workspace: Workspace) -> None:
    report = workspace.activities().evaluate(workspace.request)

    assert report.rows == {HOLDOUT: 600, BASELINE: 600, GOLDEN: 600}
    assert report.champion is not None
    for side in (report.candidate, report.champion):
        assert set(side) == {HOLDOUT, BASELINE, GOLDEN}
        assert all(
            set(values) == {m.value for m in CLASSIFICATION_METRICS} for values in side.values()
        )
    # The report's numbers are scikit-learn's, computed here from the file itself.
    holdout = pd.read_parquet(workspace.home / "data" / "holdout.parquet")
    proba = workspace.candidate.predict_proba(holdout[FEATURES])[:, 1]
    predicted = workspace.candidate.predict(holdout[FEATURES])
    candidate = report.candidate[HOLDOUT]
    assert candidate["roc_auc"] == pytest.approx(
        skm.roc_auc_score(holdout["label"], proba), abs=TOLERANCE
    )
    assert candidate["accuracy"] == pytest.approx(
        skm.accuracy_score(holdout["label"], predicted), abs=TOLERANCE
    )

    assert [(d.dataset, d.metric) for d in report.deltas] == [
        (dataset, metric) for dataset in (HOLDOUT, GOLDEN) for metric in CLASSIFICATION_METRICS
    ]
    assert len(report.prediction_bins) == 11
    assert sum(report.candidate_prediction_counts) == sum(report.champion_prediction_counts) == 600
    assert report.segment_source == "segment column 'region'"
    assert set(report.errors_by_segment) <= set(REGIONS)
    assert sum(report.errors_by_segment.values()) == int((predicted != holdout["label"]).sum())
    # Same request, same report: the bootstrap is seeded by the request.
    assert workspace.activities().evaluate(workspace.request) == report
    # The gate reads it: the candidate ranks far better than a tree on one feature (it may
    # still trade some recall for precision).
    regressions = gate_verdict(report, workspace.spec).regressions
    assert not [r for r in regressions if r.startswith(("roc_auc", "log_loss", "accuracy"))]


def test_activity_without_champion(tmp_path: Path) -> None:
    space = make_workspace(tmp_path, with_champion=False)
    report = space.activities().evaluate(space.request)
    assert report.champion is None
    assert report.deltas == []
    assert report.champion_prediction_counts == []
    assert sum(report.candidate_prediction_counts) == 600
    verdict = gate_verdict(report, space.spec)
    assert verdict.regressions == []
    assert {check.name for check in verdict.checks if check.passed} >= {
        "baseline_drift",
        "prediction_shift",
    }


@pytest.mark.parametrize(("task", "classes"), TASKS[1:])
def test_activity_multiclass_and_regression(tmp_path: Path, task: Task, classes: int) -> None:
    space = make_workspace(tmp_path, task, classes=classes)
    report = space.activities().evaluate(space.request)
    metrics = CLASSIFICATION_METRICS if task is Task.CLASSIFICATION else REGRESSION_METRICS
    assert set(report.candidate[GOLDEN]) == {m.value for m in metrics}
    assert len(report.deltas) == 2 * len(metrics)
    assert sum(report.candidate_prediction_counts) == 600
    assert sum(report.errors_by_segment.values()) > 0


def test_activity_heartbeats_after_each_dataset(workspace: Workspace) -> None:
    beats: list[Any] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(details[0])
    env.run(workspace.activities().evaluate, workspace.request)
    assert beats == [f"evaluated {name}" for name in (HOLDOUT, BASELINE, GOLDEN)]


def test_rows_without_a_label_are_skipped(workspace: Workspace) -> None:
    path = workspace.home / "data" / "holdout.parquet"
    frame = pd.read_parquet(path)
    frame["label"] = frame["label"].astype("Int64").mask(frame.index % 4 == 0)
    frame.to_parquet(path)
    report = workspace.activities().evaluate(workspace.request)
    assert report.rows[HOLDOUT] == 450


def test_nan_labels_are_skipped_like_nulls(workspace: Workspace) -> None:
    # pandas writes NaN as null; other writers store real NaN in a float column.
    path = workspace.home / "data" / "nan.parquet"
    frame = make_frame(10, Task.CLASSIFICATION)
    table = pa.Table.from_pandas(frame[[*FEATURES, "region"]], preserve_index=False)
    labels = pa.array([math.nan, 1.0, None, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0], from_pandas=False)
    pq.write_table(table.append_column("label", labels), path)
    data = read_labelled_set(HOLDOUT, path, workspace.spec)
    assert data.rows == 8
    assert data.segments is None


def test_segment_column_may_also_be_a_feature(workspace: Workspace) -> None:
    spec = workspace.spec.model_copy(update={"segment_column": "channel"})
    data = read_labelled_set(
        HOLDOUT, workspace.home / "data" / "holdout.parquet", spec, with_segments=True
    )
    assert list(data.features.columns) == FEATURES
    assert data.segments is not None
    assert set(data.segments) == set(CHANNELS)


# ---- invalid data --------------------------------------------------------------------------


def corrupt(path: Path) -> None:
    path.write_bytes(b"not a parquet file at all")


def delete(path: Path) -> None:
    path.unlink()


def drop_feature(path: Path) -> None:
    pd.read_parquet(path).drop(columns=["x2"]).to_parquet(path)


def feature_as_text(path: Path) -> None:
    frame = pd.read_parquet(path)
    frame.assign(x1=frame["x1"].astype(str)).to_parquet(path)


def no_labels(path: Path) -> None:
    frame = pd.read_parquet(path)
    frame.assign(label=pd.Series([None] * len(frame), dtype="Int64")).to_parquet(path)


def unknown_labels(path: Path) -> None:
    frame = pd.read_parquet(path)
    frame.assign(label=frame["label"] + 5).to_parquet(path)


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (corrupt, "cannot read"),
        (delete, "cannot read"),
        (drop_feature, "lacks the column(s) x2"),
        (feature_as_text, "numeric feature 'x1' is stored as"),
        (no_labels, "no labelled rows"),
        (unknown_labels, "labels no model knows: 5, 6"),
    ],
)
@pytest.mark.parametrize("dataset", [HOLDOUT, GOLDEN])
def test_invalid_data_is_a_non_retryable_error(
    workspace: Workspace, damage: Callable[[Path], None], problem: str, dataset: str
) -> None:
    path = workspace.home / "data" / f"{dataset}.parquet"
    damage(path)
    with pytest.raises(ApplicationError) as raised:
        workspace.activities().evaluate(workspace.request)
    assert raised.value.type == ErrorType.INVALID_EVALUATION_DATA
    assert raised.value.non_retryable
    assert str(path) in raised.value.message
    assert problem in raised.value.message


def test_missing_segment_column_is_invalid_data(workspace: Workspace) -> None:
    path = workspace.home / "data" / "holdout.parquet"
    pd.read_parquet(path).drop(columns=["region"]).to_parquet(path)
    with pytest.raises(ApplicationError, match="lacks the column\\(s\\) region") as raised:
        workspace.activities().evaluate(workspace.request)
    assert raised.value.type == ErrorType.INVALID_EVALUATION_DATA


class NaNClassifier:
    classes_ = np.array([0, 1])

    def predict_proba(self, features: Any) -> np.ndarray:
        return np.full((len(features), 2), np.nan)

    def predict(self, features: Any) -> np.ndarray:
        return np.zeros(len(features), dtype=np.int64)


def test_non_finite_model_output_is_a_non_retryable_error(workspace: Workspace) -> None:
    activities = EvaluationActivities(workspace.home, lambda version: NaNClassifier())
    with pytest.raises(ApplicationError, match="non-finite") as raised:
        activities.evaluate(workspace.request)
    assert raised.value.type == ErrorType.INVALID_MODEL_OUTPUT
    assert raised.value.non_retryable
