"""The event gateway over HTTP: every endpoint maps and delivers to a real coordinator; bad
credentials, bodies and shapes are refused with a clear message and counted."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from activities.specs import SpecStore
from starters.api.coordinators import CoordinatorNotFound, Coordinators
from starters.gateway.auth import SecretsError, SourceSecrets, load_secrets
from starters.gateway.metrics import GATEWAY_METRIC_NAMES
from tests.events.test_aws_events import ALARM_MESSAGE, ALARM_STATE_CHANGE, S3_RECORDS, sns
from tests.events.test_gcp_events import (
    ANOMALY_ENTRY,
    GCS_ATTRIBUTES,
    GCS_OBJECT,
    INCIDENT,
    JOB,
    push,
)
from tests.support.gateway_harness import (
    HMAC_KEY,
    TOKEN,
    Gateway,
    alertmanager_payload,
    all_secrets,
    bearer,
    gateway,
    object_created,
    register_sagemaker_model,
    signed,
    stored,
    temporal_at,
    temporal_down,
)
from tests.support.helpers import eventually
from tests.support.loop_doubles import ControlledLoop
from workflows.coordinator.models import Decision
from workflows.coordinator.triggers import TriggerKind
from workflows.spec.models import ModelSpec


@pytest.fixture
async def offline(home: Path) -> AsyncIterator[Gateway]:
    """A gateway whose Temporal is down: enough for everything refused before delivery."""
    async with gateway(home, temporal_down()) as running:
        yield running


def _vertex_spec(home: Path, model: str) -> None:
    spec = ModelSpec.model_validate(
        {
            "name": model,
            "backend": "vertex",
            "vertex": {
                "project": "retrain-prod",
                "staging_bucket": "gs://retrain-data",
                "training_image": "us-docker.pkg.dev/retrain-prod/retrain/train:1",
                "serving_image": "us-docker.pkg.dev/retrain-prod/retrain/serve:1",
                "endpoint_name": "churn-vertex",
                # The id alone: routing matches it against the event's full resource name.
                "monitoring_job": JOB.rsplit("/", 1)[-1],
            },
            "features": [{"name": "tenure"}, {"name": "charges"}],
            "label": "churned",
            "data": {
                "labelled": "gs://retrain-data/labelled/churn",
                "baseline_holdout": "gs://retrain-data/baseline/holdout.parquet",
                "golden_set": "gs://retrain-data/baseline/golden.parquet",
            },
        }
    )
    SpecStore(home).register(spec)


def _basic(token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"sns:{token}".encode()).decode()}


async def _decided_ids(client: Client, task_queue: str, model: str) -> set[str]:
    try:
        decisions: list[Decision] = await Coordinators(client, task_queue, models=None).decisions(
            model, 200
        )
    except CoordinatorNotFound:  # the deliverer has not started it yet
        return set()
    return {event_id for d in decisions for event_id in d.event_ids}


@pytest.mark.time_skipping_only
async def test_each_endpoint_maps_routes_and_delivers(home, client, task_queue, new_worker, model):
    # Names of this test's own: coordinators outlive tests on the session's server.
    aws, gcp = f"{model}-aws", f"{model}-gcp"
    register_sagemaker_model(home, aws, "s3://churn-data/labelled", endpoint="churn")
    _vertex_spec(home, gcp)
    async with new_worker(ControlledLoop), gateway(home, temporal_at(client), task_queue) as gw:
        answers = [
            # uri under the aws model's labelled data
            await gw.post("eventbridge", object_created("churn-data", "labelled/a.parquet", "e1")),
            # endpoint `churn` named by the alarm's metric
            await gw.post("eventbridge", ALARM_STATE_CHANGE),
            await gw.post("s3", S3_RECORDS),
            # SNS carries credentials as basic auth
            await gw.post("sns", sns(ALARM_MESSAGE), headers=_basic(TOKEN)),
            # Pub/Sub push carries its token in the query string
            await gw.post("pubsub", push(GCS_OBJECT, GCS_ATTRIBUTES), {}, {"token": TOKEN}),
            await gw.post("pubsub", push(ANOMALY_ENTRY), {}, {"token": TOKEN}),
            # The incident names a Vertex endpoint id no spec has: the request names the model.
            await gw.post("pubsub", push(INCIDENT), {}, {"token": TOKEN, "model": gcp}),
        ]
        body = json.dumps(alertmanager_payload(aws)).encode()
        answers.append(
            await gw.http.post("/v1/events/alertmanager", content=body, headers=signed(body))
        )
        assert [a.status_code for a in answers] == [202] * 8, [a.text for a in answers]
        expected: dict[str, set[str]] = {aws: set(), gcp: set()}
        for answer in answers:
            for event in answer.json()["events"]:
                assert event["outcome"] == "accepted", event
                expected[event["model"]].add(event["event_id"])
        assert len(expected[aws]) == 5 and len(expected[gcp]) == 3

        async def delivered() -> bool:
            for model, ids in expected.items():
                if not ids <= await _decided_ids(client, task_queue, model):
                    return False
            return True

        await eventually(delivered, what="every event decided by its coordinator")

        async def drained() -> bool:  # each row goes once its update's verdicts are back
            return stored(home) == ([], [])

        await eventually(drained, what="the store to empty")
        metrics = (await gw.http.get("/metrics")).text
    assert gw.metric(metrics, "retrain_gateway_events_total", source="pubsub", outcome="delivered")
    assert gw.metric(metrics, "retrain_gateway_requests_total", source="sns", status="202") == 1


async def test_credentials_are_checked_and_refusals_counted(home: Path):
    secrets = all_secrets()
    secrets["s3"] = SourceSecrets()  # configured for nothing: closed, not open
    async with gateway(home, temporal_down(), secrets=secrets) as gw:
        event = object_created("churn-data", "labelled/a.parquet", "e1")
        body = json.dumps(alertmanager_payload("churn")).encode()
        refused = {
            "wrong token": await gw.post("eventbridge", event, bearer("not-the-token")),
            "no token": await gw.post("eventbridge", event, {}),
            "bad signature": await gw.http.post(
                "/v1/events/alertmanager", content=body, headers=signed(body, key="wrong-key")
            ),
            "tampered body": await gw.http.post(
                "/v1/events/alertmanager", content=body + b" ", headers=signed(body)
            ),
            # Query tokens are for Pub/Sub only: they end up in access logs.
            "query token": await gw.post("eventbridge", event, {}, {"token": TOKEN}),
            "unconfigured": await gw.post("s3", {"Records": []}),
            "bad basic": await gw.post("sns", {}, {"Authorization": "Basic !!!"}),
        }
        for what, answer in refused.items():
            assert answer.status_code == 401, what
            assert "Bearer" in answer.headers["www-authenticate"], what
        errors = {what: answer.json()["error"] for what, answer in refused.items()}
        assert errors["wrong token"] == "eventbridge: invalid token"
        assert errors["no token"].startswith("eventbridge: missing credentials")
        assert (
            errors["bad signature"] == errors["tampered body"] == "alertmanager: invalid signature"
        )
        assert errors["unconfigured"].startswith("no credentials configured for source s3")
        assert "malformed basic credentials" in errors["bad basic"]
        metrics = (await gw.http.get("/metrics")).text
        assert stored(home) == ([], [])
    count = gw.metric
    assert count(metrics, "retrain_gateway_requests_total", source="eventbridge", status="401") == 3
    assert (
        count(metrics, "retrain_gateway_requests_total", source="alertmanager", status="401") == 2
    )
    assert count(metrics, "retrain_gateway_requests_total", source="s3", status="401") == 1


async def test_oversized_bodies_are_refused_whatever_they_declare(home: Path):
    async with gateway(home, temporal_down(), max_body_bytes=1024) as gw:
        big = {"padding": "x" * 2048}
        declared = await gw.post("eventbridge", big)
        assert declared.status_code == 413
        assert "at most 1024 bytes" in declared.json()["error"]

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(4):
                yield b" " * 512  # streamed: no Content-Length to trust

        streamed = await gw.http.post("/v1/events/eventbridge", content=chunks(), headers=bearer())
        assert streamed.status_code == 413
        metrics = (await gw.http.get("/metrics")).text
    assert (
        gw.metric(metrics, "retrain_gateway_requests_total", source="eventbridge", status="413")
        == 2
    )


async def test_malformed_json_and_unknown_shapes_are_400_with_the_reason(offline: Gateway):
    gw = offline
    malformed = await gw.http.post(
        "/v1/events/eventbridge", content=b'{"source": "aws.s3",', headers=bearer()
    )
    assert malformed.status_code == 400
    assert malformed.json()["error"].startswith("malformed JSON")
    cases: dict[str, tuple[str, Any, str]] = {
        "eventbridge": ("eventbridge", {"source": "aws.ec2"}, "unsupported EventBridge event"),
        "s3": ("s3", {"Records": "nope"}, "Records: expected a list"),
        "sns": ("sns", {"Type": "Weird"}, "not an SNS message"),
        "pubsub": (
            "pubsub",
            push({"hello": "world"}),
            "not a Pub/Sub push message of a known kind",
        ),
        "alertmanager": ("alertmanager", {"version": "3", "alerts": []}, "version '3'"),
        "array": ("eventbridge", [1, 2], "expected a JSON object"),
    }
    for what, (source, payload, message) in cases.items():
        answer = await gw.post(source, payload)
        assert answer.status_code == 400, what
        assert message in answer.json()["error"], (what, answer.json())
    bad_model = await gw.post(
        "eventbridge", object_created("b", "k", "e"), params={"model": "Not A Name"}
    )
    assert bad_model.status_code == 400 and "invalid model name" in bad_model.json()["error"]
    metrics = (await gw.http.get("/metrics")).text
    assert (
        gw.metric(metrics, "retrain_gateway_requests_total", source="eventbridge", status="400")
        == 4
    )
    assert stored(gw.home) == ([], [])


async def test_an_event_no_model_matches_is_dead_lettered_with_the_reason(offline: Gateway):
    gw = offline
    register_sagemaker_model(gw.home, "churn", "s3://churn-data/labelled")
    outside = await gw.post("eventbridge", object_created("other-bucket", "x.parquet", "e-out"))
    assert outside.status_code == 202
    assert outside.json()["dead_lettered"] == 1 and outside.json()["accepted"] == 0
    reason = outside.json()["events"][0]["reason"]
    assert reason.startswith("no registered model matches uri='s3://other-bucket/x.parquet'")
    # A prefix match must end at a path boundary.
    sibling = await gw.post(
        "eventbridge", object_created("churn-data", "labelled-old/x.parquet", "e-sib")
    )
    assert sibling.json()["dead_lettered"] == 1
    # An Alertmanager `model` label that is no model name
    body = json.dumps(alertmanager_payload("Bad Model!")).encode()
    labelled = await gw.http.post("/v1/events/alertmanager", content=body, headers=signed(body))
    assert labelled.status_code == 202
    assert "invalid model name" in labelled.json()["events"][0]["reason"]
    waiting, dead = stored(gw.home)
    assert waiting == []
    assert [(d.source, d.model, d.event_id, d.attempts) for d in dead] == [
        ("eventbridge", None, "e-out", 0),
        ("eventbridge", None, "e-sib", 0),
        ("alertmanager", None, labelled.json()["events"][0]["event_id"], 0),
    ]
    assert dead[0].reason == reason and dead[0].kind == TriggerKind.DATA_ARRIVED
    assert json.loads(dead[0].route) == {"uri": "s3://other-bucket/x.parquet"}
    metrics = (await gw.http.get("/metrics")).text
    assert gw.metric(metrics, "retrain_dead_letters") == 3
    assert (
        gw.metric(
            metrics, "retrain_gateway_events_total", source="eventbridge", outcome="dead_lettered"
        )
        == 2
    )


async def test_a_model_named_but_not_registered_is_dead_lettered_with_a_suggestion(
    offline: Gateway,
):
    """A typo in `?model=` or in an Alertmanager `model` label never reaches a phantom
    coordinator: the event waits in the dead letters with the closest registered name."""
    gw = offline
    register_sagemaker_model(gw.home, "churn", "s3://churn-data/labelled")
    typo = await gw.post(
        "eventbridge", object_created("b", "k", "e-typo"), params={"model": "chrun"}
    )
    assert typo.status_code == 202 and typo.json()["dead_lettered"] == 1
    assert typo.json()["events"][0]["reason"] == (
        "model 'chrun' is not registered: did you mean 'churn'?"
    )
    body = json.dumps(alertmanager_payload("fraud")).encode()
    label = await gw.http.post("/v1/events/alertmanager", content=body, headers=signed(body))
    assert label.status_code == 202 and label.json()["dead_lettered"] == 1
    reason = label.json()["events"][0]["reason"]
    assert reason.startswith("model 'fraud' is not registered: register its spec")
    # The registered name itself is routed as before.
    named = await gw.post(
        "eventbridge", object_created("b", "k", "e-named"), params={"model": "churn"}
    )
    assert named.json()["events"][0] == {
        "event_id": "e-named",
        "model": "churn",
        "outcome": "accepted",
    }
    _, dead = stored(gw.home)
    assert [(d.event_id, d.model, d.reason) for d in dead] == [
        ("e-typo", None, typo.json()["events"][0]["reason"]),
        (label.json()["events"][0]["event_id"], None, reason),
    ]


async def test_sns_subscription_is_logged_for_the_operator_not_fetched(
    offline: Gateway, caplog: pytest.LogCaptureFixture
):
    url = (
        "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn="
        "arn:aws:sns:us-east-1:123456789012:retrain-alarms&Token=2336412f37fb687f5d51e6e2425"
    )
    confirmation = {
        "Type": "SubscriptionConfirmation",
        "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
        "Token": "2336412f37fb687f5d51e6e2425",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:retrain-alarms",
        "Message": "You have chosen to subscribe to the topic ...",
        "SubscribeURL": url,
        "Timestamp": "2026-11-12T10:00:00.000Z",
    }
    with caplog.at_level(logging.WARNING, logger="starters.gateway.app"):
        answer = await offline.post("sns", confirmation, _basic(TOKEN))
    assert answer.status_code == 200 and answer.json()["url"] == url
    assert url in caplog.text and TOKEN not in caplog.text
    assert stored(offline.home) == ([], [])


async def test_health_reports_temporal_down_while_events_are_still_accepted(offline: Gateway):
    health = await offline.http.get("/healthz")
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "degraded" and body["database"]["writable"] is True
    assert body["temporal"]["reachable"] is False and body["temporal"]["error"]
    register_sagemaker_model(offline.home, "churn", "s3://churn-data/labelled")
    answer = await offline.post("eventbridge", object_created("churn-data", "labelled/x", "e"))
    assert answer.status_code == 202 and answer.json()["accepted"] == 1


async def test_metrics_expose_every_gateway_metric(offline: Gateway):
    answer = await offline.http.get("/metrics")
    assert answer.status_code == 200
    for name in GATEWAY_METRIC_NAMES:
        assert f"# TYPE {name.removesuffix('_total')}" in answer.text, name


async def test_unknown_paths_and_methods_answer_json(offline: Gateway):
    missing = await offline.http.post("/v1/events/kinesis", content=b"{}", headers=bearer())
    assert missing.status_code == 404 and "error" in missing.json()
    wrong = await offline.http.get("/v1/events/s3")
    assert wrong.status_code == 405 and "error" in wrong.json()


def test_secrets_come_from_the_environment_or_files(tmp_path: Path):
    secret_file = tmp_path / "pubsub-token"
    secret_file.write_text("from-a-file\n")
    found = load_secrets(
        {
            "RETRAIN_GATEWAY_TOKEN_ALERTMANAGER": "am-token",
            "RETRAIN_GATEWAY_HMAC_ALERTMANAGER": "am-key",
            "RETRAIN_GATEWAY_TOKEN_PUBSUB_FILE": str(secret_file),
            "UNRELATED": "x",
        }
    )
    assert found["alertmanager"] == SourceSecrets(token=b"am-token", hmac_key=b"am-key")
    assert found["pubsub"] == SourceSecrets(token=b"from-a-file")
    assert not found["s3"].configured
    refused = {
        "RETRAIN_GATEWAY_TOKEN_KINESIS": "unknown source 'kinesis'",
        "RETRAIN_GATEWAY_HMAC_S3": "RETRAIN_GATEWAY_HMAC_S3 is empty",
        "RETRAIN_GATEWAY_TOKEN_SNS_FILE": "cannot read",
    }
    values = {
        "RETRAIN_GATEWAY_HMAC_S3": " ",
        "RETRAIN_GATEWAY_TOKEN_SNS_FILE": str(tmp_path / "no"),
    }
    for name, message in refused.items():
        with pytest.raises(SecretsError, match=message) as caught:
            load_secrets({name: values.get(name, "secret-value")})
        assert "secret-value" not in str(caught.value)
    both = {"RETRAIN_GATEWAY_TOKEN_S3": "a", "RETRAIN_GATEWAY_TOKEN_S3_FILE": str(secret_file)}
    with pytest.raises(SecretsError, match="not both"):
        load_secrets(both)


def _with(payload: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of `payload` with the dotted `path` set to `value`."""
    changed = copy.deepcopy(payload)
    *parents, last = path.split(".")
    node: Any = changed
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    node[int(last) if last.isdigit() else last] = value
    return changed


async def test_malformed_authenticated_bodies_are_400_never_500(offline: Gateway):
    """What an authenticated but broken (or hostile) sender can post is refused with the reason:
    no 500, nothing stored."""
    gw = offline
    register_sagemaker_model(gw.home, "churn", "s3://churn-data/labelled")
    event = object_created("churn-data", "labelled/x.parquet", "e1")
    raw: dict[str, tuple[str, bytes]] = {
        "deep nesting": ("eventbridge", b"[" * 30_000 + b"]" * 30_000),
        "5,000 digits": ("eventbridge", b'{"source": "aws.s3", "n": ' + b"7" * 5000 + b"}"),
        "lone surrogate": ("eventbridge", b'{"source": "\\ud800"}'),
        "not UTF-8": ("eventbridge", b'{"source": "\xff\xfe"}'),
        "NaN": ("eventbridge", b'{"source": NaN}'),
    }
    shaped: dict[str, tuple[str, Any]] = {
        "size inf": ("eventbridge", _with(event, "detail.object.size", "inf")),
        "size list": ("eventbridge", _with(event, "detail.object.size", [1])),
        "key object": ("eventbridge", _with(event, "detail.object.key", {"a": 1})),
        "time 1e20": ("eventbridge", _with(event, "time", 1e20)),
        "started_at 1e20": ("pubsub", push(_with(INCIDENT, "incident.started_at", 1e20))),
        "started_at text": ("pubsub", push(_with(INCIDENT, "incident.started_at", "soon"))),
        "status []": ("alertmanager", _with(alertmanager_payload("churn"), "alerts.0.status", [])),
        "alerts dict": ("alertmanager", _with(alertmanager_payload("churn"), "alerts", {})),
    }
    answers = {
        what: await gw.http.post(
            f"/v1/events/{source}", content=body, headers=bearer(), params={"token": TOKEN}
        )
        for what, (source, body) in raw.items()
    }
    for what, (source, payload) in shaped.items():
        answers[what] = await gw.post(source, payload, params={"token": TOKEN})
    for what, answer in answers.items():
        assert answer.status_code == 400, (what, answer.status_code, answer.text)
        assert answer.json()["error"], what
    assert "integer of 5000 digits" in answers["5,000 digits"].json()["error"]
    assert "lone surrogate" in answers["lone surrogate"].json()["error"]
    assert stored(gw.home) == ([], [])
    metrics = (await gw.http.get("/metrics")).text
    assert 'status="500"' not in metrics


async def test_a_token_sent_without_a_scheme_is_never_echoed(
    offline: Gateway, caplog: pytest.LogCaptureFixture
):
    with caplog.at_level(logging.INFO):
        answer = await offline.post("eventbridge", {}, {"Authorization": TOKEN})
        spaced = await offline.post("eventbridge", {}, {"Authorization": f"Token {TOKEN}"})
    for refused in (answer, spaced):
        assert refused.status_code == 401
        assert TOKEN not in refused.text
        assert "unsupported authorization scheme (use Bearer or Basic)" in refused.text
    assert TOKEN not in caplog.text


async def test_signed_requests_carry_a_fresh_timestamp_and_are_accepted_once(offline: Gateway):
    """The HMAC covers `<timestamp>.<body>`: a captured request cannot be sent again, neither at
    once (the signature was seen) nor later (the timestamp is stale)."""
    gw = offline
    body = json.dumps(alertmanager_payload("churn")).encode()
    headers = signed(body)

    async def post(with_headers: dict[str, str]) -> Any:
        return await gw.http.post("/v1/events/alertmanager", content=body, headers=with_headers)

    first = await post(headers)
    assert first.status_code == 202, first.text
    replayed = await post(headers)
    assert replayed.status_code == 401
    assert "already received (a replay)" in replayed.json()["error"]
    stale = await post(signed(body, at=time.time() - 3600))
    assert stale.status_code == 401 and "from the gateway's clock" in stale.json()["error"]
    future = await post(signed(body, at=time.time() + 3600))
    assert future.status_code == 401
    body_only = {
        "X-Retrain-Signature": "sha256="
        + hmac.new(HMAC_KEY.encode(), body, hashlib.sha256).hexdigest()
    }
    unstamped = await post(body_only)
    assert unstamped.status_code == 401
    assert "need the x-retrain-timestamp header" in unstamped.json()["error"]
    forged = dict(signed(body), **{"X-Retrain-Timestamp": str(int(time.time()) + 1)})
    assert (await post(forged)).json()["error"] == "alertmanager: invalid signature"
    waiting, dead = stored(gw.home)
    assert len(waiting) + len(dead) == 1  # only the one accepted was stored


async def test_a_full_store_answers_503_with_retry_after(home: Path):
    """The store holds at most `max_pending` undelivered events (Temporal away for long):
    beyond, requests are refused whole, nothing stored, and told when to come back."""
    register_sagemaker_model(home, "churn", "s3://churn-data/labelled")
    async with gateway(home, temporal_down(), max_pending=2) as gw:
        kept = [
            await gw.post("eventbridge", object_created("churn-data", f"labelled/{i}", f"e{i}"))
            for i in range(2)
        ]
        assert [a.status_code for a in kept] == [202, 202]
        full = await gw.post("eventbridge", object_created("churn-data", "labelled/2", "e2"))
        assert full.status_code == 503
        assert int(full.headers["retry-after"]) > 0
        assert "2 undelivered events" in full.json()["error"]
        waiting, _ = stored(home)
    assert sorted(p.event_id or "" for p in waiting) == ["e0", "e1"]
