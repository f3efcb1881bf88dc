"""Calls a client cancels or lets expire are counted as CANCELLED / DEADLINE_EXCEEDED, never UNKNOWN.

UNKNOWN is a server fault to the error-ratio alert; mobile clients that give up must not page
anyone. The servers' first three interceptors (metrics, access log, error mapping) around slow
unary and streaming handlers.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from prometheus_client import CollectorRegistry

from faceoff.common.interceptors import (
    AccessLogInterceptor,
    ErrorInterceptor,
    MetricsInterceptor,
    ServerMetrics,
)
from tests.conftest import LoopThread

REQUEST = health_pb2.HealthCheckRequest
REPLY = health_pb2.HealthCheckResponse


async def _slow(request: Any, context: grpc.aio.ServicerContext) -> Any:
    await asyncio.sleep(30)
    return REPLY()


async def _slow_stream(request: Any, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
    yield REPLY(status=REPLY.SERVING)
    await asyncio.sleep(30)
    yield REPLY()


async def _broken(request: Any, context: grpc.aio.ServicerContext) -> Any:
    raise RuntimeError("a server fault")


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, CollectorRegistry]]:
    loop = LoopThread()
    registry = CollectorRegistry()

    async def serve() -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server(
            interceptors=[
                MetricsInterceptor(ServerMetrics("faceoff_t", registry)),
                AccessLogInterceptor(),
                ErrorInterceptor(),
            ]
        )
        handlers = {
            "Slow": grpc.unary_unary_rpc_method_handler(
                _slow, REQUEST.FromString, REPLY.SerializeToString
            ),
            "Broken": grpc.unary_unary_rpc_method_handler(
                _broken, REQUEST.FromString, REPLY.SerializeToString
            ),
            "SlowStream": grpc.unary_stream_rpc_method_handler(
                _slow_stream, REQUEST.FromString, REPLY.SerializeToString
            ),
        }
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler("faceoff.v1.T", handlers)]
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    running, port = loop.run(serve())
    yield f"127.0.0.1:{port}", registry
    loop.run(running.stop(0))
    loop.close()


def _count(registry: CollectorRegistry, method: str, code: str) -> float:
    value = registry.get_sample_value("faceoff_t_requests_total", {"method": method, "code": code})
    return value or 0.0


def _settled(registry: CollectorRegistry, method: str, code: str, expected: float) -> bool:
    """Whether the server recorded ``expected`` calls (it records just after the call ends)."""
    give_up = time.monotonic() + 10
    while _count(registry, method, code) < expected and time.monotonic() < give_up:
        time.sleep(0.05)
    return _count(registry, method, code) == expected


def _call(channel: grpc.Channel, method: str, stream: bool = False) -> Any:
    factory = channel.unary_stream if stream else channel.unary_unary
    return factory(
        f"/faceoff.v1.T/{method}",
        request_serializer=REQUEST.SerializeToString,
        response_deserializer=REPLY.FromString,
    )


def test_a_deadline_that_expires_is_deadline_exceeded(
    server: tuple[str, CollectorRegistry],
) -> None:
    address, registry = server
    with grpc.insecure_channel(address) as channel:
        with pytest.raises(grpc.RpcError) as info:
            _call(channel, "Slow")(REQUEST(), timeout=0.5)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert _settled(registry, "Slow", "DEADLINE_EXCEEDED", 1)
    assert _count(registry, "Slow", "UNKNOWN") == 0


def test_a_call_the_client_cancels_is_cancelled(server: tuple[str, CollectorRegistry]) -> None:
    address, registry = server
    with grpc.insecure_channel(address) as channel:
        future = _call(channel, "Slow").future(REQUEST(), timeout=20)
        time.sleep(0.5)
        future.cancel()
        stream = _call(channel, "SlowStream", stream=True)(REQUEST(), timeout=20)
        assert next(stream).status == REPLY.SERVING
        threading.Timer(0.3, stream.cancel).start()
        with pytest.raises(grpc.RpcError):
            list(stream)
    assert _settled(registry, "Slow", "CANCELLED", 1)
    assert _settled(registry, "SlowStream", "CANCELLED", 1)
    assert _count(registry, "Slow", "UNKNOWN") == _count(registry, "SlowStream", "UNKNOWN") == 0


def test_a_server_fault_is_still_a_fault(server: tuple[str, CollectorRegistry]) -> None:
    address, registry = server
    with grpc.insecure_channel(address) as channel:
        with pytest.raises(grpc.RpcError) as info:
            _call(channel, "Broken")(REQUEST(), timeout=10)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert _settled(registry, "Broken", "INTERNAL", 1)
