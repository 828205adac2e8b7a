"""The server's part of tracing and metrics.

``TracingMiddleware`` opens one span per HTTP request or WebSocket connection and keeps it
current while the handler runs, so a task submitted by a request has its trace start at that
request (``TaskRunner.submit`` starts the task's span as a child of the current one).
``GET /metrics`` serves the runtime's Prometheus registry; the WebSocket layer updates its
``websocket_clients`` and ``events_replayed``. ``configure_tracing`` installs an SDK tracer
provider for ``takeflow serve`` unless the process already has one.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import get
from litestar.di import NamedDependency
from litestar.enums import ScopeType
from litestar.response import Response
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from opentelemetry import trace
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dagster_defs.runtime import Runtime

log = logging.getLogger(__name__)
server_tracer = trace.get_tracer("takeflow.server")
EXPORTERS = ("none", "console", "otlp")


class TracingMiddleware:
    """A ``SERVER`` span per request: method, route template, status code; errors marked."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        route = scope.get("path_template") or scope["path"]
        method = scope.get("method", "WS") if scope["type"] == ScopeType.HTTP else "WS"
        attributes: dict[str, str] = {
            "http.request.method": str(method),
            "url.path": scope["path"],
            "http.route": route,
            "takeflow.transport": scope["type"],
        }
        with server_tracer.start_as_current_span(
            f"{method} {route}", kind=trace.SpanKind.SERVER, attributes=attributes
        ) as span:
            if scope["type"] == ScopeType.WEBSOCKET:  # no status to record: send straight on
                await self.app(scope, receive, send)
                return

            async def traced_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(trace.StatusCode.ERROR, f"HTTP {status}")
                await send(message)

            await self.app(scope, receive, traced_send)


@get("/metrics", tags=["health"], sync_to_thread=False, media_type=CONTENT_TYPE_LATEST)
def metrics(runtime: NamedDependency[Runtime]) -> Response[bytes]:
    """Prometheus metrics: tasks by status, queue depth, template durations, end-to-end
    overhead, events published and replayed, WebSocket clients, git commit latency."""
    return Response(
        generate_latest(runtime.runner.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )


def configure_tracing(exporter: str = "none", service_name: str = "takeflow") -> bool:
    """Install an SDK ``TracerProvider`` (spans to ``exporter``) unless one is configured.

    ``none`` still records spans (trace ids in events, takes and logs) but exports nothing;
    ``console`` prints finished spans; ``otlp`` needs ``opentelemetry-exporter-otlp`` and the
    usual ``OTEL_EXPORTER_OTLP_*`` variables. Returns whether a provider was installed.
    """
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    if exporter not in EXPORTERS:
        raise ValueError(f"unknown trace exporter {exporter!r} (one of {', '.join(EXPORTERS)})")
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return False
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    span_exporter: Any = None
    if exporter == "console":
        span_exporter = ConsoleSpanExporter()
    elif exporter == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter,
            )
        except ImportError:
            log.warning("trace exporter 'otlp' needs opentelemetry-exporter-otlp; not exporting")
        else:
            span_exporter = OTLPSpanExporter()
    if span_exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(span_exporter))
    trace.set_tracer_provider(provider)
    return True
