"""A model's backend settings are validated with the spec, before anything runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tests.support.cloud_data import azure_settings, sagemaker_settings, vertex_settings
from tests.support.loop_harness import with_changes, write_dataset
from workflows.spec.models import ModelSpec


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> ModelSpec:
    from datetime import date

    return write_dataset(tmp_path_factory.mktemp("home"), "credit", date(2026, 3, 31))


def changed(spec: ModelSpec, **changes: Any) -> ModelSpec:
    return with_changes(spec, changes)


def test_a_sagemaker_model_reads_s3_and_a_vertex_model_reads_gcs(spec: ModelSpec) -> None:
    s3 = {"labelled": "s3://b/l", "baseline_holdout": "s3://b/b.parquet", "golden_set": "s3://b/g"}
    on_aws = changed(spec, backend="sagemaker", sagemaker=sagemaker_settings(), data=s3)
    assert on_aws.sagemaker is not None and on_aws.sagemaker.autoscaling is not None
    gs = {k: v.replace("s3://", "gs://") for k, v in s3.items()}
    on_gcp = changed(spec, backend="vertex", vertex=vertex_settings(), data=gs)
    assert on_gcp.vertex is not None and on_gcp.vertex.staging_bucket.startswith("gs://")
    # Local files stay allowed on a cloud backend (they are uploaded as training inputs).
    assert changed(spec, backend="sagemaker", sagemaker=sagemaker_settings()).backend == "sagemaker"


def test_an_azure_model_reads_blob_storage_and_may_shadow(spec: ModelSpec) -> None:
    az = {"labelled": "az://c/l", "baseline_holdout": "az://c/b.parquet", "golden_set": "az://c/g"}
    on_azure = changed(
        spec,
        backend="azure",
        azure=azure_settings(),
        data=az,
        loop={"deployment": {"shadow": "10m"}},
    )
    settings = on_azure.azure
    assert settings is not None and settings.store_root == "az://retrain-tests/retrain"
    assert settings.datastore_uri("a/b") == "azureml://datastores/workspaceblobstore/paths/a/b"
    assert settings.training_price("Standard_DS3_v2") == 0.293
    assert settings.ground_truth_prefix() == "retrain/ground-truth"
    assert on_azure.backend_settings is settings


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"backend": "sagemaker"}, "backend sagemaker needs its settings in 'sagemaker'"),
        ({"vertex": vertex_settings()}, "'vertex' settings given, but the backend is local"),
        (
            {"backend": "vertex", "vertex": vertex_settings(), "data": {"labelled": "s3://b/x"}},
            "cannot be read by the vertex backend",
        ),
        (
            {"backend": "sagemaker", "sagemaker": sagemaker_settings(role_arn="admin")},
            "role_arn",
        ),
        (
            {"backend": "sagemaker", "sagemaker": sagemaker_settings(bucket="Not_A_Bucket")},
            "bucket",
        ),
        (
            {
                "backend": "sagemaker",
                "sagemaker": sagemaker_settings(autoscaling={"min_capacity": 5, "max_capacity": 2}),
            },
            "min_capacity must not exceed max_capacity",
        ),
        (
            {"backend": "vertex", "vertex": vertex_settings(staging_bucket="s3://wrong")},
            "staging_bucket",
        ),
        (
            {
                "backend": "vertex",
                "vertex": vertex_settings(),
                "loop": {"deployment": {"shadow": "10m"}},
            },
            "vertex endpoints have no shadow deployments",
        ),
        (
            {"backend": "sagemaker", "sagemaker": sagemaker_settings(aws_secret_access_key="x")},
            "Extra inputs are not permitted",
        ),
        (
            {"backend": "azure", "azure": azure_settings(), "data": {"labelled": "gs://b/x"}},
            "cannot be read by the azure backend",
        ),
        (
            {"backend": "azure", "azure": azure_settings(client_secret="x")},
            "Extra inputs are not permitted",
        ),
        (
            {"backend": "azure", "azure": azure_settings(container="Not_A_Container")},
            "container",
        ),
        (
            {"backend": "azure", "azure": azure_settings(mirror_percentage=60)},
            "mirror_percentage",
        ),
        (
            {
                "backend": "azure",
                "azure": azure_settings(
                    autoscale={
                        "scheduled": [
                            {"name": "x", "days": ["Sunday"], "hour": 2, "minimum": 5, "maximum": 2}
                        ]
                    }
                ),
            },
            "minimum must not exceed maximum",
        ),
    ],
)
def test_bad_settings_are_refused_with_the_reason(
    spec: ModelSpec, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        changed(spec, **changes)


def test_the_settings_round_trip_through_json(spec: ModelSpec, tmp_path: Path) -> None:
    aws = changed(
        spec,
        backend="sagemaker",
        sagemaker=sagemaker_settings(
            pipeline_name="retrain-pipeline",
            sns_topic_arn="arn:aws:sns:us-east-1:123456789012:reviews",
            autoscaling={
                "scheduled": [
                    {
                        "name": "morning-peak",
                        "schedule": "cron(0 7 ? * MON-FRI *)",
                        "min_capacity": 3,
                        "max_capacity": 8,
                    }
                ]
            },
        ),
    )
    path = tmp_path / "spec.json"
    path.write_text(aws.model_dump_json())
    assert ModelSpec.model_validate(json.loads(path.read_text())) == aws


def test_the_cli_prints_a_refused_pattern_intact(spec: ModelSpec, tmp_path: Path) -> None:
    """Validation messages quote regex patterns; the console must not read them as markup."""
    import subprocess
    import sys

    bad = json.loads(spec.model_dump_json())
    bad.update(backend="sagemaker", sagemaker=sagemaker_settings(role_arn="admin"))
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    retrain = Path(sys.executable).parent / "retrain"
    done = subprocess.run(
        [str(retrain), "models", "validate", str(path)],
        capture_output=True,
        text=True,
        env={"RETRAIN_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "COLUMNS": "300"},
        check=False,
    )
    assert done.returncode == 2
    assert r"^arn:aws[a-z-]*:iam::\d{12}:role/" in done.stderr


@pytest.mark.parametrize(
    ("arn", "accepted"),
    [
        ("arn:aws:sns:us-east-1:123456789012:retrain", True),
        ("arn:aws:sns:us-east-1:123456789012:retrain.fifo", True),
        ("arn:aws:sns:us-east-1:123456789012:retrain.other", False),
        ("arn:aws:sns:us-east-1:123456789012:" + "a" * 257, False),
    ],
)
def test_sns_topics_may_be_fifo(spec: ModelSpec, arn: str, accepted: bool) -> None:
    settings = {**sagemaker_settings(), "sns_topic_arn": arn}
    if accepted:
        assert changed(spec, backend="sagemaker", sagemaker=settings).sagemaker is not None
    else:
        with pytest.raises(ValidationError, match="sns_topic_arn"):
            changed(spec, backend="sagemaker", sagemaker=settings)
