"""moto in server mode on loopback, for the SageMaker backend's tests.

One `ThreadedMotoServer` per test session on 127.0.0.1 (a free port); every boto3 client under
test is pointed at it through `AwsClients(endpoint_url=...)`. Fake credentials are set in the
environment, never real ones. Each test gets a fresh account state (`reset`), so tests do not
see each other's buckets, jobs or endpoints.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer

from activities.aws.clients import AwsClients

REGION = "us-east-1"
ACCOUNT = "123456789012"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/retrain-sagemaker"
# Recognisable, so tests can assert it never reaches workflow history.
FAKE_ACCESS_KEY = "AKIAFAKEKEYFORTESTS0"
FAKE_SECRET_KEY = "fake-secret-never-in-history-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Moto:
    endpoint_url: str

    def clients(self, region: str = REGION) -> AwsClients:
        session = boto3.Session(
            aws_access_key_id=FAKE_ACCESS_KEY,
            aws_secret_access_key=FAKE_SECRET_KEY,
            region_name=region,
        )
        return AwsClients(region, endpoint_url=self.endpoint_url, session=session)

    def reset(self) -> None:
        httpx.post(f"{self.endpoint_url}/moto-api/reset", timeout=30).raise_for_status()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[Moto]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", FAKE_ACCESS_KEY)
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", FAKE_SECRET_KEY)
    try:
        yield Moto(f"http://127.0.0.1:{port}")
    finally:
        server.stop()


@pytest.fixture
def moto(moto_server: Moto) -> Iterator[Moto]:
    moto_server.reset()
    yield moto_server
