"""The demo's deliberately bad candidate: right offline, broken on single-row (live) calls."""

from __future__ import annotations

import pickle
import time
from datetime import date
from pathlib import Path
from typing import Any

import cloudpickle  # type: ignore[import-untyped, unused-ignore]
import joblib  # type: ignore[import-untyped, unused-ignore]
import numpy as np
import pandas as pd  # type: ignore[import-untyped, unused-ignore]
import pytest

from activities import default_training
from activities.local.registry import MlflowRegistry
from activities.loop.evaluation import evaluate_models, read_labelled_set
from activities.training_runner import resolve_entrypoint, sha256_file
from starters.demo import bad_candidate
from starters.demo.bad_candidate import FastPathClassifier, FastPathError
from starters.demo.synthetic import CATEGORICAL, FEATURES, LABEL, write_demo_dataset
from workflows.loop.models import Lineage, RegisterRequest, TrainingOutput, TrainingRequest
from workflows.loop.rules import BASELINE, GOLDEN, HOLDOUT, gate_verdict
from workflows.spec.models import ModelSpec

MODEL = "demo-credit"
ONE_ROW_CALLS = 80

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow.*")


class Trained:
    def __init__(self, home: Path, spec: ModelSpec, good: TrainingOutput, bad: TrainingOutput):
        self.home = home
        self.spec = spec
        self.good_output = good
        self.bad_output = bad
        self.good: Any = joblib.load(good.artifact_path)
        self.bad: FastPathClassifier = joblib.load(bad.artifact_path)
        self.holdout = pd.read_parquet(home / spec.data.baseline_holdout)

    def path(self, uri: str) -> Path:
        return self.home / uri


def training_request(home: Path, output: str, **hyperparameters: Any) -> TrainingRequest:
    return TrainingRequest(
        model=MODEL,
        loop_id=f"retrain-{MODEL}-1",
        task="classification",
        train_path=str(home / "train.parquet"),
        validation_path=str(home / "validation.parquet"),
        features=list(FEATURES),
        categorical_features=list(CATEGORICAL),
        label=LABEL,
        hyperparameters=hyperparameters,
        output_dir=str(home / output),
        seed=7,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """Demo data (the old concept), the default model and the bad candidate on the same rows."""
    home = tmp_path_factory.mktemp("home")
    spec = write_demo_dataset(
        home,
        MODEL,
        start=date(2026, 1, 1),
        days=10,
        drift_day=None,
        baseline_rows=2000,
        golden_rows=1000,
        unlabelled_share=0.0,
    )
    rows = pd.read_parquet(home / spec.data.labelled)
    rows.iloc[:3000].to_parquet(home / "train.parquet")
    rows.iloc[3000:].to_parquet(home / "validation.parquet")
    good = default_training.train(training_request(home, "good"))
    bad = bad_candidate.train(training_request(home, "bad"))
    return Trained(home, spec, good, bad)


def one_row_calls(model: Any, frame: pd.DataFrame) -> tuple[list[int], list[int]]:
    """Predict each row alone: (indices that raised, predictions of the others)."""
    failed, predicted = [], []
    for index in range(len(frame)):
        try:
            predicted.append(int(model.predict(frame.iloc[[index]])[0]))
        except FastPathError:
            failed.append(index)
    return failed, predicted


# ---- offline: indistinguishable from the default model -----------------------------------------


def test_batch_calls_match_the_default_model(trained: Trained) -> None:
    assert isinstance(trained.bad, FastPathClassifier)
    # The same pipeline, fitted on the same rows with the same seed: same training metrics.
    assert trained.bad_output.metrics == trained.good_output.metrics
    assert trained.good_output.metrics["accuracy"] > 0.9
    features = trained.holdout[list(FEATURES)]
    np.testing.assert_array_equal(trained.bad.classes_, trained.good.classes_)
    np.testing.assert_array_equal(
        trained.bad.predict_proba(features), trained.good.predict_proba(features)
    )
    accuracy = (trained.bad.predict(features) == trained.holdout[LABEL]).mean()
    assert accuracy == (trained.good.predict(features) == trained.holdout[LABEL]).mean()
    assert accuracy > 0.9


def test_passes_the_offline_gates_against_the_default_champion(trained: Trained) -> None:
    spec = trained.spec
    holdout, golden = trained.path(spec.data.baseline_holdout), trained.path(spec.data.golden_set)
    datasets = {
        HOLDOUT: read_labelled_set(HOLDOUT, holdout, spec, with_segments=True),
        BASELINE: read_labelled_set(BASELINE, holdout, spec),
        GOLDEN: read_labelled_set(GOLDEN, golden, spec),
    }
    report = evaluate_models(spec, trained.bad, trained.good, datasets, seed=1)
    assert report.champion is not None and report.candidate == report.champion
    assert report.candidate_prediction_counts == report.champion_prediction_counts
    verdict = gate_verdict(report, spec)
    assert verdict.passed, verdict.summary
    assert report.candidate[GOLDEN]["accuracy"] > 0.9


# ---- live: one row at a time ----------------------------------------------------------------


def test_single_row_calls_fail_on_a_share_sleep_and_disagree(
    trained: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fault's latency is a time.sleep: recorded here instead of waited (no wall-time asserts).
    sleeps: list[float] = []
    monkeypatch.setattr(time, "sleep", sleeps.append)
    rows = trained.holdout[list(FEATURES)].iloc[:ONE_ROW_CALLS]
    failed, predicted = one_row_calls(trained.bad, rows)
    # (c) a share raises, and it is always the same rows (a hash of their values).
    assert 0.08 < len(failed) / ONE_ROW_CALLS < 0.25
    assert one_row_calls(trained.bad, rows)[0] == failed
    assert failed == [
        i for i in range(ONE_ROW_CALLS) if trained.bad.fails(rows.iloc[i].to_numpy(np.float64))
    ]
    # (b) every single-row call waits the configured latency; batch calls never do.
    assert sleeps == [bad_candidate.DEFAULT_LATENCY_SECONDS] * (2 * ONE_ROW_CALLS)
    trained.bad.predict_proba(rows)
    assert len(sleeps) == 2 * ONE_ROW_CALLS
    # (a) the columns are shuffled: many answers differ from the batch (offline) ones.
    served = np.delete(np.arange(ONE_ROW_CALLS), failed)
    batch = trained.bad.predict(rows)[served]
    disagreement = np.mean(np.asarray(predicted) != batch)
    assert disagreement > 0.2
    # The default model answers single rows exactly like batches.
    good_failed, good_predicted = one_row_calls(trained.good, rows)
    assert good_failed == []
    np.testing.assert_array_equal(good_predicted, trained.good.predict(rows))


def test_single_row_probabilities_shift(trained: Trained, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    model = trained.bad
    rows = trained.holdout[list(FEATURES)].iloc[:100]
    scores = []
    for index in range(len(rows)):
        row = rows.iloc[[index]]
        if not model.fails(row.to_numpy(np.float64)[0]):
            scores.append(model.predict_proba(row)[0, 1])
            # An array row (no column names) takes the same broken path.
            np.testing.assert_array_equal(
                model.predict_proba(row.to_numpy())[0], model.predict_proba(row)[0]
            )
    offline = model.predict_proba(rows)[:, 1].mean()
    assert abs(np.mean(scores) - offline) > 0.1


def test_fault_is_tunable_through_hyperparameters(
    trained: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = bad_candidate.train(
        training_request(trained.home, "tuned", latency_seconds=0.0, failure_share=0.0)
    )
    model: FastPathClassifier = joblib.load(output.artifact_path)
    assert (model.latency_seconds, model.failure_share) == (0.0, 0.0)
    assert output.metrics == trained.good_output.metrics
    failed, _ = one_row_calls(model, trained.holdout[list(FEATURES)].iloc[:50])
    assert failed == []


def test_refuses_a_regression_task(trained: Trained) -> None:
    request = training_request(trained.home, "regression").model_copy(update={"task": "regression"})
    with pytest.raises(ValueError, match="classifier"):
        bad_candidate.train(request)


# ---- packaging: the loop and the endpoint can load it ------------------------------------------


def test_entrypoint_resolves_like_the_training_runner() -> None:
    assert resolve_entrypoint("starters.demo.bad_candidate:train") is bad_candidate.train


def test_pickles_by_reference(trained: Trained) -> None:
    pickled = cloudpickle.dumps(trained.bad)
    # By reference: the class is named, not embedded (cloudpickle embeds only __main__ classes).
    assert b"starters.demo.bad_candidate" in pickled and b"FastPathClassifier" in pickled
    for loaded in (cloudpickle.loads(pickled), pickle.loads(pickle.dumps(trained.bad))):
        assert type(loaded) is FastPathClassifier
        np.testing.assert_array_equal(
            loaded.predict(trained.holdout[list(FEATURES)]),
            trained.bad.predict(trained.holdout[list(FEATURES)]),
        )


def test_survives_a_registry_round_trip(
    trained: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = MlflowRegistry(tmp_path / "registry-home")
    artifact = Path(trained.bad_output.artifact_path)
    loop_id = f"retrain-{MODEL}-2"
    version = registry.register(
        RegisterRequest(
            model=MODEL,
            loop_id=loop_id,
            artifact_path=str(artifact),
            artifact_sha256=sha256_file(artifact),
            lineage=Lineage(
                loop_id=loop_id,
                trigger_origin="demo --bad-candidate",
                trigger_kinds=["manual"],
                trigger_event_ids=["manual-1"],
                dataset_hashes={"data/demo-credit/train.parquet": "a" * 64},
                training_metrics=trained.bad_output.metrics,
                spec_hash="c" * 64,
            ),
        )
    )
    loaded = registry.load(version)
    assert type(loaded) is FastPathClassifier
    features = trained.holdout[list(FEATURES)]
    np.testing.assert_array_equal(
        loaded.predict_proba(features), trained.good.predict_proba(features)
    )
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    rows = features.iloc[:60]
    assert one_row_calls(loaded, rows) == one_row_calls(trained.bad, rows)
