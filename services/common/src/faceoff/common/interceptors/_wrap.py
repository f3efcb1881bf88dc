"""Wrapping a grpc.aio method handler's behaviour, for unary and server-streaming RPCs alike."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

import grpc

#: A grpc.aio call's context and a method handler (generic in grpc's type stubs only).
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
UnaryBehaviour = Callable[[Any, Context], Awaitable[Any]]
StreamBehaviour = Callable[[Any, Context], AsyncIterator[Any]]


def wrap_handler(
    handler: Handler,
    unary: Callable[[UnaryBehaviour], UnaryBehaviour],
    stream: Callable[[StreamBehaviour], StreamBehaviour],
) -> Handler:
    """Return ``handler`` with its behaviour wrapped by ``unary`` or ``stream``.

    Every Face-Off RPC takes a single request; client-streaming handlers (only the reflection
    service has one, bidirectional) are returned unchanged. A server-streaming handler may be
    written in either of grpc.aio's styles: an async generator that yields its responses, or a
    coroutine that sends them with ``context.write`` (grpc's own health servicer's Watch); the
    second is seen by ``stream`` as a generator that yields nothing, its writes going straight
    to the call.
    """
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            # grpc's stubs type these factories for the sync server; grpc.aio takes coroutines.
            unary(handler.unary_unary),  # type: ignore[arg-type]
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            stream(_as_generator(handler.unary_stream)),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler


def _as_generator(behaviour: Any) -> StreamBehaviour:
    """A server-streaming behaviour as an async generator, whichever style it is written in."""
    if inspect.isasyncgenfunction(behaviour):
        return behaviour  # type: ignore[no-any-return]

    async def generator(request: Any, context: Context) -> AsyncIterator[Any]:
        result = behaviour(request, context)
        if inspect.isawaitable(result):  # responses go out through context.write
            result = await result
        if result is not None:  # a plain function returning an iterator of responses
            if hasattr(result, "__aiter__"):
                async for item in result:
                    yield item
            else:
                for item in result:
                    yield item

    return generator


def observe(
    handler: Handler,
    on_start: Callable[[Context], Any],
    on_finish: Callable[[Any, Context, float, str | None, Any], None],
) -> Handler:
    """Wrap ``handler`` so that ``on_start(context)`` runs before it and ``on_finish`` after it.

    ``on_finish(request, context, seconds, failure, started)`` gets the elapsed time, how the
    behaviour failed (None: it did not; ``"CANCELLED"`` or ``"DEADLINE_EXCEEDED"`` when the call
    was cancelled by its client or by its deadline, told apart by the deadline it arrived with;
    else ``"UNKNOWN"``, an abort included, whose code is on the context) and what ``on_start``
    returned; for a stream, the time to its last message. A stream the client cancelled may be finished long after its call is
    gone: ``on_finish`` must then not ask the call anything (``context.peer()`` crashes the
    process), so whatever it needs from the live call, ``on_start`` takes and hands over.

    grpc keeps an aborted call's exception until the server's next call arrives; its traceback,
    and that of the error it was raised for, reach every frame they went through, whose locals
    hold the request (a user's photo). So an abort leaves the wrapper without them, and the
    wrapper forgets the request once ``on_finish`` has run.
    """

    def unary(behaviour: UnaryBehaviour) -> UnaryBehaviour:
        async def wrapped(request: Any, context: Context) -> Any:
            start = time.perf_counter()
            deadline = _deadline(context, start)
            started = on_start(context)
            failure: str | None = "UNKNOWN"
            try:
                result = await behaviour(request, context)
                failure = None
                return result
            except grpc.aio.AbortError as exc:
                _forget_frames(exc)
                raise
            except asyncio.CancelledError:
                failure = _cancelled(deadline)
                raise
            finally:
                on_finish(request, context, time.perf_counter() - start, failure, started)
                request = None

        return wrapped

    def stream(behaviour: StreamBehaviour) -> StreamBehaviour:
        async def wrapped(request: Any, context: Context) -> AsyncIterator[Any]:
            start = time.perf_counter()
            deadline = _deadline(context, start)
            started = on_start(context)
            failure: str | None = "UNKNOWN"
            try:
                async for item in behaviour(request, context):
                    yield item
                failure = None
            except grpc.aio.AbortError as exc:
                _forget_frames(exc)
                raise
            except (asyncio.CancelledError, GeneratorExit):
                failure = _cancelled(deadline)
                raise
            finally:
                on_finish(request, context, time.perf_counter() - start, failure, started)
                request = None

        return wrapped

    return wrap_handler(handler, unary, stream)


#: A call cancelled this close to its deadline (seconds) is taken to have run out of time.
DEADLINE_SLACK = 0.05


def _deadline(context: Context, now: float) -> float | None:
    """When the call's deadline falls, on :func:`time.perf_counter`'s clock (None: it has none)."""
    remaining = context.time_remaining()
    return None if remaining is None else now + remaining


def _cancelled(deadline: float | None) -> str:
    """The status of a call cancelled under us: its deadline passed, or its client gave up."""
    if deadline is not None and time.perf_counter() >= deadline - DEADLINE_SLACK:
        return "DEADLINE_EXCEEDED"
    return "CANCELLED"


def _forget_frames(exc: BaseException) -> None:
    """Detach an abort from the frames it went through and from the error it was raised for
    (the status and message are already on the call; the error was logged where it was mapped)."""
    exc.__traceback__ = None
    exc.__context__ = None
    exc.__cause__ = None


def code_name(context: Context, failure: str | None) -> str:
    """The status the RPC ended with: the code set on ``context``, else how it failed (see
    :func:`observe`), else OK."""
    code = context.code()
    if code is None:
        return failure or "OK"
    if isinstance(code, grpc.StatusCode):
        return code.name
    for member in grpc.StatusCode:  # some grpc versions report the raw integer
        if member.value[0] == code:
            return member.name
    return str(code)


class HandlerInterceptor(grpc.aio.ServerInterceptor):
    """A server interceptor that wraps each method's handler once it is looked up.

    grpc.aio asks every interceptor for a method's handler on each call; this one takes it from
    the next interceptor (or the servicer) and returns :meth:`wrap`'s, or None (an unknown
    method) as it is. Subclasses write only :meth:`wrap`.
    """

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        return self.wrap(handler, handler_call_details.method)

    def wrap(self, handler: Handler, path: str) -> Handler:
        """``handler`` of the method at ``path`` (``/package.Service/Method``), wrapped."""
        raise NotImplementedError
