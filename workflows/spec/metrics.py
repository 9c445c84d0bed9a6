"""The model's task and its evaluation metrics (own module: the drift feature's performance
policy and the model spec both name them, and the spec imports the drift feature)."""

from __future__ import annotations

from enum import StrEnum


class Task(StrEnum):
    CLASSIFICATION = "classification"
    REGRESSION = "regression"


class Metric(StrEnum):
    """Evaluation metrics. Classification: the first five; regression: the last three."""

    ACCURACY = "accuracy"
    PRECISION = "precision"
    RECALL = "recall"
    ROC_AUC = "roc_auc"
    LOG_LOSS = "log_loss"
    RMSE = "rmse"
    MAE = "mae"
    R2 = "r2"

    @property
    def higher_is_better(self) -> bool:
        return self not in (Metric.LOG_LOSS, Metric.RMSE, Metric.MAE)

    @property
    def task(self) -> Task:
        regression = (Metric.RMSE, Metric.MAE, Metric.R2)
        return Task.REGRESSION if self in regression else Task.CLASSIFICATION
