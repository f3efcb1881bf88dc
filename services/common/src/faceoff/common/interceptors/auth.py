"""Bearer-token authentication: every RPC but health checks needs ``authorization: Bearer <token>``.

Installed when ``FACEOFF_AUTH_TOKENS_FILE`` is set. Health checks stay open because Kubernetes'
probes and load balancers cannot send a token; server reflection is not exempt (it describes the
API, so it takes a token like the API itself). A refused call ends with UNAUTHENTICATED and a
message saying what is expected, never echoing what was sent; refusals are counted in
``faceoff_<service>_auth_refusals_total{reason}`` (``missing``, ``malformed``, ``invalid``).

The name of the matching token is the client's identity for the rate limiter
(:func:`authenticated_name`).
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter

from faceoff.common import status
from faceoff.common.interceptors._wrap import (
    Context,
    Handler,
    StreamBehaviour,
    UnaryBehaviour,
    wrap_handler,
)
from faceoff.common.security import TokenTable

log = logging.getLogger(__name__)

#: Methods that need no token: health checks (probes and load balancers cannot send one).
EXEMPT_PREFIXES: tuple[str, ...] = ("/grpc.health.v1.Health/",)

_BEARER = "bearer "
_name: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "faceoff_auth_name", default=None
)

MISSING_MESSAGE = (
    "missing bearer token: send the metadata 'authorization: Bearer <token>' with every call"
)
MALFORMED_MESSAGE = "malformed authorization metadata: expected 'authorization: Bearer <token>'"
INVALID_MESSAGE = "invalid bearer token: the token sent is not one this server accepts"


def authenticated_name() -> str | None:
    """The name of the token the current RPC presented, inside an authenticated RPC; else None."""
    return _name.get()


def _refusing_handler(handler: Handler, message: str, reason: str) -> Handler:
    """A handler of the same kind as ``handler`` that ends the call with UNAUTHENTICATED."""

    async def refuse(_request: Any, context: Context) -> Any:
        await status.abort(context, grpc.StatusCode.UNAUTHENTICATED, message, reason)

    async def refuse_stream(_request: Any, context: Context) -> AsyncIterator[Any]:
        await status.abort(context, grpc.StatusCode.UNAUTHENTICATED, message, reason)
        yield  # pragma: no cover - makes this an async generator; abort raises first

    kinds = {
        "unary_unary": (grpc.unary_unary_rpc_method_handler, refuse),
        "unary_stream": (grpc.unary_stream_rpc_method_handler, refuse_stream),
        "stream_unary": (grpc.stream_unary_rpc_method_handler, refuse),
        "stream_stream": (grpc.stream_stream_rpc_method_handler, refuse_stream),
    }
    for kind, (make, behaviour) in kinds.items():
        if getattr(handler, kind) is not None:
            return make(
                behaviour,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    raise ValueError(f"unknown handler kind: {handler!r}")


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks the bearer token of every RPC (see the module docstring).

    Args:
        tokens: The accepted tokens by name.
        namespace: Prometheus namespace of the refusal counter, e.g. ``"faceoff_detector"``.
        registry: Where the counter is registered.
    """

    def __init__(self, tokens: TokenTable, namespace: str, registry: CollectorRegistry) -> None:
        self.tokens = tokens
        self.refusals = Counter(
            "auth_refusals",
            "RPCs refused for a missing, malformed or invalid bearer token.",
            ["reason"],
            namespace=namespace,
            registry=registry,
        )

    def _check(self, metadata: tuple[Any, ...] | None) -> tuple[str | None, str]:
        """``(token name, "")`` for a valid token, else ``(None, refusal reason)``."""
        values = [value for key, value in (metadata or ()) if key == "authorization"]
        if not values:
            return None, "missing"
        value = values[0].decode("latin-1") if isinstance(values[0], bytes) else str(values[0])
        if (
            len(values) != 1
            or not value[: len(_BEARER)].lower() == _BEARER
            or not value[len(_BEARER) :].strip()
        ):
            return None, "malformed"
        name = self.tokens.match(value[len(_BEARER) :].strip())
        return (name, "") if name is not None else (None, "invalid")

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method = handler_call_details.method
        handler = await continuation(handler_call_details)
        if handler is None or method.startswith(EXEMPT_PREFIXES):
            return handler
        name, reason = self._check(handler_call_details.invocation_metadata)
        if name is None:
            self.refusals.labels(reason).inc()
            log.info("refused %s: %s bearer token", method, reason)
            message = {"missing": MISSING_MESSAGE, "malformed": MALFORMED_MESSAGE}.get(
                reason, INVALID_MESSAGE
            )
            return _refusing_handler(handler, message, f"TOKEN_{reason.upper()}")
        return _with_name(handler, name)


def _with_name(handler: Handler, name: str) -> Handler:
    """``handler`` with :func:`authenticated_name` returning ``name`` while it runs."""

    def unary(behaviour: UnaryBehaviour) -> UnaryBehaviour:
        async def wrapped(request: Any, context: Context) -> Any:
            token = _name.set(name)
            try:
                return await behaviour(request, context)
            finally:
                _name.reset(token)

        return wrapped

    def stream(behaviour: StreamBehaviour) -> StreamBehaviour:
        async def wrapped(request: Any, context: Context) -> AsyncIterator[Any]:
            # An async generator runs in the context of whoever iterates it: set the name around
            # each step of the inner stream rather than once.
            inner = behaviour(request, context).__aiter__()
            while True:
                token = _name.set(name)
                try:
                    item = await inner.__anext__()
                except StopAsyncIteration:
                    return
                finally:
                    _name.reset(token)
                yield item

        return wrapped

    return wrap_handler(handler, unary, stream)
