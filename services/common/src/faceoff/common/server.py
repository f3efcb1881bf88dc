"""The server factory all three services use: wiring only, no domain logic.

:func:`start_server` builds a ``grpc.aio`` server with the metrics, access-log and error
interceptors (plus bearer-token auth and per-client rate limits when configured), TLS or
mutual TLS when a certificate is configured, the gRPC health service (NOT_SERVING until the
service's models are loaded), server reflection, message-size limits, a concurrency limit and a
Prometheus ``/metrics`` endpoint (plain HTTP, also with TLS), and returns a
:class:`RunningServer` that tests start on port 0. :func:`run` serves until SIGTERM or SIGINT
and then drains gracefully: health turns NOT_SERVING at once (so load balancers stop sending),
in-flight RPCs get ``grace_seconds`` to finish, then the rest are cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import WSGIServer

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

from faceoff.common import logs, memory, security, tracing
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
from faceoff.common.settings import ServerSettings

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class ServiceSpec:
    """What a service plugs into the shared server.

    Attributes:
        name: Fully-qualified gRPC service name, e.g. ``"faceoff.v1.Detector"``.
        namespace: Prometheus namespace of its metrics, e.g. ``"faceoff_detector"``.
        register: Adds the servicer to a server (the generated ``add_*Servicer_to_server``).
        load: Blocking model load, run in a thread after the server starts; health turns
            SERVING when it returns. An exception keeps the service NOT_SERVING and is logged.
        setup_metrics: Optional hook that registers service-specific metrics in the registry.
        close: Optional coroutine function run after the server stopped (close channels, workers).
        monitor: Optional coroutine function started once the models are loaded and cancelled
            when the server stops; it may set the health of ``name`` (never of ``""``, which
            says the process is alive) to say whether the service can do its work now.
    """

    name: str
    namespace: str
    register: Callable[[grpc.aio.Server], None]
    load: Callable[[], None]
    setup_metrics: Callable[[CollectorRegistry], None] | None = None
    close: Callable[[], Awaitable[None]] | None = None
    monitor: Callable[[health.aio.HealthServicer], Coroutine[Any, Any, None]] | None = None


@dataclass
class RunningServer:
    """A started server and what tests need to talk to it."""

    server: grpc.aio.Server
    port: int
    metrics_port: int | None
    health: health.aio.HealthServicer
    metrics: ServerMetrics
    spec: ServiceSpec
    settings: ServerSettings
    loading: asyncio.Task[None]
    load_error: BaseException | None = None
    monitoring: asyncio.Task[None] | None = None
    _metrics_http: WSGIServer | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        """``host:port`` a client on this machine can dial."""
        host = (
            self.settings.host
            if self.settings.host not in ("0.0.0.0", "::", "[::]")
            else "127.0.0.1"
        )
        return f"{host}:{self.port}"

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until the models are loaded (health SERVING); re-raise a load failure."""
        await asyncio.wait_for(asyncio.shield(self.loading), timeout)
        if self.load_error is not None:
            raise RuntimeError(
                f"{self.spec.name} failed to load its models: {self.load_error}"
            ) from self.load_error

    async def stop(self, grace: float | None = None) -> None:
        """Turn health NOT_SERVING, let in-flight RPCs finish within ``grace`` seconds, stop."""
        grace = self.settings.grace_seconds if grace is None else grace
        await self.health.enter_graceful_shutdown()
        if self.monitoring is not None:
            self.monitoring.cancel()
            await asyncio.gather(self.monitoring, return_exceptions=True)
        await self.server.stop(grace)
        if not self.loading.done():
            self.loading.cancel()
        if self.spec.close is not None:
            await self.spec.close()
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()


async def start_server(
    settings: ServerSettings, spec: ServiceSpec, *, registry: CollectorRegistry | None = None
) -> RunningServer:
    """Start ``spec`` on ``settings.port`` (0 picks a free port) and begin loading its models."""
    registry = registry if registry is not None else CollectorRegistry()
    set_up = memory.configure(settings.malloc_arenas, settings.mmap_threshold_bytes)
    if set_up:
        log.debug("glibc malloc: %s", set_up)
    _process_collectors(registry)
    metrics = ServerMetrics(spec.namespace, registry)
    if spec.setup_metrics is not None:
        spec.setup_metrics(registry)
    server = grpc.aio.server(
        interceptors=_interceptors(settings, spec, metrics, registry),
        options=server_options(settings),
    )
    spec.register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (spec.name, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    await health_servicer.set("", NOT_SERVING)
    await health_servicer.set(spec.name, NOT_SERVING)
    port = _add_port(server, settings)
    if port == 0:
        raise OSError(f"cannot listen on {settings.host}:{settings.port}")
    await server.start()

    metrics_http = None
    metrics_port = None
    if settings.metrics_port >= 0:
        metrics_http, _thread = start_http_server(
            settings.metrics_port, addr=settings.host, registry=registry
        )
        metrics_port = int(metrics_http.server_port)

    running: RunningServer

    async def load() -> None:
        try:
            await asyncio.to_thread(spec.load)
        except Exception as exc:
            running.load_error = exc
            log.exception("%s failed to load its models; staying NOT_SERVING", spec.name)
            return
        await health_servicer.set("", SERVING)
        await health_servicer.set(spec.name, SERVING)
        log.info("%s SERVING on port %d", spec.name, port)
        if spec.monitor is not None:
            running.monitoring = asyncio.get_running_loop().create_task(
                spec.monitor(health_servicer)
            )

    running = RunningServer(
        server=server,
        port=port,
        metrics_port=metrics_port,
        health=health_servicer,
        metrics=metrics,
        spec=spec,
        settings=settings,
        loading=asyncio.get_running_loop().create_task(load()),
        _metrics_http=metrics_http,
    )
    transport = (
        "mutual TLS" if settings.tls_client_ca else "TLS" if settings.tls_cert else "plaintext"
    )
    log.info(
        "%s listening on %s:%d, %s%s%s (metrics port %s, plain HTTP)",
        spec.name,
        settings.host,
        port,
        transport,
        ", bearer tokens" if settings.auth_tokens_file else "",
        f", {settings.rate_limit_per_client:g} requests/s per client"
        if settings.rate_limit_per_client
        else "",
        metrics_port,
    )
    return running


def _interceptors(
    settings: ServerSettings, spec: ServiceSpec, metrics: ServerMetrics, registry: CollectorRegistry
) -> list[grpc.aio.ServerInterceptor]:
    """Metrics first (it sees the final status), then the trace's SERVER span (so the access log
    line carries its trace id), the access log and the error mapper, then the optional token check
    and, inside it, the rate limit (which needs the token's name)."""
    chain: list[grpc.aio.ServerInterceptor] = [
        MetricsInterceptor(metrics),
        tracing.TracingInterceptor(),
        AccessLogInterceptor(),
        ErrorInterceptor(),
    ]
    if settings.auth_tokens_file is not None:
        tokens = security.read_tokens("FACEOFF_AUTH_TOKENS_FILE", settings.auth_tokens_file)
        chain.append(AuthInterceptor(security.TokenTable(tokens), spec.namespace, registry))
    if settings.rate_limit_per_client > 0:
        buckets = TokenBuckets(
            settings.rate_limit_per_client,
            settings.rate_limit_burst,
            settings.rate_limit_max_clients,
        )
        chain.append(RateLimitInterceptor(buckets, spec.namespace, registry))
    # The concurrency limit, innermost: refusals carry a retry hint and are counted; health is exempt.
    chain.append(ConcurrencyLimitInterceptor(settings.max_concurrent_rpcs))
    return chain


def _add_port(server: grpc.aio.Server, settings: ServerSettings) -> int:
    """Listen in plaintext, or over TLS (mutual TLS with a client CA) when a certificate is set."""
    address = f"{settings.host}:{settings.port}"
    if settings.tls_cert is None or settings.tls_key is None:
        return server.add_insecure_port(address)
    credentials = security.server_credentials(
        settings.tls_cert, settings.tls_key, settings.tls_client_ca
    )
    return server.add_secure_port(address, credentials)


async def run(
    settings: ServerSettings,
    spec: ServiceSpec,
    *,
    registry: CollectorRegistry | None = None,
    on_started: Callable[[RunningServer], None] | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, then drain within ``settings.grace_seconds``."""
    running = await start_server(settings, spec, registry=registry)
    if on_started is not None:
        on_started(running)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("%s draining (grace %.1f s)", spec.name, settings.grace_seconds)
    await running.stop()
    log.info("%s stopped", spec.name)


#: Pings a client may send on an idle connection at most this often (ms): clients with keepalive
#: (the masker's detector channel pings every 30 s) are not sent GOAWAY "too_many_pings".
MIN_CLIENT_PING_INTERVAL_MS = 10_000


def server_options(settings: ServerSettings) -> list[tuple[str, Any]]:
    """The gRPC server's channel arguments: message limits, keepalive and connection age."""
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 0),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", MIN_CLIENT_PING_INTERVAL_MS),
    ]
    if settings.keepalive_seconds > 0:
        options += [
            ("grpc.keepalive_time_ms", int(settings.keepalive_seconds * 1000)),
            ("grpc.keepalive_timeout_ms", 20_000),
        ]
    if settings.max_connection_age_seconds > 0:
        options += [
            ("grpc.max_connection_age_ms", int(settings.max_connection_age_seconds * 1000)),
            (
                "grpc.max_connection_age_grace_ms",
                int(settings.max_connection_age_grace_seconds * 1000),
            ),
        ]
    return options


def _process_collectors(registry: CollectorRegistry) -> None:
    """The standard ``process_*`` (CPU seconds, resident memory, open fds, start time) and
    ``python_*`` (GC, version) series, on every exporter; once per registry."""
    if getattr(registry, "_faceoff_process", False):
        return
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry._faceoff_process = True  # type: ignore[attr-defined]


def configure_logging(level: str = "INFO", fmt: str = "text", service: str = "faceoff") -> None:
    """Configure the root logger (text or JSON lines, :mod:`faceoff.common.logs`); entry points only."""
    logs.configure(level, fmt, service)
