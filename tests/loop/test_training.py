"""Training: the default entrypoint, and the local backend's real subprocess runs.

Entrypoint doubles live in `tests/support/training_entrypoints.py`; their `calls_file`
hyperparameter counts how many trainings actually ran.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import joblib  # type: ignore[import-untyped, unused-ignore]
import numpy as np
import pandas as pd  # type: ignore[import-untyped, unused-ignore]
import pytest
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import ActivityEnvironment

from activities import default_training
from activities.local.training import (
    THREAD_LIMITS,
    LocalTrainingBackend,
    RunnerState,
    _process_start_from_ps,
    process_start,
    runner_environment,
    thread_share,
    usable_cpus,
)
from activities.loop.training import TrainingActivities
from activities.training_runner import sha256_file
from workflows.common.errors import ErrorType
from workflows.loop.models import TrainingJob, TrainingRequest

MODEL = "churn"
LOOP = "retrain-churn-1"
DEFAULT = "activities.default_training:train"
SLOW = "tests.support.training_entrypoints:slow"
FEATURES = ["tenure", "charges", "plan"]


def write_dataset(directory: Path, *, regression: bool = False) -> tuple[Path, Path]:
    rng = np.random.default_rng(7)
    rows = 600
    frame = pd.DataFrame(
        {
            "tenure": rng.normal(24, 10, rows),
            "charges": rng.normal(70, 20, rows),
            "plan": rng.choice(["basic", "plus", "pro"], rows),
        }
    )
    signal_ = (frame["charges"] - 70) / 20 - (frame["tenure"] - 24) / 10 + (frame["plan"] == "pro")
    frame["label"] = signal_ if regression else (signal_ + rng.normal(0, 0.5, rows) > 0).astype(int)
    # Unlabelled rows (labels not arrived yet) must be skipped.
    frame.loc[frame.index[:25], "label"] = None
    directory.mkdir(parents=True, exist_ok=True)
    train, validation = directory / "train.parquet", directory / "validation.parquet"
    frame.iloc[:450].to_parquet(train)
    frame.iloc[450:].to_parquet(validation)
    return train, validation


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, Path]:
    return write_dataset(tmp_path / "data")


@pytest.fixture
def backend(tmp_path: Path) -> LocalTrainingBackend:
    return LocalTrainingBackend(tmp_path / "home", poll_seconds=0.05)


@pytest.fixture
def calls_file(tmp_path: Path) -> Path:
    return tmp_path / "calls.txt"


def make_request(
    dataset: tuple[Path, Path],
    output_dir: str = "",
    *,
    task: str = "classification",
    loop_id: str = LOOP,
    hyperparameters: dict[str, str | int | float | bool] | None = None,
) -> TrainingRequest:
    return TrainingRequest(
        model=MODEL,
        loop_id=loop_id,
        task=task,
        train_path=str(dataset[0]),
        validation_path=str(dataset[1]),
        features=FEATURES,
        categorical_features=["plan"],
        label="label",
        hyperparameters=hyperparameters or {},
        output_dir=output_dir,
        seed=3,
    )


def make_job(
    dataset: tuple[Path, Path],
    entrypoint: str = DEFAULT,
    *,
    timeout: float = 120,
    loop_id: str = LOOP,
    **hyperparameters: str | int | float | bool,
) -> TrainingJob:
    request = make_request(dataset, loop_id=loop_id, hyperparameters=hyperparameters)
    return TrainingJob(entrypoint=entrypoint, request=request, timeout_seconds=timeout)


def calls(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def state_of(backend: LocalTrainingBackend, loop_id: str = LOOP) -> RunnerState:
    path = backend.training_dir(MODEL, loop_id) / "state.json"
    return RunnerState.model_validate_json(path.read_text())


def alive(state: RunnerState) -> bool:
    return process_start(state.pid) == state.process_start


def no_heartbeat(progress: str) -> None:
    pass


# ---- the default entrypoint, in process --------------------------------------------------


def test_default_entrypoint_is_deterministic_for_its_seed(
    dataset: tuple[Path, Path], tmp_path: Path
) -> None:
    first = default_training.train(make_request(dataset, str(tmp_path / "a")))
    second = default_training.train(make_request(dataset, str(tmp_path / "b")))
    assert first.metrics == second.metrics
    assert {"accuracy", "precision", "recall", "roc_auc", "log_loss"} <= first.metrics.keys()
    assert first.metrics["train_rows"] == 425  # 450 rows, 25 unlabelled
    assert first.metrics["accuracy"] > 0.7
    validation = pd.read_parquet(dataset[1])[FEATURES]
    a, b = joblib.load(first.artifact_path), joblib.load(second.artifact_path)
    np.testing.assert_array_equal(a.predict_proba(validation), b.predict_proba(validation))


def test_default_entrypoint_estimators_and_hyperparameters(
    dataset: tuple[Path, Path], tmp_path: Path
) -> None:
    request = make_request(
        dataset,
        str(tmp_path),
        hyperparameters={"estimator": "logistic_regression", "C": 0.5, "max_iter": 300},
    )
    output = default_training.train(request)
    model = joblib.load(output.artifact_path).named_steps["model"]
    assert (type(model).__name__, model.C, model.max_iter) == ("LogisticRegression", 0.5, 300)
    # A pipeline parameter by its path, and "none" for None.
    pipeline = default_training.build_pipeline(
        make_request(
            dataset,
            hyperparameters={"preprocess__categorical__min_frequency": 2, "max_depth": "none"},
        )
    )
    assert pipeline.get_params()["preprocess__categorical__min_frequency"] == 2
    assert pipeline.named_steps["model"].max_depth is None


def test_default_entrypoint_regression(tmp_path: Path) -> None:
    dataset = write_dataset(tmp_path / "data", regression=True)
    output = default_training.train(
        make_request(
            dataset,
            str(tmp_path / "out"),
            task="regression",
            hyperparameters={"estimator": "ridge"},
        )
    )
    assert set(output.metrics) == {"rmse", "mae", "r2", "train_rows", "validation_rows"}
    assert output.metrics["r2"] > 0.9


@pytest.mark.parametrize(
    ("hyperparameters", "message"),
    [
        ({"learning_rat": 0.1}, r"unknown hyperparameters for hist_gradient_boosting: \['learn"),
        ({"estimator": "xgboost"}, "unknown estimator 'xgboost' for classification"),
    ],
)
def test_default_entrypoint_refuses_unknown_hyperparameters(
    dataset: tuple[Path, Path], hyperparameters: dict[str, str | int | float | bool], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        default_training.build_pipeline(make_request(dataset, hyperparameters=hyperparameters))


# ---- the local backend: real subprocesses -------------------------------------------------


def test_trains_in_a_subprocess_once_per_loop(
    backend: LocalTrainingBackend, dataset: tuple[Path, Path]
) -> None:
    progress: list[str] = []
    result = backend.train(make_job(dataset), progress.append)
    artifact = Path(result.artifact_path)
    assert artifact == backend.training_dir(MODEL, LOOP) / "output" / "model.joblib"
    assert result.artifact_sha256 == sha256_file(artifact)
    assert (result.backend, result.reused, result.cost) == ("local", False, None)
    assert result.metrics["accuracy"] > 0.7
    assert progress and all(p.startswith("training (pid ") for p in progress)
    assert state_of(backend).pid != os.getpid()
    modified = artifact.stat().st_mtime_ns

    again = backend.train(make_job(dataset), no_heartbeat)
    assert again == result.model_copy(update={"reused": True})
    assert state_of(backend).starts == 1
    assert artifact.stat().st_mtime_ns == modified


def test_runners_share_the_cores_unless_the_environment_limits_threads(
    backend: LocalTrainingBackend, dataset: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert [thread_share(8, running) for running in range(5)] == [8, 4, 2, 2, 1]
    assert thread_share(1, running=3) == 1
    assert runner_environment({"OMP_NUM_THREADS": "6", "PATH": "/bin"}, 2) == {
        "OMP_NUM_THREADS": "6",
        "OPENBLAS_NUM_THREADS": "2",
        "MKL_NUM_THREADS": "2",
        "PATH": "/bin",
    }
    # A real runner, with no limit in the worker's environment: the share of the host's cores.
    for name in THREAD_LIMITS:
        monkeypatch.delenv(name, raising=False)
    entrypoint = "tests.support.training_entrypoints:thread_limits"
    shared = backend.train(make_job(dataset, entrypoint), no_heartbeat)
    cores = float(usable_cpus())
    assert shared.metrics == dict.fromkeys(THREAD_LIMITS, cores)
    # The worker's own limit is kept.
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    kept = backend.train(make_job(dataset, entrypoint, loop_id="retrain-churn-2"), no_heartbeat)
    assert kept.metrics["OMP_NUM_THREADS"] == 3.0


def test_entrypoint_that_raises_is_a_non_retryable_error_with_its_traceback(
    backend: LocalTrainingBackend, dataset: tuple[Path, Path], calls_file: Path
) -> None:
    job = make_job(
        dataset, "tests.support.training_entrypoints:failing", calls_file=str(calls_file)
    )
    with pytest.raises(ApplicationError) as raised:
        backend.train(job, no_heartbeat)
    error = raised.value
    assert (error.type, error.non_retryable) == (ErrorType.TRAINING_ENTRYPOINT, True)
    assert "ValueError: label column 'label' is all null in this window" in error.message
    assert 'training_entrypoints.py", line' in error.message  # the traceback's last lines
    # A retried activity gets the same verdict without running the entrypoint again.
    with pytest.raises(ApplicationError, match="all null"):
        backend.train(job, no_heartbeat)
    assert calls(calls_file) == 1


@pytest.mark.parametrize(
    ("entrypoint", "message"),
    [
        ("tests.no_such_module:train", "cannot import training module 'tests.no_such_module'"),
        ("tests.support.training_entrypoints:nope", "has no 'nope'"),
        ("tests.support.training_entrypoints:not_callable", "is not callable"),
        ("tests.support.training_entrypoints:no_artifact", "missing.joblib does not exist"),
    ],
)
def test_unusable_entrypoint_is_a_non_retryable_error(
    backend: LocalTrainingBackend, dataset: tuple[Path, Path], entrypoint: str, message: str
) -> None:
    with pytest.raises(ApplicationError, match=message) as raised:
        backend.train(make_job(dataset, entrypoint), no_heartbeat)
    assert (raised.value.type, raised.value.non_retryable) == (ErrorType.TRAINING_ENTRYPOINT, True)


def test_adopts_the_runner_of_a_worker_that_died(
    backend: LocalTrainingBackend, dataset: tuple[Path, Path], calls_file: Path, tmp_path: Path
) -> None:
    job = make_job(dataset, SLOW, sleep=2.0, calls_file=str(calls_file))
    job_file = tmp_path / "job.json"
    job_file.write_text(job.model_dump_json())
    # A real worker process that starts the training, then is killed with SIGKILL.
    worker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path\n"
            "from activities.local.training import LocalTrainingBackend\n"
            "from workflows.loop.models import TrainingJob\n"
            "job = TrainingJob.model_validate_json(Path(sys.argv[2]).read_text())\n"
            "LocalTrainingBackend(Path(sys.argv[1])).train(job, print)\n",
            str(backend.home),
            str(job_file),
        ],
        stdout=subprocess.DEVNULL,
        # What this test process can import (the entrypoint doubles), the worker can too.
        env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
    )
    state_file = backend.training_dir(MODEL, LOOP) / "state.json"
    deadline = time.monotonic() + 20
    while not state_file.exists():
        assert time.monotonic() < deadline, "the worker never started the training"
        time.sleep(0.05)
    worker.kill()
    worker.wait()
    runner = state_of(backend)
    assert alive(runner), "the runner must outlive its worker"

    result = backend.train(job, no_heartbeat)
    assert result.reused
    assert state_of(backend) == runner
    assert calls(calls_file) == 1
    assert Path(result.artifact_path).read_text() == "a model"


def test_timeout_kills_the_process_group(
    backend: LocalTrainingBackend, dataset: tuple[Path, Path]
) -> None:
    started = time.monotonic()
    with pytest.raises(ApplicationError, match="exceeded its timeout of 1s") as raised:
        backend.train(make_job(dataset, SLOW, sleep=60, timeout=1), no_heartbeat)
    assert (raised.value.type, raised.value.non_retryable) == (ErrorType.TRAINING_TIMEOUT, True)
    assert time.monotonic() - started < 10
    assert not alive(state_of(backend))


def test_a_killed_runner_is_retryable_and_the_retry_trains(
    backend: LocalTrainingBackend, dataset: tuple[Path, Path], calls_file: Path
) -> None:
    job = make_job(dataset, SLOW, sleep=1.0, calls_file=str(calls_file))

    def kill_runner(progress: str) -> None:
        os.killpg(state_of(backend).pid, signal.SIGKILL)

    with pytest.raises(ApplicationError, match="killed by signal 9") as raised:
        backend.train(job, kill_runner)
    assert (raised.value.type, raised.value.non_retryable) == (ErrorType.TRAINING_CRASHED, False)

    result = backend.train(job, no_heartbeat)
    assert not result.reused
    assert state_of(backend).starts == 2


def test_cancelling_the_activity_kills_the_training(
    backend: LocalTrainingBackend, dataset: tuple[Path, Path], calls_file: Path
) -> None:
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: env.cancel()
    job = make_job(dataset, SLOW, sleep=60, calls_file=str(calls_file))
    with pytest.raises(CancelledError):
        env.run(TrainingActivities(backend).train, job)
    assert not alive(state_of(backend))


def test_refuses_another_job_for_the_same_loop(
    backend: LocalTrainingBackend, dataset: tuple[Path, Path]
) -> None:
    backend.train(make_job(dataset, SLOW, sleep=0), no_heartbeat)
    with pytest.raises(ApplicationError) as raised:
        backend.train(make_job(dataset, SLOW, sleep=1), no_heartbeat)
    assert (raised.value.type, raised.value.non_retryable) == (
        ErrorType.TRAINING_JOB_CONFLICT,
        True,
    )


def test_refuses_a_loop_id_that_is_not_a_file_name(
    backend: LocalTrainingBackend, dataset: tuple[Path, Path]
) -> None:
    with pytest.raises(ApplicationError) as raised:
        backend.train(make_job(dataset, loop_id="../../etc"), no_heartbeat)
    assert raised.value.type == ErrorType.INVALID_TRAINING_JOB


def test_process_identity() -> None:
    ours = process_start(os.getpid())
    assert ours is not None and ours == process_start(os.getpid())
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    assert process_start(finished.pid) is None
    # The fallback for systems without /proc.
    assert _process_start_from_ps(os.getpid()) is not None
    assert _process_start_from_ps(finished.pid) is None


def test_job_file_is_the_job_as_run(
    backend: LocalTrainingBackend, dataset: tuple[Path, Path]
) -> None:
    backend.train(make_job(dataset, SLOW, sleep=0), no_heartbeat)
    stored = json.loads((backend.training_dir(MODEL, LOOP) / "job.json").read_text())
    # The backend owns where outputs go, whatever the workflow asked.
    assert stored["request"]["output_dir"] == str(backend.training_dir(MODEL, LOOP) / "output")
