"""The SageMaker Model Registry as the `ModelRegistry`: a model package group per model.

Each candidate is a versioned model package in the model's group (`resource_name(model)`,
created and tagged when missing). Its archive `model.tar.gz` (the training artifact plus
`manifest.json` naming it and its sha256) and the whole lineage as `lineage.json` go to
`s3://<bucket>/<prefix>/runs/<model>/<loop_id>/registry/`; the package's InferenceSpecification
points the inference image at the archive, so the serving side deploys exactly this version.

The registry's aliases map onto approval statuses, so a human approving or rejecting in SageMaker
Studio and a loop promoting agree on what is live:
- `champion`: the highest-version package whose ModelApprovalStatus is Approved;
- `previous-champion`: the next highest Approved one;
- `challenger`: the highest PendingManualApproval package newer than the champion.

Registration is idempotent by loop id: the group is searched for a package whose
CustomerMetadataProperties["loop_id"] matches before anything is created, and CreateModelPackage
carries a ClientToken derived from the loop id, so two attempts racing still make one package.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import joblib  # type: ignore[import-untyped, unused-ignore]
from botocore.exceptions import ClientError

from activities.aws.clients import AwsClients
from activities.aws.errors import aws_call, error_code
from activities.aws.s3_store import S3Store
from activities.aws.training import resource_name
from activities.loop.registry import checked_model
from activities.mirror import mirror_path
from activities.ports import CHALLENGER, CHAMPION, PREVIOUS_CHAMPION, RegistryError
from activities.training_runner import sha256_file
from workflows.loop.models import (
    ModelVersion,
    PromoteRequest,
    Promotion,
    RegisterRequest,
    RejectRequest,
)
from workflows.spec.sagemaker import SageMakerSettings

APPROVED = "Approved"
PENDING = "PendingManualApproval"
REJECTED = "Rejected"
MANIFEST = "manifest.json"
CONTENT_TYPES = ["application/json"]
# SageMaker's limits on CustomerMetadataProperties.
MAX_PROPERTIES = 50
MAX_VALUE = 256
_NOT_IN_KEYS = re.compile(r"[^\w.:/=+@ -]")


def _property_value(text: str) -> str:
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 3] + "..."


def lineage_properties(request: RegisterRequest, lineage_uri: str) -> dict[str, str]:
    """The lineage as CustomerMetadataProperties, within SageMaker's limits (the full lineage
    is in `lineage_uri`)."""
    lineage = request.lineage
    properties = {
        "loop_id": request.loop_id,
        "trigger_origin": lineage.trigger_origin,
        "trigger_kinds": ",".join(lineage.trigger_kinds),
        "trigger_event_ids": ",".join(lineage.trigger_event_ids),
        "spec_hash": lineage.spec_hash,
        "artifact_sha256": request.artifact_sha256,
        "dataset_files": str(len(lineage.dataset_hashes)),
        "dataset_hashes_sha256": hashlib.sha256(
            json.dumps(lineage.dataset_hashes, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest(),
        "lineage_uri": lineage_uri,
    }
    if lineage.parent_champion is not None:
        properties["parent_champion"] = lineage.parent_champion
    for name, value in sorted(lineage.training_metrics.items()):
        if len(properties) >= MAX_PROPERTIES:
            break
        properties[_NOT_IN_KEYS.sub("_", f"metric:{name}")[:128]] = repr(value)
    return {key: _property_value(value) for key, value in properties.items()}


def _client_token(loop_id: str) -> str:
    # CreateModelPackage's ClientToken: at most 36 letters, digits and hyphens.
    return hashlib.sha256(f"register:{loop_id}".encode()).hexdigest()[:36]


class SageMakerRegistry:
    def __init__(self, clients: AwsClients, settings: SageMakerSettings, home: Path) -> None:
        self.clients = clients
        self.settings = settings
        self.home = home
        self.store = S3Store(clients)
        # A package's loop id and archive never change: described once per ARN.
        self._described: dict[str, dict[str, Any]] = {}
        self._loaded: dict[str, Any] = {}

    @property
    def _sagemaker(self) -> Any:
        return self.clients.sagemaker

    def register(self, request: RegisterRequest) -> ModelVersion:
        model = checked_model(request.model)
        group = self._ensure_group(model)
        if not self._has_package_of_loop(model, request.loop_id):
            self._create_package(group, request)
        packages = self._packages(model)
        for package in packages:
            if self._loop_id(package) == request.loop_id:
                return self._version(model, package, packages)
        raise RegistryError(f"the package of {request.loop_id} vanished right after creation")

    def champion(self, model: str) -> ModelVersion | None:
        model = checked_model(model)
        packages = self._packages(model)
        approved = _approved(packages)
        return None if not approved else self._version(model, approved[0], packages)

    def promote(self, request: PromoteRequest) -> Promotion:
        model = checked_model(request.model)
        package = self._package(model, request.version)
        previous = self.champion(model)
        if package["ModelApprovalStatus"] != APPROVED:
            self._update(
                package,
                APPROVED,
                f"Promoted by {request.loop_id} after its staged rollout.",
            )
        packages = self._packages(model)
        champion = self._version(model, _approved(packages)[0], packages)
        # A retry after the approval: the former champion is the next Approved one.
        if previous is None or previous.version == request.version:
            below = [
                p for p in _approved(packages) if p["ModelPackageVersion"] < int(request.version)
            ]
            previous_version = str(below[0]["ModelPackageVersion"]) if below else None
        else:
            previous_version = previous.version
        return Promotion(model=model, champion=champion.version, previous_champion=previous_version)

    def decide(self, model: str, version: str, approved: bool, note: str) -> ModelVersion:
        """Mirror a reviewer's approve / reject into the package's ModelApprovalStatus."""
        model = checked_model(model)
        package = self._package(model, version)
        self._update(package, APPROVED if approved else REJECTED, note)
        packages = self._packages(model)
        [updated] = [p for p in packages if str(p["ModelPackageVersion"]) == version]
        return self._version(model, updated, packages)

    def reject(self, request: RejectRequest) -> ModelVersion:
        """ModelApprovalStatus Rejected, noting the loop and why."""
        note = f"rejected by {request.loop_id}: {request.reason}"
        return self.decide(request.model, request.version, approved=False, note=note)

    def package_arn(self, model: str, version: str) -> str:
        """The model package ARN of a registry version (what the endpoint's models deploy)."""
        return str(self._package(model, version)["ModelPackageArn"])

    def versions(self, model: str) -> list[ModelVersion]:
        model = checked_model(model)
        packages = self._packages(model)
        return [self._version(model, package, packages) for package in reversed(packages)]

    def load(self, version: ModelVersion) -> Any:
        arn = version.source
        if arn not in self._loaded:
            described = self._describe(arn)
            url = described["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
            archive = mirror_path(self.home, url)
            self.store.download(url, archive)
            target = archive.with_name("extracted")
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            with tarfile.open(archive) as tar:
                tar.extractall(target, filter="data")
            manifest = json.loads((target / MANIFEST).read_text())
            artifact = target / manifest["artifact"]
            if sha256_file(artifact) != manifest["sha256"]:
                raise RegistryError(f"{url}: {manifest['artifact']} does not match its sha256")
            self._loaded[arn] = joblib.load(artifact)
        return self._loaded[arn]

    # ---- helpers -----------------------------------------------------------------------------

    def _tags(self, model: str, loop_id: str | None = None) -> list[dict[str, str]]:
        tags = self.settings.tags | {"model": model}
        if loop_id is not None:
            tags["loop-id"] = loop_id
        return [{"Key": key, "Value": value} for key, value in tags.items()]

    def _ensure_group(self, model: str) -> str:
        group = resource_name(model)
        with aws_call(f"DescribeModelPackageGroup {group}"):
            try:
                self._sagemaker.describe_model_package_group(ModelPackageGroupName=group)
                return group
            except ClientError as error:
                if error_code(error) not in ("ValidationException", "ResourceNotFound"):
                    raise
        with aws_call(f"CreateModelPackageGroup {group}"):
            try:
                self._sagemaker.create_model_package_group(
                    ModelPackageGroupName=group,
                    ModelPackageGroupDescription=f"Candidates of {model} (adaptive-retraining).",
                    Tags=self._tags(model),
                )
            except ClientError as error:
                # Another worker created it in between.
                if "already exists" not in str(error):
                    raise
        return group

    def _packages(self, model: str) -> list[dict[str, Any]]:
        """The group's versioned packages, newest first."""
        group = resource_name(model)
        found: list[dict[str, Any]] = []
        with aws_call(f"ListModelPackages {group}"):
            try:
                pages = self._sagemaker.get_paginator("list_model_packages").paginate(
                    ModelPackageGroupName=group, ModelPackageType="Versioned"
                )
                for page in pages:
                    found.extend(page.get("ModelPackageSummaryList", []))
            except ClientError as error:
                if error_code(error) not in ("ValidationException", "ResourceNotFound"):
                    raise
        return sorted(found, key=lambda p: int(p["ModelPackageVersion"]), reverse=True)

    def _describe(self, arn: str) -> dict[str, Any]:
        if arn not in self._described:
            with aws_call(f"DescribeModelPackage {arn}"):
                self._described[arn] = self._sagemaker.describe_model_package(ModelPackageName=arn)
        return self._described[arn]

    def _loop_id(self, package: dict[str, Any]) -> str | None:
        properties = self._describe(package["ModelPackageArn"]).get("CustomerMetadataProperties")
        found = (properties or {}).get("loop_id")
        return found if isinstance(found, str) else None

    def _version(
        self, model: str, package: dict[str, Any], packages: list[dict[str, Any]]
    ) -> ModelVersion:
        return ModelVersion(
            model=model,
            version=str(package["ModelPackageVersion"]),
            source=package["ModelPackageArn"],
            loop_id=self._loop_id(package),
            aliases=_aliases(package, packages),
            registered_at=package.get("CreationTime"),
        )

    def _has_package_of_loop(self, model: str, loop_id: str) -> bool:
        return any(self._loop_id(package) == loop_id for package in self._packages(model))

    def _package(self, model: str, version: str) -> dict[str, Any]:
        for package in self._packages(model):
            if str(package["ModelPackageVersion"]) == version:
                return package
        raise RegistryError(f"{model} has no model package version {version}")

    def _update(self, package: dict[str, Any], status: str, note: str) -> None:
        arn = package["ModelPackageArn"]
        properties = self._describe(arn).get("CustomerMetadataProperties") or {}
        with aws_call(f"UpdateModelPackage {arn}"):
            self._sagemaker.update_model_package(
                ModelPackageArn=arn,
                ModelApprovalStatus=status,
                ApprovalDescription=note[:1024],
                # Restated unchanged (SageMaker merges them; moto would otherwise drop them).
                **({"CustomerMetadataProperties": properties} if properties else {}),
            )

    def _create_package(self, group: str, request: RegisterRequest) -> None:
        artifact = Path(request.artifact_path)
        if not artifact.is_file():
            raise RegistryError(f"the candidate's artifact {artifact} does not exist")
        if sha256_file(artifact) != request.artifact_sha256:
            raise RegistryError(f"{artifact} does not match its sha256 {request.artifact_sha256}")
        base = (
            f"s3://{self.settings.bucket}/{self.settings.prefix}/runs/"
            f"{request.model}/{request.loop_id}/registry"
        )
        tag_map = {t["Key"]: t["Value"] for t in self._tags(request.model, request.loop_id)}
        with tempfile.TemporaryDirectory() as tmp:
            archive = Path(tmp) / "model.tar.gz"
            manifest = Path(tmp) / MANIFEST
            manifest.write_text(
                json.dumps(
                    {
                        "model": request.model,
                        "loop_id": request.loop_id,
                        "artifact": artifact.name,
                        "sha256": request.artifact_sha256,
                    },
                    indent=2,
                )
            )
            with tarfile.open(archive, "w:gz") as tar:
                tar.add(artifact, arcname=artifact.name)
                tar.add(manifest, arcname=MANIFEST)
            model_url = self.store.upload(archive, f"{base}/model.tar.gz", tag_map).uri
        lineage_uri = self.store.put_text(f"{base}/lineage.json", request.model_dump_json(indent=2))
        with aws_call(f"CreateModelPackage {group}"):
            self._sagemaker.create_model_package(
                ModelPackageGroupName=group,
                ModelPackageDescription=f"Trained by {request.loop_id} "
                f"({request.lineage.trigger_origin}).",
                InferenceSpecification={
                    "Containers": [
                        {"Image": self.settings.inference_image, "ModelDataUrl": model_url}
                    ],
                    "SupportedContentTypes": CONTENT_TYPES,
                    "SupportedResponseMIMETypes": CONTENT_TYPES,
                },
                ModelApprovalStatus=PENDING,
                CustomerMetadataProperties=lineage_properties(request, lineage_uri),
                Tags=self._tags(request.model, request.loop_id),
                ClientToken=_client_token(request.loop_id),
            )


def _approved(packages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for p in packages if p.get("ModelApprovalStatus") == APPROVED]


def _aliases(package: dict[str, Any], packages: list[dict[str, Any]]) -> list[str]:
    """The aliases of `package` given every package of its group, newest first."""
    approved = _approved(packages)
    champion = approved[0]["ModelPackageVersion"] if approved else 0
    aliases = []
    if approved and package is approved[0]:
        aliases.append(CHAMPION)
    if len(approved) > 1 and package is approved[1]:
        aliases.append(PREVIOUS_CHAMPION)
    pending = [
        p
        for p in packages
        if p.get("ModelApprovalStatus") == PENDING and p["ModelPackageVersion"] > champion
    ]
    if pending and package is pending[0]:
        aliases.append(CHALLENGER)
    return sorted(aliases)
