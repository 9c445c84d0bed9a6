"""OpenTelemetry tracing and JSON logs; both off by default.

Tracing is on when OpenTelemetry's standard variable says where to send spans:
`OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`). Spans then go by OTLP
over HTTP (`opentelemetry-exporter-otlp-proto-http`, the `otel` extra), configured by the
exporter's own variables (`OTEL_EXPORTER_OTLP_HEADERS`, `..._TIMEOUT`, ...), under the service
name `OTEL_SERVICE_NAME` (default: the process's role, `retrain-worker`, `retrain-gateway`,
`retrain-cli`) and `OTEL_RESOURCE_ATTRIBUTES`.

What is traced: the Temporal SDK's `TracingInterceptor` on the client and on the worker (a
client call starts a trace that follows the workflow, its child workflows and activities
through Temporal's headers), and `ActivitySpans`, which names on each activity's span the model
and workflow it works for.

JSON logs: `RETRAIN_LOG_FORMAT=json` (or `retrain worker|gateway --log-format json`) writes one
JSON object per line, with the current trace and span ids when tracing is on.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import opentelemetry.trace
from temporalio import activity
from temporalio.client import Interceptor as ClientInterceptor
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
)
from temporalio.worker import (
    Interceptor as WorkerInterceptor,
)

# OpenTelemetry's SDK and the SDK's tracing interceptor are imported when tracing is on: every
# `retrain` command imports this module, and starts faster without them.
if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
LOG_FORMAT_VARIABLE = "RETRAIN_LOG_FORMAT"
TRACER_NAME = "adaptive-retraining"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_provider: TracerProvider | None = None


class TracingUnavailable(RuntimeError):
    """Tracing was asked for, but the OTLP exporter is not installed."""


def tracing_requested(environ: Mapping[str, str] = os.environ) -> bool:
    return any(environ.get(name) for name in ENDPOINT_VARIABLES)


def setup_tracing(
    service_name: str,
    environ: Mapping[str, str] = os.environ,
    exporter: SpanExporter | None = None,
) -> TracerProvider | None:
    """The process's tracer provider (made once, set as OpenTelemetry's global one): None when
    tracing is off. `exporter` replaces the OTLP one (tests use an in-memory exporter)."""
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    global _provider
    if _provider is not None:
        return _provider
    if exporter is None:
        if not tracing_requested(environ):
            return None
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise TracingUnavailable(
                f"{' or '.join(ENDPOINT_VARIABLES)} is set, but the OTLP exporter is not "
                "installed: pip install 'adaptive-retraining[otel]'"
            ) from None
        exporter = OTLPSpanExporter()  # endpoint, headers, timeout: the OTEL_* variables
    name = environ.get("OTEL_SERVICE_NAME") or service_name
    resource = Resource.create({"service.name": name}).merge(OTELResourceDetector().detect())
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    opentelemetry.trace.set_tracer_provider(provider)
    _provider = provider
    return provider


def shutdown_tracing() -> None:
    """Send the spans still buffered (before a short-lived process exits)."""
    global _provider
    if _provider is not None:
        _provider.shutdown()
        _provider = None


def client_interceptors(provider: TracerProvider | None) -> list[ClientInterceptor]:
    """For `Client.connect`: the SDK's tracing interceptor, which workers built on that client
    use as well."""
    if provider is None:
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor(provider.get_tracer(TRACER_NAME))]


def worker_interceptors(provider: TracerProvider | None) -> list[WorkerInterceptor]:
    """For `Worker(interceptors=...)`, inside the client's: our attributes on activity spans."""
    return [] if provider is None else [ActivitySpans()]


# Workflow ids name the model (workflows/common/names.py): coordinator-M, retrain-M-N,
# rollout-M-N, drift-M, scheduled-M-<time>.
_MODEL_IN_ID = re.compile(
    r"^(?:coordinator-(?P<c>.+)|retrain-(?P<l>.+)-\d+|rollout-(?P<r>.+)-\d+|drift-(?P<d>.+)"
    r"|scheduled-(?P<s>.+?)-\d{4}-\d{2}-\d{2}T.*)$"
)


def model_of(workflow_id: str) -> str | None:
    match = _MODEL_IN_ID.match(workflow_id)
    if match is None:
        return None
    return next((value for value in match.groupdict().values() if value), None)


class ActivitySpans(WorkerInterceptor):
    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ActivitySpanAttributes(next)


class _ActivitySpanAttributes(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        span = opentelemetry.trace.get_current_span()
        attributes: dict[str, str | int] = {
            "retrain.activity": info.activity_type,
            "retrain.workflow_id": info.workflow_id or "",
            "retrain.workflow_type": info.workflow_type or "",
            "retrain.attempt": info.attempt,
        }
        if (model := model_of(info.workflow_id or "")) is not None:
            attributes["retrain.model"] = model
        span.set_attributes(attributes)
        return await self.next.execute_activity(input)


def configure_logging(log_format: str | None = None, level: int = logging.INFO) -> None:
    """Plain text lines (the default) or JSON objects (`json`, or `RETRAIN_LOG_FORMAT=json`)."""
    chosen = (log_format or os.environ.get(LOG_FORMAT_VARIABLE) or "text").lower()
    if chosen not in ("text", "json"):
        raise ValueError(f"{LOG_FORMAT_VARIABLE}: unknown log format {chosen!r} (text or json)")
    handler = logging.StreamHandler(sys.stderr)
    if chosen == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
        handler.addFilter(_TraceIds())
    else:
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)


class _TraceIds(logging.Filter):
    """Adds the current span's trace and span ids to a record (as hex, as OTLP shows them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = opentelemetry.trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = f"{context.trace_id:032x}"
            record.span_id = f"{context.span_id:016x}"
        return True


def interceptors_for(role: str) -> tuple[list[ClientInterceptor], list[WorkerInterceptor]]:
    """Both lists for a process of `role` (`retrain-worker`, ...): empty when tracing is off."""
    provider = setup_tracing(role)
    return client_interceptors(provider), worker_interceptors(provider)
