"""Evaluation of a candidate model against the champion (activity `evaluate_candidate`).

Both models are scored on the same three datasets (Parquet files): the loop's holdout, the
baseline evaluation slice and the immutable golden set. The report carries every metric of the
task on each dataset, paired-bootstrap intervals of candidate-minus-champion for the policy's
metrics on the holdout and the golden set, the holdout prediction histograms of both models and
the candidate's holdout errors per segment. The verdict over these numbers is
`workflows.loop.rules.gate_verdict`, a pure function the workflow runs.

Metrics are weighted sums over rows, evaluated for a matrix of row weights at once: the sample
itself is one row of ones, a bootstrap resample is a row of draw counts. The point estimates and
the bootstrap therefore share one implementation, checked against scikit-learn in the tests.
Classification follows scikit-learn: the positive class of a binary model is the larger label,
multiclass precision and recall are macro averages over the labels present, ROC-AUC is
one-vs-rest macro, undefined precision or recall count as 0. A metric that is undefined on a
dataset (ROC-AUC with one class present) is left out of the report.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
from temporalio import activity
from temporalio.exceptions import ApplicationError

from workflows.common.errors import ErrorType
from workflows.common.names import ActivityName
from workflows.loop.models import EvaluationReport, EvaluationRequest, MetricDelta, ModelVersion
from workflows.loop.rules import BASELINE, GOLDEN, HOLDOUT, RECENT, REPLAY
from workflows.spec.models import EvaluationPolicy, FeatureKind, Metric, ModelSpec, Task

FloatArray = npt.NDArray[np.float64]
Difference = TypeVar("Difference", float, FloatArray)
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
ObjectArray = npt.NDArray[np.object_]


# Order of evaluation; the bootstrap draws for the holdout first, then for the golden set
# (then the recent slice and the replayed traffic, when the window has them).
DATASETS = (HOLDOUT, BASELINE, GOLDEN)
OPTIONAL_DATASETS = (RECENT, REPLAY)
BOOTSTRAPPED_DATASETS = (HOLDOUT, GOLDEN, RECENT, REPLAY)
PREDICTION_BINS = 10
# Resample weights held in memory at once (32 MiB of float64), whatever the dataset's size.
MAX_BOOTSTRAP_CELLS = 1 << 22
MISSING_SEGMENT = "(missing)"
FALSE_POSITIVE = "false_positive"
FALSE_NEGATIVE = "false_negative"
OVER_ESTIMATE = "over"
UNDER_ESTIMATE = "under"


def invalid_data(message: str) -> ApplicationError:
    return ApplicationError(message, type=ErrorType.INVALID_EVALUATION_DATA, non_retryable=True)


def invalid_model_output(message: str) -> ApplicationError:
    return ApplicationError(message, type=ErrorType.INVALID_MODEL_OUTPUT, non_retryable=True)


# ---- datasets ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelledSet:
    """The labelled rows of one evaluation dataset."""

    name: str
    path: Path
    # A pandas DataFrame of the spec's features, in the spec's order, as stored in the file.
    features: Any
    labels: npt.NDArray[Any]
    # Each row's segment (the spec's segment column) as text, when asked for.
    segments: ObjectArray | None

    @property
    def rows(self) -> int:
        return len(self.labels)


def read_labelled_set(
    name: str, path: Path, spec: ModelSpec, *, with_segments: bool = False
) -> LabelledSet:
    """Read a dataset's labelled rows (rows whose label is null or NaN are skipped).

    Raises a non-retryable `InvalidEvaluationData` ApplicationError when the file cannot be read,
    lacks a column, stores a numeric feature (or a regression label) as non-numbers, or has no
    labelled row.
    """
    segment_column = spec.segment_column if with_segments else None
    # The segment column may also be a feature: read it once.
    columns = list(
        dict.fromkeys(
            [*spec.feature_names, spec.label, *([segment_column] if segment_column else [])]
        )
    )
    where = f"the {name} file {path}"
    try:
        parquet = pq.ParquetFile(path)
        missing = [column for column in columns if column not in parquet.schema_arrow.names]
        if missing:
            raise invalid_data(f"{where} lacks the column(s) {', '.join(missing)}")
        table = parquet.read(columns=columns)
    except (OSError, pa.ArrowException) as error:
        raise invalid_data(f"cannot read {where}: {error}") from error
    _check_numeric_columns(table.schema, spec, where)
    label = table.column(spec.label)
    labelled = pc.is_valid(label)
    if pa.types.is_floating(label.type):
        labelled = pc.and_kleene(labelled, pc.invert(pc.is_nan(label)))
    labelled_table = table.filter(labelled)
    if labelled_table.num_rows == 0:
        raise invalid_data(
            f"{where} has no labelled rows ({table.num_rows} rows, none with a {spec.label!r})"
        )
    segments = None
    if segment_column:
        try:
            as_text = pc.cast(labelled_table.column(segment_column), pa.string())
        except pa.ArrowException as error:
            raise invalid_data(f"{where}: segment column {segment_column!r}: {error}") from error
        segments = pc.fill_null(as_text, MISSING_SEGMENT).to_numpy(zero_copy_only=False)
    return LabelledSet(
        name=name,
        path=path,
        features=labelled_table.select(spec.feature_names).to_pandas(),
        labels=labelled_table.column(spec.label).to_numpy(),
        segments=segments,
    )


def _check_numeric_columns(schema: Any, spec: ModelSpec, where: str) -> None:
    numeric = [f.name for f in spec.features if f.kind is FeatureKind.NUMERIC]
    for column in numeric:
        kind = schema.field(column).type
        if not (
            pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
        ):
            raise invalid_data(f"{where}: numeric feature {column!r} is stored as {kind}")
    if spec.task is Task.REGRESSION:
        kind = schema.field(spec.label).type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
            raise invalid_data(f"{where}: regression label {spec.label!r} is stored as {kind}")


# ---- predictions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassifierOutcome:
    """A classifier's predictions on one dataset, as indices into the shared `classes`."""

    classes: npt.NDArray[Any]
    truth: IntArray
    predicted: IntArray
    # One column per class of `classes` (0 for a class this model does not know).
    proba: FloatArray

    @property
    def binary(self) -> bool:
        return len(self.classes) == 2

    @property
    def positive(self) -> int:
        """Index of the positive class of a binary model: the larger label, as in scikit-learn."""
        return len(self.classes) - 1


@dataclass(frozen=True)
class RegressorOutcome:
    truth: FloatArray
    predicted: FloatArray


Outcome = ClassifierOutcome | RegressorOutcome


def shared_classes(models: Sequence[Any]) -> npt.NDArray[Any]:
    """The sorted union of the models' classes: both models are scored over the same columns."""
    try:
        classes = np.unique(np.concatenate([np.asarray(model.classes_) for model in models]))
    except (AttributeError, TypeError) as error:
        message = f"the models do not expose comparable classes_: {error}"
        raise invalid_model_output(message) from error
    if len(classes) < 2:
        raise invalid_model_output(f"a classifier needs two classes or more, not {classes}")
    return classes


def _class_indices(
    values: npt.NDArray[Any], classes: npt.NDArray[Any]
) -> tuple[IntArray, BoolArray]:
    """Index of each value in `classes`, and whether the value is one of them."""
    try:
        indices = np.minimum(np.searchsorted(classes, values), len(classes) - 1)
    except TypeError:  # values of another type than the classes (text vs numbers)
        return np.zeros(len(values), dtype=np.int64), np.zeros(len(values), dtype=np.bool_)
    return indices.astype(np.int64), np.asarray(classes[indices] == values, dtype=np.bool_)


def predict_classifier(
    model: Any, data: LabelledSet, classes: npt.NDArray[Any], role: str
) -> ClassifierOutcome:
    truth, known = _class_indices(data.labels, classes)
    if not known.all():
        unknown = sorted({str(value) for value in data.labels[~known]})
        raise invalid_data(
            f"the {data.name} file {data.path} has labels no model knows: {', '.join(unknown[:5])}"
        )
    model_classes = np.asarray(model.classes_)
    proba = np.asarray(model.predict_proba(data.features), dtype=np.float64)
    if proba.shape != (data.rows, len(model_classes)) or not np.isfinite(proba).all():
        raise invalid_model_output(
            f"the {role}'s predict_proba on the {data.name} set returned shape {proba.shape} "
            f"or non-finite values; expected ({data.rows}, {len(model_classes)}) probabilities"
        )
    aligned = np.zeros((data.rows, len(classes)), dtype=np.float64)
    aligned[:, _class_indices(model_classes, classes)[0]] = proba
    predicted, known = _class_indices(np.asarray(model.predict(data.features)), classes)
    if not known.all():
        raise invalid_model_output(f"the {role} predicted labels outside its classes_")
    return ClassifierOutcome(classes=classes, truth=truth, predicted=predicted, proba=aligned)


def predict_regressor(model: Any, data: LabelledSet, role: str) -> RegressorOutcome:
    predicted = np.asarray(model.predict(data.features), dtype=np.float64)
    if predicted.size != data.rows or not np.isfinite(predicted).all():
        raise invalid_model_output(
            f"the {role}'s predict on the {data.name} set returned {predicted.size} values or "
            f"non-finite ones; expected {data.rows} numbers"
        )
    return RegressorOutcome(
        truth=np.asarray(data.labels, dtype=np.float64), predicted=predicted.reshape(-1)
    )


def predict(model: Any, data: LabelledSet, classes: npt.NDArray[Any] | None, role: str) -> Outcome:
    """`classes` given: a classifier's outcome over them; None: a regressor's."""
    if classes is None:
        return predict_regressor(model, data, role)
    return predict_classifier(model, data, classes, role)


# ---- metrics -------------------------------------------------------------------------------


def task_metrics(outcome: Outcome) -> list[Metric]:
    task = Task.CLASSIFICATION if isinstance(outcome, ClassifierOutcome) else Task.REGRESSION
    return [metric for metric in Metric if metric.task is task]


def metric_values(metric: Metric, outcome: Outcome, weights: FloatArray) -> FloatArray:
    """The metric under each row weighting: `weights` is (weightings, rows), result (weightings,).

    NaN where the metric is undefined for a weighting (ROC-AUC with one class present).
    """
    if isinstance(outcome, ClassifierOutcome):
        return _classifier_metric(metric, outcome, weights)
    return _regressor_metric(metric, outcome, weights)


def _weighted_mean(weights: FloatArray, values: npt.NDArray[Any]) -> FloatArray:
    """The mean of `values` under each row weighting."""
    means: FloatArray = weights @ values.astype(np.float64) / weights.sum(axis=1)
    return means


def _classifier_metric(
    metric: Metric, outcome: ClassifierOutcome, weights: FloatArray
) -> FloatArray:
    match metric:
        case Metric.ACCURACY:
            return _weighted_mean(weights, outcome.predicted == outcome.truth)
        case Metric.PRECISION | Metric.RECALL:
            return _precision_or_recall(metric, outcome, weights)
        case Metric.ROC_AUC:
            return _roc_auc(outcome, weights)
        case Metric.LOG_LOSS:
            eps = np.finfo(np.float64).eps  # scikit-learn's clipping
            chosen = outcome.proba[np.arange(len(outcome.truth)), outcome.truth]
            return _weighted_mean(weights, -np.log(np.clip(chosen, eps, 1 - eps)))
    raise ValueError(f"{metric.value} is not a classification metric")


def _ratio_or_zero(numerator: FloatArray, denominator: FloatArray) -> FloatArray:
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def _precision_or_recall(
    metric: Metric, outcome: ClassifierOutcome, weights: FloatArray
) -> FloatArray:
    classes = np.arange(len(outcome.classes))
    actual = (outcome.truth[:, None] == classes).astype(np.float64)
    predicted = (outcome.predicted[:, None] == classes).astype(np.float64)
    hits: FloatArray = weights @ (actual * predicted)
    actual_counts: FloatArray = weights @ actual
    predicted_counts: FloatArray = weights @ predicted
    denominator = predicted_counts if metric is Metric.PRECISION else actual_counts
    per_class = _ratio_or_zero(hits, denominator)
    if outcome.binary:
        return per_class[:, outcome.positive]
    # Macro average over the labels present in the truth or the predictions, as scikit-learn.
    present = (actual_counts + predicted_counts) > 0
    macro: FloatArray = (per_class * present).sum(axis=1) / present.sum(axis=1)
    return macro


def _roc_auc(outcome: ClassifierOutcome, weights: FloatArray) -> FloatArray:
    if outcome.binary:
        positive = outcome.truth == outcome.positive
        return _binary_roc_auc(outcome.proba[:, outcome.positive], positive, weights)
    per_class = [
        _binary_roc_auc(outcome.proba[:, index], outcome.truth == index, weights)
        for index in range(len(outcome.classes))
    ]
    # NaN when a class is absent (scikit-learn refuses one-vs-rest AUC then).
    macro: FloatArray = np.mean(per_class, axis=0)
    return macro


def _binary_roc_auc(scores: FloatArray, positive: BoolArray, weights: FloatArray) -> FloatArray:
    """Weighted Mann-Whitney statistic: P(score of a positive > score of a negative), ties 1/2.

    Rows are sorted once; per weighting, the weight of positives and negatives is summed per
    group of tied scores, and each positive group wins against the negatives below it.
    """
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    group_starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    sorted_weights = weights[:, order]
    is_positive = positive[order]
    positives = np.add.reduceat(sorted_weights * is_positive, group_starts, axis=1)
    negatives = np.add.reduceat(sorted_weights * ~is_positive, group_starts, axis=1)
    negatives_below = np.cumsum(negatives, axis=1) - negatives
    wins = (positives * (negatives_below + 0.5 * negatives)).sum(axis=1)
    pairs = positives.sum(axis=1) * negatives.sum(axis=1)
    auc: FloatArray = np.divide(wins, pairs, out=np.full_like(wins, np.nan), where=pairs > 0)
    return auc


def _regressor_metric(metric: Metric, outcome: RegressorOutcome, weights: FloatArray) -> FloatArray:
    residuals = outcome.predicted - outcome.truth
    match metric:
        case Metric.RMSE:
            return np.sqrt(_weighted_mean(weights, residuals**2))
        case Metric.MAE:
            return _weighted_mean(weights, np.abs(residuals))
        case Metric.R2:
            squared_error: FloatArray = weights @ residuals**2
            truth_mean = _weighted_mean(weights, outcome.truth)
            spread = (weights * (outcome.truth - truth_mean[:, None]) ** 2).sum(axis=1)
            # scikit-learn's convention for a constant target: 1 if predicted exactly, else 0.
            constant = np.where(squared_error == 0, 1.0, 0.0)
            ratio = np.divide(squared_error, spread, out=np.ones_like(spread), where=spread > 0)
            return np.where(spread > 0, 1 - ratio, constant)
    raise ValueError(f"{metric.value} is not a regression metric")


def point_metrics(outcome: Outcome) -> dict[Metric, float]:
    """Every metric of the task on the whole dataset; undefined ones are left out."""
    everyone = np.ones((1, len(outcome.truth)))
    values = {
        metric: float(metric_values(metric, outcome, everyone)[0])
        for metric in task_metrics(outcome)
    }
    return {metric: value for metric, value in values.items() if math.isfinite(value)}


# ---- bootstrap -----------------------------------------------------------------------------


def resample_weights(rows: int, samples: int, rng: np.random.Generator) -> Iterator[FloatArray]:
    """Bootstrap resamples as draw counts per row, in chunks of at most MAX_BOOTSTRAP_CELLS.

    Each chunk is (resamples, rows): how often each row was drawn. Using the same counts for
    both models pairs the bootstrap.
    """
    chunk = max(1, MAX_BOOTSTRAP_CELLS // rows)
    for start in range(0, samples, chunk):
        size = min(chunk, samples - start)
        draws = rng.integers(0, rows, size=(size, rows))
        # Offsetting each resample's draws lets one bincount count them all.
        flat = (draws + np.arange(size)[:, None] * rows).ravel()
        yield np.bincount(flat, minlength=size * rows).reshape(size, rows).astype(np.float64)


def oriented(metric: Metric, difference: Difference) -> Difference:
    """candidate - champion turned so that positive means the candidate is better."""
    return difference if metric.higher_is_better else -difference


def bootstrap_deltas(
    dataset: str,
    metrics: Sequence[Metric],
    candidate: Outcome,
    champion: Outcome,
    policy: EvaluationPolicy,
    rng: np.random.Generator,
) -> list[MetricDelta]:
    """Paired-bootstrap percentile intervals of the oriented candidate-minus-champion deltas.

    A metric undefined on the whole dataset, or on every resample, gets no delta.
    """
    replicates: dict[Metric, list[FloatArray]] = {metric: [] for metric in metrics}
    for weights in resample_weights(len(candidate.truth), policy.bootstrap_samples, rng):
        for metric in metrics:
            difference = metric_values(metric, candidate, weights) - metric_values(
                metric, champion, weights
            )
            replicates[metric].append(oriented(metric, difference))
    candidate_points = point_metrics(candidate)
    champion_points = point_metrics(champion)
    tail = (1 - policy.confidence) / 2
    deltas = []
    for metric in metrics:
        spread = np.concatenate(replicates[metric])
        spread = spread[np.isfinite(spread)]
        if metric not in candidate_points or metric not in champion_points or spread.size == 0:
            continue
        ci_low, ci_high = np.quantile(spread, [tail, 1 - tail])
        deltas.append(
            MetricDelta(
                metric=metric,
                dataset=dataset,
                candidate=candidate_points[metric],
                champion=champion_points[metric],
                delta=oriented(metric, candidate_points[metric] - champion_points[metric]),
                ci_low=float(ci_low),
                ci_high=float(ci_high),
            )
        )
    return deltas


# ---- prediction distributions and errors ---------------------------------------------------


def prediction_scores(outcome: Outcome) -> FloatArray:
    """What the histograms count: P(positive), the top probability (multiclass), or the output."""
    if isinstance(outcome, RegressorOutcome):
        return outcome.predicted
    if outcome.binary:
        return outcome.proba[:, outcome.positive]
    top: FloatArray = outcome.proba.max(axis=1)
    return top


def prediction_bin_edges(candidate: Outcome, champion: Outcome | None) -> FloatArray:
    """Probabilities: equal-width bins on [0, 1]. Regression: the champion's deciles (equal
    mass for the champion), else equal-width bins; the outer edges cover both models' range."""
    if isinstance(candidate, ClassifierOutcome):
        return np.linspace(0.0, 1.0, PREDICTION_BINS + 1)
    outputs = [prediction_scores(candidate)]
    if champion is not None:
        outputs.append(prediction_scores(champion))
    low, high = min(o.min() for o in outputs), max(o.max() for o in outputs)
    inner_levels = np.linspace(0.0, 1.0, PREDICTION_BINS + 1)[1:-1]
    if champion is None:
        inner = low + inner_levels * (high - low)
    else:
        inner = np.quantile(outputs[1], inner_levels)
    edges = np.unique(np.concatenate([[low], inner, [high]]))
    # All predictions equal: one bin around them.
    return edges if edges.size > 1 else np.array([low, low + 1.0])


def prediction_counts(outcome: Outcome, edges: FloatArray) -> list[int]:
    # Clipping keeps probabilities a rounding error above 1 (or below 0) in the outer bins.
    scores = np.clip(prediction_scores(outcome), edges[0], edges[-1])
    return [int(count) for count in np.histogram(scores, bins=edges)[0]]


def error_rows(outcome: Outcome) -> BoolArray:
    """Which rows the model got wrong. Regression: rows whose absolute error exceeds the mean
    absolute error (every row has some error; these are the large ones)."""
    if isinstance(outcome, ClassifierOutcome):
        return np.asarray(outcome.predicted != outcome.truth)
    absolute = np.abs(outcome.predicted - outcome.truth)
    return np.asarray(absolute > absolute.mean())


def error_types(outcome: Outcome, wrong: BoolArray) -> ObjectArray:
    """Each wrong row's kind of error: false positive/negative, true=X,pred=Y, over/under."""
    if isinstance(outcome, RegressorOutcome):
        over = outcome.predicted[wrong] > outcome.truth[wrong]
        return np.where(over, OVER_ESTIMATE, UNDER_ESTIMATE).astype(object)
    if outcome.binary:
        false_positive = outcome.predicted[wrong] == outcome.positive
        return np.where(false_positive, FALSE_POSITIVE, FALSE_NEGATIVE).astype(object)
    names = [str(label) for label in outcome.classes]
    pairs = zip(outcome.truth[wrong], outcome.predicted[wrong], strict=True)
    return np.array([f"true={names[t]},pred={names[p]}" for t, p in pairs], dtype=object)


def count_errors(
    outcome: Outcome, segments: ObjectArray | None, segment_column: str | None
) -> tuple[dict[str, int], str]:
    """The model's errors per segment (when the dataset has segments) or per error type, and
    which of the two was used."""
    wrong = error_rows(outcome)
    if segments is not None:
        keys, source = segments[wrong], f"segment column {segment_column!r}"
    else:
        keys, source = error_types(outcome, wrong), "error type"
    values, counts = np.unique(keys.astype(str), return_counts=True)
    return {str(value): int(count) for value, count in zip(values, counts, strict=True)}, source


# ---- the report ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetEvaluation:
    candidate: Outcome
    champion: Outcome | None
    deltas: list[MetricDelta]


def _by_name(metrics: Mapping[Metric, float]) -> dict[str, float]:
    return {metric.value: value for metric, value in metrics.items()}


def _no_progress(dataset: str) -> None:
    """Default progress callback: plain calls outside an activity report nothing."""


def evaluate_models(
    spec: ModelSpec,
    candidate: Any,
    champion: Any | None,
    datasets: Mapping[str, LabelledSet],
    *,
    seed: int,
    on_progress: Callable[[str], None] = _no_progress,
    extra_metrics: Sequence[Metric] = (),
) -> EvaluationReport:
    """Score both fitted models on the holdout, baseline and golden sets (`datasets` by name),
    and on the recent slice and the replayed traffic when `datasets` has them.

    `on_progress(dataset)` is called after each dataset (the activity heartbeats there);
    `extra_metrics` are bootstrapped besides the policy's.
    """
    classes = None
    if spec.task is Task.CLASSIFICATION:
        classes = shared_classes([m for m in (candidate, champion) if m is not None])
    # SeedSequence refuses negative seeds; the contract does not.
    rng = np.random.default_rng(seed % 2**64)
    metrics = list(dict.fromkeys([*spec.loop.evaluation.metrics, *extra_metrics]))
    evaluations: dict[str, DatasetEvaluation] = {}
    names = [*DATASETS, *(name for name in OPTIONAL_DATASETS if name in datasets)]
    for name in names:
        data = datasets[name]
        candidate_outcome = predict(candidate, data, classes, "candidate")
        champion_outcome = (
            None if champion is None else predict(champion, data, classes, "champion")
        )
        deltas = []
        if champion_outcome is not None and name in BOOTSTRAPPED_DATASETS:
            policy = spec.loop.evaluation
            deltas = bootstrap_deltas(
                name, metrics, candidate_outcome, champion_outcome, policy, rng
            )
        evaluations[name] = DatasetEvaluation(candidate_outcome, champion_outcome, deltas)
        on_progress(name)
    holdout = evaluations[HOLDOUT]
    edges = prediction_bin_edges(holdout.candidate, holdout.champion)
    errors, segment_source = count_errors(
        holdout.candidate, datasets[HOLDOUT].segments, spec.segment_column
    )
    champion_metrics = {
        name: _by_name(point_metrics(e.champion))
        for name, e in evaluations.items()
        if e.champion is not None
    }
    return EvaluationReport(
        candidate={name: _by_name(point_metrics(e.candidate)) for name, e in evaluations.items()},
        champion=champion_metrics if champion is not None else None,
        rows={name: datasets[name].rows for name in names},
        deltas=[delta for e in evaluations.values() for delta in e.deltas],
        prediction_bins=[float(edge) for edge in edges],
        candidate_prediction_counts=prediction_counts(holdout.candidate, edges),
        champion_prediction_counts=(
            prediction_counts(holdout.champion, edges) if holdout.champion is not None else []
        ),
        errors_by_segment=errors,
        segment_source=segment_source,
    )


# ---- the activity --------------------------------------------------------------------------


def _heartbeat(dataset: str) -> None:
    if activity.in_activity():
        activity.heartbeat(f"evaluated {dataset}")


class EvaluationActivities:
    """`load_model` turns a registered version into a fitted scikit-learn estimator/Pipeline."""

    def __init__(self, home: Path, load_model: Callable[[ModelVersion], Any]) -> None:
        self.home = home
        self.load_model = load_model

    def resolve(self, uri: str) -> Path:
        path = Path(uri)
        return path if path.is_absolute() else self.home / path

    @activity.defn(name=ActivityName.EVALUATE_CANDIDATE)
    def evaluate(self, request: EvaluationRequest) -> EvaluationReport:
        spec = request.spec
        uris = {
            HOLDOUT: request.holdout.uri,
            BASELINE: request.baseline_eval.uri,
            GOLDEN: request.golden.uri,
        }
        for name, dataset in ((RECENT, request.recent), (REPLAY, request.replay)):
            if dataset is not None:
                uris[name] = dataset.uri
        # Read (and validate) every dataset before loading the models.
        datasets = {
            name: read_labelled_set(name, self.resolve(uri), spec, with_segments=name == HOLDOUT)
            for name, uri in uris.items()
        }
        candidate = self.load_model(request.candidate)
        champion = None if request.champion is None else self.load_model(request.champion)
        return evaluate_models(
            spec,
            candidate,
            champion,
            datasets,
            seed=request.seed,
            on_progress=_heartbeat,
            extra_metrics=request.extra_metrics,
        )
