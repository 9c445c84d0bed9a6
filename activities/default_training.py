"""The default training entrypoint (`activities.default_training:train`), used by the demo.

A scikit-learn Pipeline: one-hot encoding of the categorical features and scaling of the numeric
ones, then a gradient-boosted or linear model. It runs inside the training subprocess
(`activities.training_runner`), never in the worker, and saves the fitted pipeline with joblib.

Hyperparameters:
- `estimator`: `hist_gradient_boosting` (default), or `logistic_regression` (classification) /
  `ridge` (regression);
- any parameter of that estimator by its own name (`learning_rate`, `max_iter`, `C`, ...);
- any other pipeline parameter by its full path (`preprocess__categorical__min_frequency`).

The string "none" stands for Python's None (TOML has no null), e.g. `max_depth = "none"`.
The estimator's `random_state` is the request's seed unless a hyperparameter sets it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import joblib  # type: ignore[import-untyped, unused-ignore]
import pandas as pd  # type: ignore[import-untyped, unused-ignore]
from sklearn.base import BaseEstimator  # type: ignore[import-untyped, unused-ignore]
from sklearn.compose import ColumnTransformer  # type: ignore[import-untyped, unused-ignore]
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor  # type: ignore[import-untyped, unused-ignore]
from sklearn.linear_model import LogisticRegression, Ridge  # type: ignore[import-untyped, unused-ignore]
from sklearn.metrics import (  # type: ignore[import-untyped, unused-ignore]
    accuracy_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
)
from sklearn.pipeline import Pipeline  # type: ignore[import-untyped, unused-ignore]
from sklearn.preprocessing import OneHotEncoder, StandardScaler  # type: ignore[import-untyped, unused-ignore]

from workflows.loop.models import TrainingOutput, TrainingRequest

ARTIFACT_NAME = "model.joblib"
ESTIMATOR_KEY = "estimator"
DEFAULT_ESTIMATOR = "hist_gradient_boosting"
ESTIMATORS: dict[str, dict[str, type[BaseEstimator]]] = {
    "classification": {
        "hist_gradient_boosting": HistGradientBoostingClassifier,
        "logistic_regression": LogisticRegression,
    },
    "regression": {
        "hist_gradient_boosting": HistGradientBoostingRegressor,
        "ridge": Ridge,
    },
}


def train(request: TrainingRequest) -> TrainingOutput:
    pipeline = build_pipeline(request)
    return fit_and_save(pipeline, request, pipeline.named_steps["model"].__class__.__name__)


def fit_and_save(estimator: Any, request: TrainingRequest, what: str) -> TrainingOutput:
    """Fit `estimator` on the training rows, measure it on the validation rows, save it."""
    training = labelled_rows(Path(request.train_path), request)
    validation = labelled_rows(Path(request.validation_path), request)
    print(f"fitting {what} on {len(training)} rows, validating on {len(validation)}", flush=True)
    estimator.fit(training[request.features], training[request.label])
    metrics = validation_metrics(estimator, validation, request)
    metrics.update(train_rows=float(len(training)), validation_rows=float(len(validation)))
    output = Path(request.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    artifact = output / ARTIFACT_NAME
    joblib.dump(estimator, artifact)
    print(f"saved {artifact}: {metrics}", flush=True)
    return TrainingOutput(artifact_path=str(artifact), metrics=metrics)


def labelled_rows(path: Path, request: TrainingRequest) -> pd.DataFrame:
    frame = pd.read_parquet(path)
    missing = [c for c in [*request.features, request.label] if c not in frame.columns]
    if missing:
        raise ValueError(f"{path} lacks columns {missing}")
    rows = frame[frame[request.label].notna()]
    if rows.empty:
        raise ValueError(f"{path} has no labelled rows (label column {request.label!r})")
    return rows


def build_pipeline(request: TrainingRequest) -> Pipeline:
    categorical = list(request.categorical_features)
    if stray := sorted(set(categorical) - set(request.features)):
        raise ValueError(f"categorical features {stray} are not among the features")
    if request.task not in ESTIMATORS:
        raise ValueError(f"unknown task {request.task!r}: expected one of {sorted(ESTIMATORS)}")
    params = dict(request.hyperparameters)
    choice = str(params.pop(ESTIMATOR_KEY, DEFAULT_ESTIMATOR))
    choices = ESTIMATORS[request.task]
    if choice not in choices:
        raise ValueError(
            f"unknown estimator {choice!r} for {request.task}: expected one of {sorted(choices)}"
        )
    model = choices[choice]()
    numeric = [f for f in request.features if f not in categorical]
    preprocess = ColumnTransformer(
        [
            # Dense output: HistGradientBoosting does not take sparse input.
            (
                "categorical",
                OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                categorical,
            ),
            ("numeric", StandardScaler(), numeric),
        ]
    )
    pipeline = Pipeline([("preprocess", preprocess), ("model", model)])
    if "random_state" in model.get_params():
        pipeline.set_params(model__random_state=request.seed)
    pipeline.set_params(**pipeline_params(pipeline, choice, params))
    return pipeline


def pipeline_params(pipeline: Pipeline, choice: str, params: dict[str, Any]) -> dict[str, Any]:
    """Map hyperparameters to pipeline parameter paths; refuse any that has no home."""
    valid = pipeline.get_params(deep=True)
    resolved: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in params.items():
        path = key if "__" in key else f"model__{key}"
        if path not in valid:
            unknown.append(key)
            continue
        resolved[path] = None if value in ("none", "None") else value
    if unknown:
        accepted = sorted(pipeline.named_steps["model"].get_params(deep=False))
        raise ValueError(
            f"unknown hyperparameters for {choice}: {sorted(unknown)}. It accepts "
            f"{ESTIMATOR_KEY!r}, {', '.join(accepted)}, or a pipeline parameter by its full "
            "path (e.g. preprocess__categorical__min_frequency)"
        )
    return resolved


def validation_metrics(
    pipeline: Pipeline, validation: pd.DataFrame, request: TrainingRequest
) -> dict[str, float]:
    features, truth = validation[request.features], validation[request.label]
    if request.task == "regression":
        predicted = pipeline.predict(features)
        metrics = {
            "rmse": math.sqrt(mean_squared_error(truth, predicted)),
            "mae": mean_absolute_error(truth, predicted),
            "r2": r2_score(truth, predicted),
        }
    else:
        metrics = classification_metrics(pipeline, features, truth)
    # Undefined metrics (e.g. r2 of one row) are left out: messages refuse NaN.
    return {name: float(value) for name, value in metrics.items() if math.isfinite(value)}


def classification_metrics(
    pipeline: Pipeline, features: pd.DataFrame, truth: pd.Series[Any]
) -> dict[str, float]:
    classes = pipeline.classes_
    predicted = pipeline.predict(features)
    binary = len(classes) == 2
    averaging: dict[str, Any] = (
        {"average": "binary", "pos_label": classes[1]} if binary else {"average": "macro"}
    )
    metrics = {
        "accuracy": float(accuracy_score(truth, predicted)),
        "precision": float(precision_score(truth, predicted, zero_division=0, **averaging)),
        "recall": float(recall_score(truth, predicted, zero_division=0, **averaging)),
    }
    # Probability metrics need every validation label to be a class the model knows.
    if set(truth.unique()) <= set(classes):
        probabilities = pipeline.predict_proba(features)
        metrics["log_loss"] = float(log_loss(truth, probabilities, labels=classes))
        if truth.nunique() > 1:
            metrics["roc_auc"] = float(
                roc_auc_score(truth == classes[1], probabilities[:, 1])
                if binary
                else roc_auc_score(truth, probabilities, multi_class="ovr", labels=classes)
            )
    return metrics
