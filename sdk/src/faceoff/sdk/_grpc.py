"""Channels, metadata, retries and status translation for the remote clients (sync and asyncio)."""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

import grpc
from google.rpc import error_details_pb2, status_pb2

from faceoff.sdk._version import __version__
from faceoff.sdk.config import RETRYABLE_CODES, UNSTARTED_REASONS, RetryPolicy, TLSConfig
from faceoff.sdk.errors import FaceOffError, error_for

log = logging.getLogger("faceoff.sdk")

T = TypeVar("T")

#: What ``tls=`` accepts: None (plaintext), True (system roots) or a :class:`TLSConfig`.
TLSOption = bool | TLSConfig | None

#: gRPC's own over-size errors, whatever comes before them (grpc 1.85 prefixes "SERVER: "),
#: and the masker's refusal of a reply over its limit: none of them is worth a retry.
_SIZE_LIMIT = re.compile(
    r"(sent|received) message larger than max|reply is .* over this server's message limit",
    re.IGNORECASE,
)

#: Trailing metadata of a server's retry hint: milliseconds (gRPC's key), else whole seconds.
PUSHBACK_KEY = "grpc-retry-pushback-ms"
RETRY_AFTER_KEY = "retry-after"
#: The rich status (google.rpc.Status) gRPC carries in trailers; the request id, both ways.
DETAILS_KEY = "grpc-status-details-bin"
REQUEST_ID_KEY = "x-request-id"
#: ErrorInfo's domain of the Face-Off servers' reasons.
DOMAIN = "faceoff.v1"


def channel_options(max_message_bytes: int) -> list[tuple[str, object]]:
    """Options of every channel the SDK opens."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.primary_user_agent", f"faceoff-sdk/{__version__}"),
        # The SDK retries itself (bounded, with jitter); gRPC's transparent retries stay off.
        ("grpc.enable_retries", 0),
    ]


def _credentials(tls: TLSOption) -> grpc.ChannelCredentials | None:
    if tls is None or tls is False:
        return None
    if tls is True:
        return grpc.ssl_channel_credentials()
    if isinstance(tls, TLSConfig):
        return tls.credentials()  # type: ignore[return-value]
    raise TypeError(f"tls must be None, True or a TLSConfig, got {type(tls).__name__}")


def sync_channel(address: str, tls: TLSOption, max_message_bytes: int) -> grpc.Channel:
    """A channel to ``address`` (``host:port``)."""
    creds, options = _credentials(tls), channel_options(max_message_bytes)
    return (
        grpc.secure_channel(address, creds, options)
        if creds
        else grpc.insecure_channel(address, options)
    )


def aio_channel(address: str, tls: TLSOption, max_message_bytes: int) -> grpc.aio.Channel:
    """An asyncio channel to ``address`` (``host:port``)."""
    creds, options = _credentials(tls), channel_options(max_message_bytes)
    return (
        grpc.aio.secure_channel(address, creds, options)
        if creds
        else grpc.aio.insecure_channel(address, options)
    )


def metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """Call metadata: the bearer token, when there is one."""
    if token is None:
        return ()
    if not isinstance(token, str) or not token.strip() or "\n" in token:
        raise ValueError("token must be a non-empty single-line string")
    return (("authorization", f"Bearer {token.strip()}"),)


def _code(exc: grpc.RpcError) -> str:
    code = exc.code() if hasattr(exc, "code") else None
    return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"


def _details(exc: grpc.RpcError) -> str:
    details = exc.details() if hasattr(exc, "details") else None
    return details or ""


def retryable(exc: grpc.RpcError) -> bool:
    """True for UNAVAILABLE, RESOURCE_EXHAUSTED and DEADLINE_EXCEEDED, except a message over the size limit."""
    return _code(exc) in RETRYABLE_CODES and not _SIZE_LIMIT.search(_details(exc))


def _trailers(exc: grpc.RpcError) -> list[tuple[str, str | bytes]]:
    trailing = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    # (key, value) pairs at run time, from the sync and the asyncio stack alike.
    return list(cast("Iterable[tuple[str, str | bytes]]", trailing or ()))


class RichStatus:
    """What a failed call's ``grpc-status-details-bin`` says (google.rpc.Status), if anything.

    Attributes:
        reason: ErrorInfo's reason when its domain is ``faceoff.v1``.
        field: The first BadRequest field violation's path, else ErrorInfo's ``field``.
        retry_delay: RetryInfo's delay in seconds.
        request_id: ErrorInfo's ``request_id``.
    """

    def __init__(self, exc: grpc.RpcError) -> None:
        self.reason: str | None = None
        self.field: str | None = None
        self.retry_delay: float | None = None
        self.request_id: str | None = None
        raw = next((v for k, v in _trailers(exc) if k == DETAILS_KEY), None)
        if raw is None:
            return
        status = status_pb2.Status()
        try:
            status.ParseFromString(raw if isinstance(raw, bytes) else raw.encode("latin-1"))
        except Exception:  # noqa: BLE001 - a proxy's bytes: the call still fails with its code
            return
        for detail in status.details:
            info, bad, retry = (
                error_details_pb2.ErrorInfo(),
                error_details_pb2.BadRequest(),
                error_details_pb2.RetryInfo(),
            )
            if detail.Is(info.DESCRIPTOR) and detail.Unpack(info) and info.domain == DOMAIN:
                self.reason = info.reason or None
                self.field = self.field or info.metadata.get("field") or None
                self.request_id = info.metadata.get("request_id") or None
            elif detail.Is(bad.DESCRIPTOR) and detail.Unpack(bad) and bad.field_violations:
                self.field = bad.field_violations[0].field or self.field
            elif detail.Is(retry.DESCRIPTOR) and detail.Unpack(retry):
                seconds = retry.retry_delay.ToNanoseconds() / 1e9
                self.retry_delay = seconds if seconds >= 0 else None


#: How gRPC says a connection could not be made (the call reached no server).
_NOT_CONNECTED = re.compile(r"failed to connect|connection refused|connect failed", re.IGNORECASE)


def unstarted(exc: grpc.RpcError) -> bool:
    """Whether the failure says the server did no work: a Face-Off refusal whose reason is in
    :data:`UNSTARTED_REASONS`, or UNAVAILABLE because no connection could be made."""
    reason = RichStatus(exc).reason
    if reason is not None:
        return reason in UNSTARTED_REASONS
    return _code(exc) == "UNAVAILABLE" and bool(_NOT_CONNECTED.search(_details(exc)))


def server_pushback(exc: grpc.RpcError) -> float | None:
    """The server's retry hint in seconds, None without one, or -1.0 when it asks for no retry.

    ``grpc-retry-pushback-ms`` follows gRPC's retry design (A6): a negative or unparseable value
    means "do not retry". Without it, RetryInfo's delay, then ``retry-after`` in seconds, is
    used when it parses.
    """
    values: dict[str, str] = {}
    for key, value in _trailers(exc):
        if key != DETAILS_KEY:
            values[key] = value.decode("latin-1") if isinstance(value, bytes) else str(value)
    if PUSHBACK_KEY in values:
        try:
            ms = int(values[PUSHBACK_KEY])
        except ValueError:
            return -1.0
        return ms / 1000.0 if ms >= 0 else -1.0
    delay = RichStatus(exc).retry_delay
    if delay is not None:
        return delay
    try:
        seconds = float(values[RETRY_AFTER_KEY])
    except (KeyError, ValueError):
        return None
    return seconds if 0 <= seconds < float("inf") else None


def translate(
    exc: grpc.RpcError, service: str, address: str, request_id: str | None = None
) -> FaceOffError:
    """The SDK exception for a failed call: the server's message, reason and field, plus where
    it went when that helps; ``request_id`` is the one the call sent."""
    code, details = _code(exc), _details(exc)
    rich = RichStatus(exc)
    if code == "UNIMPLEMENTED":
        details = (
            f"{service} is not served at {address}; give its address to the client "
            f"(detector= or evaluator=) ({details})"
        )
    elif code in ("UNAVAILABLE", "DEADLINE_EXCEEDED") and address not in details:
        details = f"{details} ({service} at {address})" if details else f"{service} at {address}"
    hint = server_pushback(exc)
    returned = next((v for k, v in _trailers(exc) if k == REQUEST_ID_KEY), None)
    if isinstance(returned, bytes):
        returned = returned.decode("latin-1")
    return error_for(
        code,
        details,
        hint if hint is not None and hint >= 0 else None,
        reason=rich.reason,
        field=rich.field,
        request_id=rich.request_id or returned or request_id,
    )


@functools.cache
def _opentelemetry() -> tuple[Any, Any] | None:
    """OpenTelemetry's ``trace`` and ``propagate`` modules when the app has them (looked up once)."""
    try:
        from opentelemetry import propagate, trace
    except ImportError:
        return None
    return trace, propagate


@contextmanager
def _client_span(service: str, method: str) -> Iterator[None]:
    """A CLIENT span around one public call when the app uses OpenTelemetry (its API installed
    and a tracer provider set): the servers continue its trace from the ``traceparent`` that
    :func:`_with_trace` adds. Without OpenTelemetry, nothing."""
    otel = _opentelemetry()
    if otel is None:
        yield
        return
    trace = otel[0]
    tracer = trace.get_tracer("faceoff.sdk")
    with tracer.start_as_current_span(
        f"{service}/{method}",
        kind=trace.SpanKind.CLIENT,
        attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": method},
    ):
        yield


def _with_trace(metadata: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """``metadata`` plus the current W3C trace context, when OpenTelemetry is installed."""
    otel = _opentelemetry()
    if otel is None:
        return metadata
    carrier: dict[str, str] = {}
    otel[1].inject(carrier)
    return metadata + tuple(carrier.items())


def new_request_id() -> str:
    """A request id for one public call (all its attempts send the same one)."""
    return uuid.uuid4().hex


class Deadline:
    """One public call's budget shared by the RPCs it makes (a protection and its check).

    ``left()`` is what remains of ``timeout`` (at least 1 ms, so the RPC fails with
    DEADLINE_EXCEEDED rather than taking the client's default), or None without one.
    """

    def __init__(self, timeout: float | None) -> None:
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0
        ):
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        self.end = None if timeout is None else time.monotonic() + float(timeout)

    def left(self) -> float | None:
        return None if self.end is None else self.remaining()

    def remaining(self) -> float:
        """What is left of a budget that was given (at least 1 ms)."""
        assert self.end is not None, "a Deadline without a timeout has no remaining time"
        return max(self.end - time.monotonic(), 0.001)


class Caller:
    """Runs one call with the policy's retries and translates its final failure.

    ``timeout`` bounds the whole call, retries and back-off included (as google-api-core's
    ``Retry(timeout=...)``): each attempt gets the time that is left as its deadline, a retry is
    not started when its back-off would end past the budget, and a DEADLINE_EXCEEDED that spent
    the budget is final. So ``Client(..., timeout=3)`` returns or raises within about 3 s.

    Args:
        policy: Attempts and backoff.
        timeout: Budget of the whole call, in seconds.
        metadata: Metadata sent with each attempt.
    """

    #: An attempt is not started with less than this left of the budget (seconds).
    MIN_ATTEMPT_SECONDS = 0.05

    def __init__(
        self, policy: RetryPolicy, timeout: float, metadata: tuple[tuple[str, str], ...]
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        self.policy = policy
        self.timeout = timeout
        self.metadata = metadata

    def _retry_wait(
        self, exc: grpc.RpcError, attempt: int, service: str, method: str, left: float
    ) -> float | None:
        """Seconds to wait before the next attempt (the server's hint, else the backoff), or
        None when there is none: not retryable, out of attempts, or out of the call's budget."""
        if not retryable(exc) or attempt + 1 >= self.policy.max_attempts:
            return None
        if (
            self.policy.unstarted_protect_only
            and method in ("Protect", "ProtectStream")
            and not unstarted(exc)
        ):
            log.info(
                "%s.%s attempt %d failed with %s; no retry: the server may have started the work",
                service,
                method,
                attempt + 1,
                _code(exc),
            )
            return None
        hint = server_pushback(exc)
        if hint is not None and hint < 0:
            return None  # the server asked not to retry
        wait = self.policy.backoff(attempt) if hint is None else hint
        if wait + self.MIN_ATTEMPT_SECONDS >= left:
            log.info(
                "%s.%s attempt %d failed with %s; no retry: the call's budget is spent",
                service,
                method,
                attempt + 1,
                _code(exc),
            )
            return None
        log.info(
            "%s.%s attempt %d failed with %s; retrying in %.2f s%s",
            service,
            method,
            attempt + 1,
            _code(exc),
            wait,
            " (the server's hint)" if hint is not None else "",
        )
        return wait

    def call(
        self,
        fn: Callable[[float, tuple[tuple[str, str], ...]], T],
        service: str,
        address: str,
        method: str,
        timeout: float | None = None,
    ) -> T:
        """``fn(timeout, metadata)`` until it succeeds, fails finally, or the attempts or the
        budget (``timeout``, default the client's) run out; ``fn`` gets what is left of it."""
        budget = Deadline(self.timeout if timeout is None else timeout)
        rid = new_request_id()
        with _client_span(service, method):
            sent = _with_trace((*self.metadata, (REQUEST_ID_KEY, rid)))
            for attempt in range(self.policy.max_attempts):
                try:
                    return fn(budget.remaining(), sent)
                except grpc.RpcError as exc:
                    wait = self._retry_wait(exc, attempt, service, method, budget.remaining())
                    if wait is None:
                        raise translate(exc, service, address, rid) from None
                time.sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def acall(
        self,
        fn: Callable[[float, tuple[tuple[str, str], ...]], Awaitable[T]],
        service: str,
        address: str,
        method: str,
        timeout: float | None = None,
    ) -> T:
        """The asyncio form of :meth:`call`."""
        budget = Deadline(self.timeout if timeout is None else timeout)
        rid = new_request_id()
        with _client_span(service, method):
            sent = _with_trace((*self.metadata, (REQUEST_ID_KEY, rid)))
            for attempt in range(self.policy.max_attempts):
                try:
                    return await fn(budget.remaining(), sent)
                except grpc.RpcError as exc:
                    wait = self._retry_wait(exc, attempt, service, method, budget.remaining())
                    if wait is None:
                        raise translate(exc, service, address, rid) from None
                await asyncio.sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")
