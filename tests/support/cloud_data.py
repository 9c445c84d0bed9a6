"""A model's data on a cloud store, and the backend settings tests use (moto, the Vertex fake)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from activities.ports import ObjectStore
from tests.support.aws_harness import REGION, ROLE_ARN
from tests.support.loop_harness import with_changes
from workflows.spec.models import ModelSpec

BUCKET = "retrain-tests"
PROJECT = "retrain-tests"
LOCATION = "us-central1"
ENDPOINT = "credit-endpoint"


def sagemaker_settings(**changes: Any) -> dict[str, Any]:
    return {
        "region": REGION,
        "role_arn": ROLE_ARN,
        "bucket": BUCKET,
        "prefix": "retrain",
        "training_image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/retrain:1",
        "inference_image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/retrain-serve:1",
        "endpoint_name": ENDPOINT,
        **changes,
    }


def vertex_settings(**changes: Any) -> dict[str, Any]:
    return {
        "project": PROJECT,
        "location": LOCATION,
        "staging_bucket": f"gs://{BUCKET}",
        "prefix": "retrain",
        "training_image": "us-docker.pkg.dev/retrain-tests/retrain/train:1",
        "serving_image": "us-docker.pkg.dev/retrain-tests/retrain/serve:1",
        "endpoint_name": ENDPOINT,
        **changes,
    }


def azure_settings(**changes: Any) -> dict[str, Any]:
    return {
        "subscription_id": "00000000-0000-0000-0000-000000000001",
        "resource_group": "retrain-rg",
        "workspace": "retrain-ws",
        "storage_account": "retrainstore",
        "container": BUCKET,
        "prefix": "retrain",
        "compute": "cpu-cluster",
        "training_environment": "azureml:retrain-train:1",
        "serving_environment": "azureml:retrain-serve:1",
        "endpoint_name": ENDPOINT,
        **changes,
    }


# The scheme of a cloud store -> the backend reading it and its test settings.
BACKEND_OF_SCHEME = {"s3": "sagemaker", "gs": "vertex", "az": "azure"}
SETTINGS_OF = {"sagemaker": sagemaker_settings, "vertex": vertex_settings, "azure": azure_settings}


def upload_dataset(
    store: ObjectStore, source_home: Path, spec: ModelSpec, scheme: str
) -> ModelSpec:
    """Upload a local dataset (tests/loop_harness.write_dataset) under `<scheme>://BUCKET/data/`
    and return the spec naming it there, on the matching backend."""
    root = f"{scheme}://{BUCKET}/data"

    def resolved(uri: str) -> Path:
        path = Path(uri)
        return path if path.is_absolute() else source_home / path

    labelled = resolved(spec.data.labelled)
    for file in sorted(labelled.glob("date=*/*.parquet")):
        store.upload(file, f"{root}/labelled/{file.parent.name}/{file.name}")
    store.upload(resolved(spec.data.baseline_holdout), f"{root}/baseline.parquet")
    store.upload(resolved(spec.data.golden_set), f"{root}/golden.parquet")
    backend = BACKEND_OF_SCHEME[scheme]
    settings = SETTINGS_OF[backend]()
    return with_changes(
        spec,
        {
            "backend": backend,
            backend: settings,
            "data": {
                "labelled": f"{root}/labelled",
                "baseline_holdout": f"{root}/baseline.parquet",
                "golden_set": f"{root}/golden.parquet",
                "captured": "captured",
            },
        },
    )
