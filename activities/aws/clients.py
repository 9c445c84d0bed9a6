"""boto3 clients for one region, from the default credential chain.

Credentials never pass through here explicitly: boto3 finds them (environment, profile, SSO,
instance or task role), so they never reach a spec, an activity input or workflow history.
botocore's own retries are off (one attempt per call): throttling and 5xx surface as retryable
activity errors and Temporal's retry policies do the backoff, visibly in the history.
`endpoint_url` points every client at one address (tests: moto's server on loopback); without
it botocore also honours `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>`.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import boto3
from botocore.config import Config

USER_AGENT = "adaptive-retraining"
# Every AWS service the backend calls. The production image keeps botocore's models of these
# (and of the services botocore's credential chain calls) and no other (ops/image/slim.py).
SERVICES = ("s3", "sagemaker", "cloudwatch", "application-autoscaling", "sns")


class AwsClients:
    def __init__(
        self, region: str, endpoint_url: str | None = None, session: boto3.Session | None = None
    ) -> None:
        self.region = region
        self.endpoint_url = endpoint_url
        self.session = session or boto3.Session(region_name=region)
        self.config = Config(
            region_name=region,
            retries={"total_max_attempts": 1, "mode": "standard"},
            user_agent_extra=USER_AGENT,
            connect_timeout=10,
            read_timeout=60,
        )

    def client(self, service: str) -> Any:
        if service not in SERVICES:
            raise ValueError(f"{service} is not one of the backend's services {SERVICES}")
        return self.session.client(service, config=self.config, endpoint_url=self.endpoint_url)

    @cached_property
    def s3(self) -> Any:
        return self.client("s3")

    @cached_property
    def sagemaker(self) -> Any:
        return self.client("sagemaker")

    @cached_property
    def cloudwatch(self) -> Any:
        return self.client("cloudwatch")

    @cached_property
    def autoscaling(self) -> Any:
        return self.client("application-autoscaling")

    @cached_property
    def sns(self) -> Any:
        return self.client("sns")
