"""Prometheus metrics for every RPC: a counter by status, a latency histogram, an in-progress gauge.

Metric names take the service's namespace, e.g. ``faceoff_detector_requests_total{method,code}``,
``faceoff_detector_request_seconds{method}`` and ``faceoff_detector_requests_in_progress{method}``.
The registry is injected so that tests (and several servers in one process) do not collide.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from faceoff.common.interceptors._wrap import Context, Handler, code_name, observe

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


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Records :class:`ServerMetrics` for every RPC. Put it first so it sees the final status."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        m = self.metrics

        def on_finish(
            request: Any, context: Context, seconds: float, failure: str | None, _: Any
        ) -> None:
            m.requests.labels(method, code_name(context, failure)).inc()
            m.latency.labels(method).observe(seconds)
            m.in_progress.labels(method).dec()

        return observe(handler, lambda _context: m.in_progress.labels(method).inc(), on_finish)
