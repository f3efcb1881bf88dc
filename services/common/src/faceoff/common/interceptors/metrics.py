"""Prometheus metrics for every RPC: a counter by status, a latency histogram, an in-progress gauge.

Two sets describe the same calls:

- the service's own, in its namespace: ``faceoff_detector_requests_total{method,code}``,
  ``faceoff_detector_request_seconds{method}``, ``faceoff_detector_requests_in_progress{method}``;
- the gRPC ecosystem's, the same on every service (the names and labels of go-grpc-prometheus and
  py-grpc-prometheus, so one rule or panel covers all three and existing dashboards work):
  ``grpc_server_started_total``, ``grpc_server_handled_total`` (with ``grpc_code``) and the
  histogram ``grpc_server_handling_seconds``, labelled ``grpc_type`` (``unary``,
  ``server_stream``), ``grpc_service`` (``faceoff.v1.Masker``) and ``grpc_method``
  (``Protect``).

The registry is injected so that tests (and several servers in one process) do not collide.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from faceoff.common.interceptors._wrap import (
    Context,
    Handler,
    HandlerInterceptor,
    code_name,
    observe,
)

#: Latency buckets in seconds: detection is ~0.1-1 s, protection ~1-60 s.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0, 120.0, 300.0)


class ServerMetrics:
    """The per-RPC metrics of one server, registered in ``registry``."""

    def __init__(self, namespace: str, registry: CollectorRegistry) -> None:
        self.namespace = namespace
        self.registry = registry
        self.requests = Counter(
            "requests",
            "RPCs finished, by method and status code.",
            ["method", "code"],
            namespace=namespace,
            registry=registry,
        )
        self.latency = Histogram(
            "request_seconds",
            "RPC latency from receipt to the last response message.",
            ["method"],
            namespace=namespace,
            registry=registry,
            buckets=LATENCY_BUCKETS,
        )
        self.in_progress = Gauge(
            "requests_in_progress",
            "RPCs being handled now.",
            ["method"],
            namespace=namespace,
            registry=registry,
        )
        grpc_labels = ["grpc_type", "grpc_service", "grpc_method"]
        self.grpc_started = Counter(
            "grpc_server_started",
            "RPCs started on the server.",
            grpc_labels,
            registry=registry,
        )
        self.grpc_handled = Counter(
            "grpc_server_handled",
            "RPCs completed on the server, whatever their status.",
            [*grpc_labels, "grpc_code"],
            registry=registry,
        )
        self.grpc_seconds = Histogram(
            "grpc_server_handling_seconds",
            "Time from receipt to the last response message of RPCs handled by the server.",
            grpc_labels,
            registry=registry,
            buckets=LATENCY_BUCKETS,
        )


class MetricsInterceptor(HandlerInterceptor):
    """Records :class:`ServerMetrics` for every RPC. Put it first so it sees the final status."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics

    def wrap(self, handler: Handler, path: str) -> Handler:
        service, _, method = path.lstrip("/").rpartition("/")
        kind = "server_stream" if handler.unary_stream is not None else "unary"
        if handler.stream_unary is not None or handler.stream_stream is not None:
            kind = "bidi_stream" if handler.stream_stream is not None else "client_stream"
        m = self.metrics
        labels = (kind, service, method)

        def on_start(_context: Context) -> None:
            m.in_progress.labels(method).inc()
            m.grpc_started.labels(*labels).inc()

        def on_finish(
            request: Any, context: Context, seconds: float, failure: str | None, _: Any
        ) -> None:
            code = code_name(context, failure)
            m.requests.labels(method, code).inc()
            m.latency.labels(method).observe(seconds)
            m.in_progress.labels(method).dec()
            m.grpc_handled.labels(*labels, code).inc()
            m.grpc_seconds.labels(*labels).observe(seconds)

        return observe(handler, on_start, on_finish)
