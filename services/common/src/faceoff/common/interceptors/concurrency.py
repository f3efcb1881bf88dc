"""The concurrency limit: at most ``limit`` RPCs at once; past it, RESOURCE_EXHAUSTED with a retry hint.

gRPC's own ``maximum_concurrent_rpcs`` refuses in the C core, where the refusal carries no retry
hint, is invisible to the metrics and access-log interceptors, and counts health checks, so a
saturated server could fail its Kubernetes probes. This interceptor does the same job in view of
the others: health checks and reflection are never limited, and a refused call gets a message
saying when to retry plus the trailing metadata of :mod:`faceoff.common.retry_hint`. The
hint is the typical time a call holds its place (a moving average of recent successful calls,
between :data:`MIN_RETRY_SECONDS` and :data:`MAX_RETRY_SECONDS`).

A refused unary call has been received before it is refused (gRPC reads the request before any
interceptor sees it), but it is dropped at once: only the admitted calls stay in memory.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from faceoff.common import status
from faceoff.common.interceptors._wrap import (
    Context,
    Handler,
    HandlerInterceptor,
    StreamBehaviour,
    UnaryBehaviour,
    wrap_handler,
)

#: Methods never limited: probes and load balancers must get an answer from a busy server.
EXEMPT_PREFIXES: tuple[str, ...] = ("/grpc.health.v1.Health/", "/grpc.reflection.")

MIN_RETRY_SECONDS = 0.5
MAX_RETRY_SECONDS = 60.0
#: Retry hint before any call has finished.
INITIAL_RETRY_SECONDS = 1.0
_SMOOTHING = 0.2


class ConcurrencyLimitInterceptor(HandlerInterceptor):
    """Admits at most ``limit`` RPCs at once (see the module docstring).

    Runs on the server's event loop, so the counter needs no lock.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.limit = limit
        self.active = 0
        self._typical = INITIAL_RETRY_SECONDS

    def retry_after(self) -> float:
        """Seconds a refused client should wait before trying again."""
        return min(MAX_RETRY_SECONDS, max(MIN_RETRY_SECONDS, self._typical))

    def _finished(self, seconds: float) -> None:
        self._typical += _SMOOTHING * (seconds - self._typical)

    async def _refuse(self, context: Context) -> None:
        hint = self.retry_after()
        await status.abort(
            context,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"the server is handling {self.limit} requests, its limit (FACEOFF_MAX_CONCURRENT_RPCS); "
            f"retry in {hint:.1f} s",
            "TOO_MANY_CALLS",
            retry_after=hint,
        )

    def wrap(self, handler: Handler, path: str) -> Handler:
        if path.startswith(EXEMPT_PREFIXES):
            return handler

        def unary(behaviour: UnaryBehaviour) -> UnaryBehaviour:
            async def wrapped(request: Any, context: Context) -> Any:
                if self.active >= self.limit:
                    await self._refuse(context)
                self.active += 1
                start = time.perf_counter()
                try:
                    result = await behaviour(request, context)
                    self._finished(time.perf_counter() - start)
                    return result
                finally:
                    self.active -= 1

            return wrapped

        def stream(behaviour: StreamBehaviour) -> StreamBehaviour:
            async def wrapped(request: Any, context: Context) -> AsyncIterator[Any]:
                if self.active >= self.limit:
                    await self._refuse(context)
                self.active += 1
                start = time.perf_counter()
                try:
                    async for item in behaviour(request, context):
                        yield item
                    self._finished(time.perf_counter() - start)
                finally:
                    self.active -= 1

            return wrapped

        return wrap_handler(handler, unary, stream)
