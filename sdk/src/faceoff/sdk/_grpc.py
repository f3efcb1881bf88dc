"""Channels, metadata, retries and status translation for the remote clients (sync and asyncio)."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar, cast

import grpc

from faceoff.sdk._version import __version__
from faceoff.sdk.config import RETRYABLE_CODES, RetryPolicy, TLSConfig
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


def server_pushback(exc: grpc.RpcError) -> float | None:
    """The server's retry hint in seconds, None without one, or -1.0 when it asks for no retry.

    ``grpc-retry-pushback-ms`` follows gRPC's retry design (A6): a negative or unparseable value
    means "do not retry". Without it, ``retry-after`` in seconds is used when it parses.
    """
    trailing = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    values: dict[str, str] = {}
    # (key, value) pairs at run time, from the sync and the asyncio stack alike.
    pairs = cast("Iterable[tuple[str, str | bytes]]", trailing or ())
    for key, value in pairs:
        values[key] = value.decode("latin-1") if isinstance(value, bytes) else str(value)
    if PUSHBACK_KEY in values:
        try:
            ms = int(values[PUSHBACK_KEY])
        except ValueError:
            return -1.0
        return ms / 1000.0 if ms >= 0 else -1.0
    try:
        seconds = float(values[RETRY_AFTER_KEY])
    except (KeyError, ValueError):
        return None
    return seconds if 0 <= seconds < float("inf") else None


def translate(exc: grpc.RpcError, service: str, address: str) -> FaceOffError:
    """The SDK exception for a failed call: the server's message, plus where it went when that helps."""
    code, details = _code(exc), _details(exc)
    if code == "UNIMPLEMENTED":
        details = (
            f"{service} is not served at {address}; give its address to the client "
            f"(detector= or evaluator=) ({details})"
        )
    elif code in ("UNAVAILABLE", "DEADLINE_EXCEEDED") and address not in details:
        details = f"{details} ({service} at {address})" if details else f"{service} at {address}"
    hint = server_pushback(exc)
    return error_for(code, details, hint if hint is not None and hint >= 0 else None)


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
        for attempt in range(self.policy.max_attempts):
            try:
                return fn(budget.remaining(), self.metadata)
            except grpc.RpcError as exc:
                wait = self._retry_wait(exc, attempt, service, method, budget.remaining())
                if wait is None:
                    raise translate(exc, service, address) from None
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
        for attempt in range(self.policy.max_attempts):
            try:
                return await fn(budget.remaining(), self.metadata)
            except grpc.RpcError as exc:
                wait = self._retry_wait(exc, attempt, service, method, budget.remaining())
                if wait is None:
                    raise translate(exc, service, address) from None
            await asyncio.sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")
