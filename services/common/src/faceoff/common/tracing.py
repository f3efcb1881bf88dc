"""OpenTelemetry traces: one trace per photo across the SDK, the masker, the detector and the evaluator.

Off by default. An entry point (``faceoff serve ...``, ``faceoff protect``) calls
:func:`configure`, which reads the standard OpenTelemetry environment:

- ``OTEL_TRACES_EXPORTER``: ``none`` (the default), ``console`` (each finished span as JSON on
  stdout) or ``otlp`` (OTLP over gRPC to ``OTEL_EXPORTER_OTLP_ENDPOINT``, default
  ``http://localhost:4317``; ``OTEL_EXPORTER_OTLP_*`` apply as the exporter documents);
- ``OTEL_SERVICE_NAME`` (default ``faceoff-<service>``), ``OTEL_RESOURCE_ATTRIBUTES``;
- ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` (the SDK's; default parent-based
  always-on) and ``OTEL_PROPAGATORS`` (default W3C ``tracecontext,baggage``).

Context crosses services in W3C ``traceparent`` metadata: :class:`TracingInterceptor` continues
the caller's trace in a SERVER span per RPC, :func:`inject` adds the current context to an
outgoing call's metadata (the masker's Detect calls, the SDK's calls), and :func:`span` opens a
child span for a stage (decode, detect, attack, paste, encode, each recogniser). Without a
configured exporter every call here is OpenTelemetry's no-op. Spans carry names, sizes, counts
and status codes, never image bytes, embeddings or identities.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from faceoff.common.errors import SettingsError
from faceoff.common.interceptors._wrap import (
    Context,
    Handler,
    HandlerInterceptor,
    StreamBehaviour,
    UnaryBehaviour,
    code_name,
    wrap_handler,
)

log = logging.getLogger(__name__)

TRACER = "faceoff"
EXPORTERS = ("none", "console", "otlp")


def configure(service: str, env: Mapping[str, str] | None = None) -> str:
    """Set up the global tracer provider from ``OTEL_*`` (see the module docstring); returns the
    exporter in use (``"none"``: nothing is set up)."""
    env = os.environ if env is None else env
    exporter_name = env.get("OTEL_TRACES_EXPORTER", "none").strip().lower() or "none"
    if exporter_name not in EXPORTERS:
        raise SettingsError(
            f"OTEL_TRACES_EXPORTER must be one of {', '.join(EXPORTERS)}, got {exporter_name!r}"
        )
    if exporter_name == "none":
        return exporter_name
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
        SpanProcessor,
    )

    # Resource.create reads OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME itself
    resource = Resource.create(
        {} if env.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: f"faceoff-{service}"}
    )
    provider = TracerProvider(resource=resource)
    processor: SpanProcessor
    if exporter_name == "console":
        processor = SimpleSpanProcessor(ConsoleSpanExporter())
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        processor = BatchSpanProcessor(OTLPSpanExporter())
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    log.info("tracing: %s spans as %s", exporter_name, resource.attributes.get(SERVICE_NAME))
    return exporter_name


def shutdown() -> None:
    """Flush and stop the tracer provider, if one was configured (at exit)."""
    provider = trace.get_tracer_provider()
    stop = getattr(provider, "shutdown", None)
    if callable(stop):
        stop()


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER)


@contextmanager
def span(name: str, **attributes: Any) -> Iterator[trace.Span]:
    """A child span of the current one for a stage of the work (a no-op when tracing is off)."""
    with tracer().start_as_current_span(name, attributes=attributes) as current:
        yield current


def inject(metadata: tuple[tuple[str, str], ...] = ()) -> tuple[tuple[str, str], ...]:
    """``metadata`` plus the current trace context (``traceparent``, ``tracestate``, baggage)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return metadata + tuple(carrier.items())


def _extract(context: Context) -> otel_context.Context:
    carrier: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        if isinstance(value, str):
            carrier[key] = value
    return propagate.extract(carrier)


class TracingInterceptor(HandlerInterceptor):
    """A SERVER span per RPC (health checks and reflection excluded), continuing the caller's trace."""

    def wrap(self, handler: Handler, path: str) -> Handler:
        if path.startswith("/grpc."):
            return handler
        service, _, method = path.lstrip("/").rpartition("/")
        name = f"{service}/{method}"
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}

        def finish(current: trace.Span, context: Context, failure: str | None) -> None:
            code = code_name(context, failure)
            member = grpc.StatusCode.__members__.get(code, grpc.StatusCode.UNKNOWN)
            current.set_attribute("rpc.grpc.status_code", member.value[0])
            if code != "OK":
                current.set_status(Status(StatusCode.ERROR, code))

        def unary(behaviour: UnaryBehaviour) -> UnaryBehaviour:
            async def wrapped(request: Any, context: Context) -> Any:
                with tracer().start_as_current_span(
                    name,
                    context=_extract(context),
                    kind=SpanKind.SERVER,
                    attributes=attributes,
                    record_exception=False,  # a refusal's message is the client's, not a trace's
                    set_status_on_exception=False,
                ) as current:
                    failure: str | None = "UNKNOWN"
                    try:
                        result = await behaviour(request, context)
                        failure = None
                        return result
                    finally:
                        finish(current, context, failure)

            return wrapped

        def stream(behaviour: StreamBehaviour) -> StreamBehaviour:
            async def wrapped(request: Any, context: Context) -> AsyncIterator[Any]:
                current = tracer().start_span(
                    name, context=_extract(context), kind=SpanKind.SERVER, attributes=attributes
                )
                failure: str | None = "UNKNOWN"
                try:
                    # the span is current only while the stream's own code runs
                    inner = behaviour(request, context).__aiter__()
                    while True:
                        token = otel_context.attach(trace.set_span_in_context(current))
                        try:
                            item = await inner.__anext__()
                        except StopAsyncIteration:
                            failure = None
                            return
                        finally:
                            otel_context.detach(token)
                        yield item
                finally:
                    finish(current, context, failure)
                    current.end()

            return wrapped

        return wrap_handler(handler, unary, stream)
