"""The masker's own Prometheus metrics (the per-RPC ones come from the shared interceptor)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from faceoff.masker.receipts import ProtectionResult

NAMESPACE = "faceoff_masker"


class MaskerMetrics:
    """Faces and photos protected, queue depth and capacity, batch sizes, attack iterations and time."""

    def __init__(
        self, registry: CollectorRegistry, queue_capacity: int, work_capacity: int
    ) -> None:
        kw: dict[str, Any] = {"namespace": NAMESPACE, "registry": registry}
        self.faces = Counter("faces_protected", "Faces protected.", **kw)
        self.photos = Counter("photos_protected", "Photos protected.", **kw)
        self.queue_depth = Gauge("queue_depth", "Faces waiting for an attack batch.", **kw)
        self.queue_capacity = Gauge(
            "queue_capacity", "Faces allowed to wait before requests are refused.", **kw
        )
        self.queue_work = Gauge(
            "queue_work",
            "Face-steps (faces x iterations x surrogates) waiting to be attacked.",
            **kw,
        )
        self.queue_work_capacity = Gauge(
            "queue_work_capacity", "Face-steps allowed to wait before requests are refused.", **kw
        )
        self.interleaved = Counter(
            "interleaved_batches",
            "Attack batches run in between the chunks of a costlier running batch.",
            **kw,
        )
        self.batch_size = Histogram(
            "batch_size", "Faces per attack batch.", buckets=(1, 2, 4, 8, 16, 32, 64), **kw
        )
        self.iterations = Counter(
            "attack_iterations", "Attack iterations run (per batch, not per face).", **kw
        )
        self.attack_seconds = Histogram(
            "attack_seconds",
            "Wall time of one attack batch.",
            buckets=(0.5, 1, 2, 5, 10, 20, 40, 80, 160, 320),
            **kw,
        )
        self.queue_capacity.set(queue_capacity)
        self.queue_work_capacity.set(work_capacity)

    def queued(self, faces: int, work: int) -> None:
        """The queue now holds ``faces`` faces costing ``work`` face-steps."""
        self.queue_depth.set(faces)
        self.queue_work.set(work)

    def batch_done(
        self, faces: int, iterations: int, seconds: float, *, interleaved: bool = False
    ) -> None:
        """An attack batch of ``faces`` faces ran ``iterations`` iterations in ``seconds``
        (``interleaved``: in between the chunks of another)."""
        if interleaved:
            self.interleaved.inc()
        self.batch_size.observe(faces)
        self.iterations.inc(iterations)
        self.attack_seconds.observe(seconds)

    def result(self, result: ProtectionResult) -> None:
        """A photo was protected."""
        self.photos.inc()
        self.faces.inc(len(result.faces))
