"""The training container's entry, shared by SageMaker training jobs and Vertex CustomJobs.

    python -m activities.container_entry --job PATH --train PATH --validation PATH
        --model-dir DIR [--failure-file PATH] [--backend NAME]

The cloud stages the TrainingJob JSON and the two data files somewhere inside the container
(SageMaker: /opt/ml/input/data/<channel>/); this entry points the request at them, pins the
output dir to `--model-dir` (what the platform uploads when the job ends: SageMaker tars
/opt/ml/model into model.tar.gz) and runs the user's entrypoint in-process. It writes
`<model-dir>/result.json`, a TrainingResult whose artifact_path is RELATIVE to the model dir, so
the worker can resolve it wherever it extracts the archive. On failure the error (first 1 KB,
SageMaker's /opt/ml/output/failure convention, which becomes the job's FailureReason) goes to
`--failure-file` and the exit status is 1.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

from activities.training_runner import (
    RESULT_FILE,
    checked_output,
    resolve_entrypoint,
    sha256_file,
    write_atomically,
)
from workflows.loop.models import TrainingJob, TrainingResult

# SageMaker keeps at most 1 KB of the failure file as the job's FailureReason.
FAILURE_LIMIT = 1024


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m activities.container_entry")
    parser.add_argument("--job", type=Path, required=True)
    parser.add_argument("--train", required=True)
    parser.add_argument("--validation", required=True)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--failure-file", type=Path)
    parser.add_argument("--backend", default="container")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> TrainingResult:
    model_dir: Path = args.model_dir.resolve()
    job = TrainingJob.model_validate_json(args.job.read_text())
    request = job.request.model_copy(
        update={
            "train_path": args.train,
            "validation_path": args.validation,
            "output_dir": str(model_dir),
        }
    )
    model_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    output = checked_output(resolve_entrypoint(job.entrypoint)(request), model_dir)
    artifact = Path(output.artifact_path)
    if not artifact.is_relative_to(model_dir):
        raise ValueError(f"the entrypoint's artifact {artifact} is outside the model dir")
    result = TrainingResult(
        artifact_path=str(artifact.relative_to(model_dir)),
        artifact_sha256=sha256_file(artifact),
        metrics=output.metrics,
        duration_seconds=time.monotonic() - started,
        backend=args.backend,
    )
    write_atomically(model_dir / RESULT_FILE, result.model_dump_json(indent=2))
    return result


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        run(args)
    # SystemExit too: an entrypoint calling sys.exit() has failed.
    except (Exception, SystemExit) as exc:
        print(traceback.format_exc(), file=sys.stderr, flush=True)
        if args.failure_file is not None:
            args.failure_file.parent.mkdir(parents=True, exist_ok=True)
            text = f"{type(exc).__name__}: {exc}"
            args.failure_file.write_bytes(text.encode()[:FAILURE_LIMIT])
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
