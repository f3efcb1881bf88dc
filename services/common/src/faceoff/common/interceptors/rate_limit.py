"""Per-client rate limits: a token bucket per client identity, RESOURCE_EXHAUSTED beyond it.

Installed when ``FACEOFF_RATE_LIMIT_PER_CLIENT`` is above 0. Each client may make
``rate_limit_burst`` RPCs at once and then ``rate_limit_per_client`` RPCs per second. The client
is, in this order: the name of its bearer token (with ``FACEOFF_AUTH_TOKENS_FILE``), the common
name of its TLS client certificate (with ``FACEOFF_TLS_CLIENT_CA``), else its IP address (behind
a proxy or an Ingress that is the proxy's, so give clients tokens there). Health checks are
limited like any call: they need no token, so they count against their peer's address (a probe
every few seconds is far below any limit; a flood of unauthenticated Watch calls is not). Server
reflection, a bidirectional stream, is not limited. A refused call ends with
RESOURCE_EXHAUSTED, a message giving the limit and the wait, and the shared retry hint
(:mod:`faceoff.common.retry_hint`: trailing ``grpc-retry-pushback-ms`` and ``retry-after``);
refusals are counted in ``faceoff_<service>_rate_limited_total{method}``.

Memory is bounded: a bucket idle long enough to be full again is forgotten (a new one would be
the same), and at most ``rate_limit_max_clients`` clients are tracked; past that the least
recently seen client's bucket is dropped.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter

from faceoff.common import status
from faceoff.common.interceptors._wrap import (
    Context,
    Handler,
    HandlerInterceptor,
    StreamBehaviour,
    UnaryBehaviour,
    wrap_handler,
)
from faceoff.common.interceptors.auth import authenticated_name


class TokenBuckets:
    """Token buckets by client identity, with bounded memory (see the module docstring).

    Args:
        rate: Tokens added per second.
        burst: Bucket size: requests allowed at once.
        max_clients: Buckets kept at most.
        clock: Monotonic seconds (injectable for tests).
    """

    def __init__(
        self, rate: float, burst: int, max_clients: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1 or max_clients < 1:
            raise ValueError(
                f"need rate > 0, burst >= 1 and max_clients >= 1, got {rate}, {burst}, {max_clients}"
            )
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self._clock = clock
        self._refill_seconds = burst / rate
        self._buckets: OrderedDict[str, tuple[float, float]] = (
            OrderedDict()
        )  # client -> (tokens, when)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, client: str) -> float:
        """Take one token for ``client``: 0.0 if allowed, else the seconds until one is available."""
        with self._lock:
            now = self._clock()
            self._forget_idle(now)
            tokens, when = self._buckets.pop(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - when) * self.rate)
            if tokens >= 1.0:
                self._buckets[client] = (tokens - 1.0, now)
                wait = 0.0
            else:
                self._buckets[client] = (tokens, now)
                wait = (1.0 - tokens) / self.rate
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
            return wait

    def _forget_idle(self, now: float) -> None:
        """Drop buckets, least recently used first, that have refilled completely."""
        while self._buckets:
            client, (_tokens, when) = next(iter(self._buckets.items()))
            if now - when < self._refill_seconds:
                return
            del self._buckets[client]


def client_identity(context: Context) -> str:
    """Who is calling: ``token:<name>``, else ``cert:<common name>``, else ``ip:<address>``."""
    name = authenticated_name()
    if name is not None:
        return f"token:{name}"
    auth = context.auth_context() or {}
    common_names = list(auth.get("x509_common_name") or ())
    if common_names:
        cn = common_names[0]
        return "cert:" + (cn.decode("utf-8", "replace") if isinstance(cn, bytes) else str(cn))
    peer = context.peer() or "unknown"  # "ipv4:127.0.0.1:5678", "ipv6:[::1]:5678", "unix:..."
    kind, _, rest = peer.partition(":")
    host = rest.rsplit(":", 1)[0] if kind in ("ipv4", "ipv6") else rest
    return f"ip:{host}"


class RateLimitInterceptor(HandlerInterceptor):
    """Applies :class:`TokenBuckets` per client to every unary and server-streaming RPC."""

    def __init__(self, buckets: TokenBuckets, namespace: str, registry: CollectorRegistry) -> None:
        self.buckets = buckets
        self.refusals = Counter(
            "rate_limited",
            "RPCs refused because their client exceeded its rate limit.",
            ["method"],
            namespace=namespace,
            registry=registry,
        )

    async def _admit(self, context: Context, method: str) -> None:
        wait = self.buckets.take(client_identity(context))
        if wait <= 0:
            return
        self.refusals.labels(method).inc()
        b = self.buckets
        await status.abort(
            context,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"rate limit exceeded: at most {b.rate:g} requests per second per client (bursts of {b.burst}); "
            f"retry in {wait:.2f} s",
            "RATE_LIMITED",
            retry_after=wait,
        )

    def wrap(self, handler: Handler, path: str) -> Handler:
        method = path.rsplit("/", 1)[-1]

        def unary(behaviour: UnaryBehaviour) -> UnaryBehaviour:
            async def wrapped(request: Any, context: Context) -> Any:
                await self._admit(context, method)
                return await behaviour(request, context)

            return wrapped

        def stream(behaviour: StreamBehaviour) -> StreamBehaviour:
            async def wrapped(request: Any, context: Context) -> AsyncIterator[Any]:
                await self._admit(context, method)
                async for item in behaviour(request, context):
                    yield item

            return wrapped

        return wrap_handler(handler, unary, stream)
