"""grpc.health.v1.Health/Watch through the servers' whole interceptor chain.

grpc's own health servicer writes Watch's responses with ``context.write`` from a coroutine; the
interceptors used to iterate every streaming handler as an async generator, so Watch failed with
INTERNAL (and a traceback in the log) on every server, and a channel with client-side health
checking (``healthCheckConfig``) could reach none of them. Each interceptor is tested alone and
all together, with the token check and the rate limit on; no model is loaded.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from faceoff.common import security
from faceoff.common.interceptors import (
    AccessLogInterceptor,
    AuthInterceptor,
    ErrorInterceptor,
    MetricsInterceptor,
    RateLimitInterceptor,
    ServerMetrics,
    TokenBuckets,
)
from faceoff.common.interceptors.concurrency import ConcurrencyLimitInterceptor
from faceoff.common.server import SERVING, RunningServer, ServiceSpec, start_server
from faceoff.common.settings import ServerSettings
from tests.conftest import LoopThread

SERVICE = "faceoff.v1.Test"
TOKEN = "watch-test-token-0123456789abcdef"


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


def _start(loop: LoopThread, tmp: Path, **settings: object) -> RunningServer:
    tokens = tmp / "tokens"
    tokens.write_text(f"app:{TOKEN}\n")
    spec = ServiceSpec(
        name=SERVICE, namespace="faceoff_test", register=lambda server: None, load=lambda: None
    )
    options = {
        "host": "127.0.0.1",
        "port": 0,
        "metrics_port": -1,
        "grace_seconds": 0.5,
        "auth_tokens_file": str(tokens),
        **settings,
    }
    running = loop.run(start_server(ServerSettings(**options), spec, registry=CollectorRegistry()))  # type: ignore[arg-type]
    loop.run(running.wait_ready(timeout=30))
    return running


def _watch(channel: grpc.Channel, service: str, out: queue.Queue[object]) -> grpc.Future:
    call = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service=service), timeout=30
    )

    def read() -> None:
        try:
            for response in call:
                out.put(response.status)
        except grpc.RpcError as exc:
            out.put(exc)

    threading.Thread(target=read, daemon=True).start()
    return call


def test_watch_streams_transitions_through_every_interceptor(
    loop: LoopThread, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    running = _start(loop, tmp_path, rate_limit_per_client=50.0, rate_limit_burst=50)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            caplog.set_level(logging.ERROR)
            seen: queue.Queue[object] = queue.Queue()
            call = _watch(channel, SERVICE, seen)
            assert seen.get(timeout=10) == health_pb2.HealthCheckResponse.SERVING
            loop.run(running.health.set(SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING))
            assert seen.get(timeout=10) == health_pb2.HealthCheckResponse.NOT_SERVING
            loop.run(running.health.set(SERVICE, SERVING))
            assert seen.get(timeout=10) == health_pb2.HealthCheckResponse.SERVING
            call.cancel()
        assert not [
            r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("faceoff")
        ]
    finally:
        loop.run(running.stop(grace=0.5))


def test_watch_of_an_unknown_service_says_so(loop: LoopThread, tmp_path: Path) -> None:
    running = _start(loop, tmp_path)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            seen: queue.Queue[object] = queue.Queue()
            call = _watch(channel, "no.such.Service", seen)
            assert seen.get(timeout=10) == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
            call.cancel()
    finally:
        loop.run(running.stop(grace=0.5))


def test_client_side_health_checking_reaches_the_server(loop: LoopThread, tmp_path: Path) -> None:
    """A channel with ``healthCheckConfig`` (as meshes and balancers use) gets its calls through."""
    running = _start(loop, tmp_path)
    config = json.dumps(
        {
            "loadBalancingConfig": [{"round_robin": {}}],
            "healthCheckConfig": {"serviceName": SERVICE},
        }
    )
    try:
        with grpc.insecure_channel(
            f"127.0.0.1:{running.port}", options=[("grpc.service_config", config)]
        ) as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=SERVICE), timeout=10
            )
            assert reply.status == SERVING
    finally:
        loop.run(running.stop(grace=0.5))


def test_health_checks_count_against_the_peers_rate_limit(
    loop: LoopThread, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Unauthenticated Check and Watch are limited by address; a refusal logs no traceback."""
    running = _start(loop, tmp_path, rate_limit_per_client=0.01, rate_limit_burst=2)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            caplog.set_level(logging.WARNING)
            stub = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service=SERVICE)
            assert stub.Check(request, timeout=10).status == SERVING
            seen: queue.Queue[object] = queue.Queue()
            call = _watch(channel, SERVICE, seen)
            assert seen.get(timeout=10) == SERVING
            call.cancel()
            with pytest.raises(grpc.RpcError) as refused:
                stub.Check(request, timeout=10)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "rate limit" in refused.value.details()
            refused_watch: queue.Queue[object] = queue.Queue()
            _watch(channel, SERVICE, refused_watch)
            error = refused_watch.get(timeout=10)
            assert isinstance(error, grpc.RpcError)
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert not [r for r in caplog.records if r.exc_info and r.name.startswith("faceoff")]
    finally:
        loop.run(running.stop(grace=0.5))


async def _coroutine_stream(request: object, context: grpc.aio.ServicerContext) -> None:
    """A streaming handler in grpc's other style: responses written with ``context.write``."""
    for status in (SERVING, health_pb2.HealthCheckResponse.NOT_SERVING):
        await context.write(health_pb2.HealthCheckResponse(status=status))


async def _generator_stream(request: object, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
    for status in (SERVING, health_pb2.HealthCheckResponse.NOT_SERVING):
        yield health_pb2.HealthCheckResponse(status=status)


@pytest.mark.parametrize("style", [_coroutine_stream, _generator_stream], ids=["write", "yield"])
@pytest.mark.parametrize(
    "make",
    [
        lambda: MetricsInterceptor(ServerMetrics("faceoff_t", CollectorRegistry())),
        AccessLogInterceptor,
        ErrorInterceptor,
        lambda: AuthInterceptor(
            security.TokenTable({"app": TOKEN}), "faceoff_t", CollectorRegistry()
        ),
        lambda: RateLimitInterceptor(TokenBuckets(50, 50, 100), "faceoff_t", CollectorRegistry()),
        lambda: ConcurrencyLimitInterceptor(4),
    ],
    ids=["metrics", "access_log", "errors", "auth", "rate_limit", "concurrency"],
)
def test_each_interceptor_passes_both_streaming_styles(loop: LoopThread, make, style) -> None:  # type: ignore[no-untyped-def]
    async def serve() -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server(interceptors=[make()])
        handler = grpc.unary_stream_rpc_method_handler(
            style,
            request_deserializer=health_pb2.HealthCheckRequest.FromString,
            response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler("faceoff.v1.Stream", {"Run": handler})]
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = loop.run(serve())
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            run = channel.unary_stream(
                "/faceoff.v1.Stream/Run",
                request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                response_deserializer=health_pb2.HealthCheckResponse.FromString,
            )
            replies = run(
                health_pb2.HealthCheckRequest(),
                timeout=10,
                metadata=[("authorization", f"Bearer {TOKEN}")],
            )
            got = [r.status for r in replies]
        assert got == [SERVING, health_pb2.HealthCheckResponse.NOT_SERVING]
    finally:
        loop.run(server.stop(0))
