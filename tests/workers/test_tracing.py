"""OpenTelemetry: off by default; on, the SDK's TracingInterceptor follows a trigger from the
client through the coordinator, the loop it starts and that loop's activities (which carry the
model), spans leave by OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT says where, and logs can be
JSON objects carrying the current trace id."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from starters.api import observability
from starters.api.coordinators import Coordinators
from starters.api.observability import (
    client_interceptors,
    configure_logging,
    model_of,
    setup_tracing,
    shutdown_tracing,
    tracing_requested,
    worker_interceptors,
)
from tests.support.helpers import eventually
from workers.worker import build_worker
from workflows.coordinator.models import CoordinatorStatus
from workflows.coordinator.triggers import TriggerEvent
from workflows.coordinator.workflow import ModelCoordinator


@pytest.fixture(autouse=True)
def fresh_provider() -> Iterator[None]:
    """Each test makes the process's provider anew (it is a process-wide singleton)."""
    shutdown_tracing()
    yield
    shutdown_tracing()


def test_tracing_is_off_unless_an_endpoint_is_set():
    assert not tracing_requested({})
    assert setup_tracing("retrain-worker", environ={}) is None
    assert client_interceptors(None) == [] and worker_interceptors(None) == []
    assert tracing_requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert tracing_requested({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})


def test_the_model_is_read_from_workflow_ids():
    assert model_of("coordinator-churn") == "churn"
    assert model_of("retrain-credit-risk-12") == "credit-risk"
    assert model_of("rollout-churn-3") == "churn"
    assert model_of("drift-churn") == "churn"
    assert model_of("scheduled-churn-2026-03-01T03:00:00Z") == "churn"
    assert model_of("training-slots") is None


@pytest.mark.time_skipping_only
async def test_a_trigger_is_traced_through_the_coordinator_the_loop_and_its_activities(
    env: WorkflowEnvironment, task_queue: str, home, model: str
):
    exported = InMemorySpanExporter()
    provider = setup_tracing("retrain-test", environ={}, exporter=exported)
    assert provider is not None
    traced = Client(
        env.client.service_client,
        namespace=env.client.namespace,
        data_converter=pydantic_data_converter,
        interceptors=client_interceptors(provider),
    )
    coordinators = Coordinators(traced, task_queue, models=None)
    worker = build_worker(
        traced, home=home, task_queue=task_queue, interceptors=worker_interceptors(provider)
    )
    async with worker:
        handle = coordinators.handle(model)
        # As `retrain trigger` on a new model: the coordinator starts and decides in one trace.
        with provider.get_tracer("test").start_as_current_span("operator asks"):
            await coordinators.start(model)
            await handle.execute_update(
                ModelCoordinator.submit_trigger, TriggerEvent(kind="manual", event_id="t-1")
            )

        # No spec registered: the loop's first activity fails, the loop ends, the coordinator
        # records it.
        async def loop_ended() -> CoordinatorStatus | None:
            status = await coordinators.status(model)
            return status if status.last_outcome is not None else None

        await eventually(loop_ended, timeout=60, what="the loop to end")
    provider.force_flush()
    spans = exported.get_finished_spans()
    names = {span.name for span in spans}
    assert {
        "operator asks",
        "StartWorkflow:ModelCoordinator",
        "StartWorkflowUpdate:submit_trigger",
        "HandleUpdate:submit_trigger",
        "StartChildWorkflow:RetrainingLoop",
        "RunWorkflow:RetrainingLoop",
        "RunActivity:load_model_spec",
        "RunActivity:write_audit_record",
    } <= names
    # One trace, from the operator's span down to the loop's activity.
    root = next(span for span in spans if span.name == "operator asks")
    activity = next(span for span in spans if span.name == "RunActivity:load_model_spec")
    assert activity.context.trace_id == root.context.trace_id
    assert activity.attributes is not None
    assert activity.attributes["retrain.model"] == model
    assert activity.attributes["retrain.workflow_id"] == f"retrain-{model}-1"
    assert activity.attributes["retrain.activity"] == "load_model_spec"
    assert all(span.resource.attributes["service.name"] == "retrain-test" for span in spans)


class Collector:
    """An OTLP/HTTP traces endpoint on loopback: decodes every export request it receives."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.paths: list[str] = []
        received, paths = self.requests, self.paths

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                paths.append(self.path)
                received.append(ExportTraceServiceRequest.FromString(body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def span_names(self) -> list[str]:
        return [
            span.name
            for request in self.requests
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]


def test_spans_leave_by_otlp_http_when_the_endpoint_is_set(monkeypatch: pytest.MonkeyPatch):
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http.trace_exporter")
    collector = Collector()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
        monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
        provider = setup_tracing("retrain-worker")
        assert provider is not None
        with provider.get_tracer("test").start_as_current_span("retrain.check"):
            pass
        shutdown_tracing()  # flushes, as `retrain` does before exiting
        assert collector.paths == ["/v1/traces"]
        assert collector.span_names() == ["retrain.check"]
        [resource] = collector.requests[0].resource_spans
        attributes = {a.key: a.value.string_value for a in resource.resource.attributes}
        assert attributes["service.name"] == "retrain-worker"
        assert attributes["deployment.environment"] == "test"
    finally:
        collector.server.shutdown()


def test_json_logs_carry_the_trace(monkeypatch: pytest.MonkeyPatch):
    exported = InMemorySpanExporter()
    provider = setup_tracing("retrain-test", environ={}, exporter=exported)
    assert provider is not None
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure_logging("json")
        stream = io.StringIO()
        root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
        logger = logging.getLogger("retrain.test")
        with provider.get_tracer("test").start_as_current_span("work") as span:
            logger.info("trained %s", "churn")
        logger.warning("outside")
        first, second = (json.loads(line) for line in stream.getvalue().splitlines())
        assert first["message"] == "trained churn" and first["level"] == "INFO"
        assert first["logger"] == "retrain.test" and "time" in first
        assert first["trace_id"] == f"{span.get_span_context().trace_id:032x}"
        assert first["span_id"] == f"{span.get_span_context().span_id:016x}"
        assert second["level"] == "WARNING" and "trace_id" not in second
        with pytest.raises(ValueError, match="unknown log format 'xml'"):
            configure_logging("xml")
        monkeypatch.setenv(observability.LOG_FORMAT_VARIABLE, "json")
        configure_logging()
        assert root.handlers[0].filters, "the environment asked for JSON"
    finally:
        root.handlers[:], root.level = saved
