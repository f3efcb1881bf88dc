"""The evaluator's own Prometheus metrics, beside the per-RPC ones every server has.

- ``faceoff_evaluator_backend_calls_total{backend,outcome}``: backend calls by outcome
  (:data:`faceoff.evaluator.evaluation.OUTCOMES`: ``ok``, ``no_face``, ``timeout``, ``auth``,
  ``throttled`` ...), so a dashboard can tell a cloud outage from protected photos.
- ``faceoff_evaluator_backend_seconds{backend}``: how long each backend took per evaluation.

Both label sets are small and fixed: six backends, eleven outcomes.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from faceoff.common.interceptors.metrics import LATENCY_BUCKETS

NAMESPACE = "faceoff_evaluator"


class BackendMetrics:
    """Per-backend counters and latency, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.calls = Counter(
            "backend_calls",
            "Backend calls by backend and outcome.",
            ["backend", "outcome"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self.latency = Histogram(
            "backend_seconds",
            "Time one backend took for one evaluation.",
            ["backend"],
            namespace=NAMESPACE,
            registry=registry,
            buckets=LATENCY_BUCKETS,
        )

    def observe(self, backend: str, outcome: str, seconds: float) -> None:
        """Count one call (the evaluator's observer hook)."""
        self.calls.labels(backend, outcome).inc()
        if outcome != "not_configured":
            self.latency.labels(backend).observe(seconds)
