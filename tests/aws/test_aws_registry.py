"""The SageMaker Model Registry against moto: model package groups, packages, approvals.

moto implements groups, versioned packages, DescribeModelPackage and UpdateModelPackage; the
ClientToken deduplication of CreateModelPackage (real SageMaker) is not relied on here: the
loop-id search is what these tests exercise. Throttling uses botocore's Stubber.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import joblib  # type: ignore[import-untyped, unused-ignore]
import pytest
from botocore.stub import ANY, Stubber
from moto.sagemaker.models import sagemaker_backends
from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped, unused-ignore]
from temporalio.exceptions import ApplicationError

from activities.aws.registry import SageMakerRegistry
from activities.ports import RegistryError
from activities.training_runner import sha256_file
from tests.support.aws_harness import ACCOUNT, ROLE_ARN, Moto
from workflows.common.errors import ErrorType
from workflows.loop.models import Lineage, PromoteRequest, RegisterRequest
from workflows.spec.sagemaker import SageMakerSettings

BUCKET = "retrain-test"
MODEL = "churn"
GROUP_ARN = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:model-package-group/{MODEL}"


def settings() -> SageMakerSettings:
    return SageMakerSettings(
        region="us-east-1",
        role_arn=ROLE_ARN,
        bucket=BUCKET,
        training_image="123456789012.dkr.ecr.us-east-1.amazonaws.com/retrain:1",
        endpoint_name="churn",
        inference_image="123456789012.dkr.ecr.us-east-1.amazonaws.com/serve:1",
        tags={"team": "growth"},
    )


@pytest.fixture
def registry(moto: Moto, tmp_path: Path) -> SageMakerRegistry:
    clients = moto.clients()
    clients.s3.create_bucket(Bucket=BUCKET)
    return SageMakerRegistry(clients, settings(), tmp_path / "home")


def request(tmp_path: Path, loop_id: str, c: float = 1.0) -> RegisterRequest:
    artifact = tmp_path / loop_id / "model.joblib"
    artifact.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(LogisticRegression(C=c).fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1]), artifact)
    return RegisterRequest(
        model=MODEL,
        loop_id=loop_id,
        artifact_path=str(artifact),
        artifact_sha256=sha256_file(artifact),
        lineage=Lineage(
            loop_id=loop_id,
            trigger_origin="drift",
            trigger_kinds=["drift"],
            # Long enough to exceed SageMaker's 256-character property values.
            trigger_event_ids=[f"evt-{n}" for n in range(100)],
            dataset_hashes={f"s3://data/day={n}.parquet": "ab" * 32 for n in range(30)},
            training_metrics={"accuracy": 0.91, "roc auc (macro)": 0.88},
            spec_hash="f" * 64,
        ),
    )


def test_register_is_idempotent_by_loop_id(registry: SageMakerRegistry, tmp_path: Path) -> None:
    first = registry.register(request(tmp_path, "retrain-churn-1"))
    assert first.version == "1" and first.loop_id == "retrain-churn-1"
    assert first.source.startswith("arn:aws:sagemaker:us-east-1:")
    assert first.aliases == ["challenger"]
    again = registry.register(request(tmp_path, "retrain-churn-1"))
    assert again == first
    sagemaker = registry.clients.sagemaker
    listed = sagemaker.list_model_packages(ModelPackageGroupName=MODEL)["ModelPackageSummaryList"]
    assert len(listed) == 1

    described = sagemaker.describe_model_package(ModelPackageName=first.source)
    assert described["ModelApprovalStatus"] == "PendingManualApproval"
    properties = described["CustomerMetadataProperties"]
    assert properties["loop_id"] == "retrain-churn-1"
    assert properties["metric:roc auc _macro_"] == "0.88"
    assert all(len(value) <= 256 for value in properties.values())
    assert len(properties) <= 50
    container = described["InferenceSpecification"]["Containers"][0]
    assert container["Image"] == settings().inference_image
    url = f"s3://{BUCKET}/adaptive-retraining/runs/churn/retrain-churn-1/registry/model.tar.gz"
    assert container["ModelDataUrl"] == url
    assert described["InferenceSpecification"]["SupportedContentTypes"] == ["application/json"]
    # moto's ListTags cannot parse a versioned package's ARN: read its (in-process) backend.
    package = sagemaker_backends[ACCOUNT]["us-east-1"].model_packages[first.source]
    tags = {t["Key"]: t["Value"] for t in package.tags or []}
    assert tags == {"team": "growth", "model": MODEL, "loop-id": "retrain-churn-1"}


def test_the_group_is_created_tagged(registry: SageMakerRegistry) -> None:
    # moto's ListTags fails on model package groups: check the request with a Stubber.
    with Stubber(registry.clients.sagemaker) as stub:
        stub.add_client_error(
            "describe_model_package_group", "ValidationException", "ModelPackageGroup not found"
        )
        stub.add_response(
            "create_model_package_group",
            {"ModelPackageGroupArn": GROUP_ARN},
            {
                "ModelPackageGroupName": MODEL,
                "ModelPackageGroupDescription": ANY,
                "Tags": [{"Key": "team", "Value": "growth"}, {"Key": "model", "Value": MODEL}],
            },
        )
        assert registry._ensure_group(MODEL) == MODEL
        stub.assert_no_pending_responses()


def test_promote_moves_the_champion_and_is_idempotent(
    registry: SageMakerRegistry, tmp_path: Path
) -> None:
    assert registry.champion(MODEL) is None
    v1 = registry.register(request(tmp_path, "retrain-churn-1"))
    promoted = registry.promote(PromoteRequest(model=MODEL, version=v1.version, loop_id="l1"))
    assert promoted.champion == "1" and promoted.previous_champion is None
    v2 = registry.register(request(tmp_path, "retrain-churn-2", c=0.5))
    assert v2.version == "2" and v2.aliases == ["challenger"]
    promotion = registry.promote(
        PromoteRequest(model=MODEL, version="2", loop_id="retrain-churn-2")
    )
    assert promotion.champion == "2" and promotion.previous_champion == "1"
    # A retried promotion answers the same.
    assert (
        registry.promote(PromoteRequest(model=MODEL, version="2", loop_id="retrain-churn-2"))
        == promotion
    )
    champion = registry.champion(MODEL)
    assert champion is not None and champion.version == "2" and champion.aliases == ["champion"]
    aliases = {v.version: v.aliases for v in registry.versions(MODEL)}
    assert aliases == {"1": ["previous-champion"], "2": ["champion"]}
    described = registry.clients.sagemaker.describe_model_package(ModelPackageName=champion.source)
    assert "retrain-churn-2" in described["ApprovalDescription"]
    assert described["CustomerMetadataProperties"]["loop_id"] == "retrain-churn-2"
    # Registering loop 2 again must not make the champion a challenger.
    assert registry.register(request(tmp_path, "retrain-churn-2", c=0.5)).aliases == ["champion"]


def test_decide_mirrors_a_reviewers_verdict(registry: SageMakerRegistry, tmp_path: Path) -> None:
    registry.register(request(tmp_path, "retrain-churn-1"))
    rejected = registry.decide(MODEL, "1", approved=False, note="rejected by ana: worse on golden")
    assert rejected.aliases == []
    described = registry.clients.sagemaker.describe_model_package(ModelPackageName=rejected.source)
    assert described["ModelApprovalStatus"] == "Rejected"
    assert described["ApprovalDescription"] == "rejected by ana: worse on golden"
    assert registry.champion(MODEL) is None
    approved = registry.decide(MODEL, "1", approved=True, note="approved by bo")
    assert approved.aliases == ["champion"]


def test_load_mirrors_and_loads_the_estimator(registry: SageMakerRegistry, tmp_path: Path) -> None:
    version = registry.register(request(tmp_path, "retrain-churn-1", c=0.25))
    estimator = registry.load(version)
    assert isinstance(estimator, LogisticRegression) and estimator.C == 0.25
    mirrored = registry.home / "mirror" / "s3" / BUCKET / "adaptive-retraining" / "runs"
    assert (mirrored / "churn" / "retrain-churn-1" / "registry" / "model.tar.gz").is_file()
    assert registry.load(version) is estimator


def test_unusable_requests_are_registry_errors(registry: SageMakerRegistry, tmp_path: Path) -> None:
    bad = request(tmp_path, "retrain-churn-1").model_copy(update={"artifact_sha256": "0" * 64})
    with pytest.raises(RegistryError, match="does not match its sha256"):
        registry.register(bad)
    with pytest.raises(RegistryError, match="no model package version 7"):
        registry.promote(PromoteRequest(model=MODEL, version="7", loop_id="l"))


def test_archive_holds_the_artifact_and_its_manifest(
    registry: SageMakerRegistry, tmp_path: Path
) -> None:
    registry.register(request(tmp_path, "retrain-churn-1"))
    target = tmp_path / "got.tar.gz"
    key = "adaptive-retraining/runs/churn/retrain-churn-1/registry/model.tar.gz"
    registry.clients.s3.download_file(BUCKET, key, str(target))
    with tarfile.open(target) as tar:
        assert sorted(tar.getnames()) == ["manifest.json", "model.joblib"]


def test_throttling_is_retryable(registry: SageMakerRegistry) -> None:
    with Stubber(registry.clients.sagemaker) as stub:
        stub.add_client_error("list_model_packages", "ThrottlingException", "Rate exceeded", 400)
        with pytest.raises(ApplicationError) as raised:
            registry.champion(MODEL)
    assert raised.value.type == ErrorType.AWS_UNAVAILABLE and not raised.value.non_retryable
