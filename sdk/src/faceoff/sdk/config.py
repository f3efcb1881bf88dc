"""How a client connects: TLS material and the retry policy."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RETRYABLE_CODES", "UNSTARTED_REASONS", "RetryPolicy", "TLSConfig"]

#: Status codes a call is retried on: the service is briefly away, its queue is full, or the
#: attempt ran out of time. Every other code is final.
RETRYABLE_CODES: frozenset[str] = frozenset(
    {"UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"}
)

#: Reasons (ErrorInfo, domain faceoff.v1) a server gives when it refused a call before doing any
#: of its work: retrying cannot repeat work (see RetryPolicy.unstarted_protect_only).
UNSTARTED_REASONS: frozenset[str] = frozenset(
    {"OVERLOADED", "RATE_LIMITED", "TOO_MANY_CALLS", "MODELS_LOADING", "BACKEND_UNAVAILABLE"}
)

PemSource = bytes | str | os.PathLike[str] | None


def _pem(value: PemSource, what: str) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    try:
        return Path(value).read_bytes()
    except OSError as exc:
        raise ValueError(f"TLSConfig.{what}: cannot read {value}: {exc.strerror}") from None


@dataclass(frozen=True)
class TLSConfig:
    """TLS for the channel: a CA to trust and, for mutual TLS, the client's certificate and key.

    Each value is either the PEM bytes or the path of a PEM file. Without ``ca`` the system's
    trusted roots are used (what ``tls=True`` means).

    Example::

        Client("faceoff.example.com:443", tls=TLSConfig(ca="ca.pem", cert="client.pem", key="client.key"))
    """

    ca: PemSource = None
    cert: PemSource = None
    key: PemSource = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ValueError("TLSConfig: give both cert and key for mutual TLS, or neither")

    def credentials(self) -> object:
        """The ``grpc.ChannelCredentials`` for these files."""
        import grpc

        return grpc.ssl_channel_credentials(
            root_certificates=_pem(self.ca, "ca"),
            private_key=_pem(self.key, "key"),
            certificate_chain=_pem(self.cert, "cert"),
        )


@dataclass(frozen=True)
class RetryPolicy:
    """Retries with exponential backoff and full jitter, for :data:`RETRYABLE_CODES` only.

    Attempt ``n`` (from 0) that fails with a retryable code is followed, after a pause drawn
    uniformly from ``[0, min(max_backoff, initial_backoff * multiplier ** n)]``, by the next one,
    up to ``max_attempts`` attempts in all. Each attempt has the client's whole ``timeout``. When
    the server sends a retry hint with its refusal (trailing metadata ``grpc-retry-pushback-ms``,
    else ``retry-after`` in seconds), the pause is what the hint says instead; a negative
    ``grpc-retry-pushback-ms`` ends the retries.

    A protection that failed after the server started its attack would run the whole attack
    again when retried; ``unstarted_protect_only=True`` retries ``protect`` only when the failure
    says no work was done: a refusal whose reason (:mod:`faceoff.sdk.errors`) is one of
    :data:`UNSTARTED_REASONS` (queue full, rate limit, too many calls, models loading, detector
    unreachable), or a connection that could not be made. Other calls are unaffected.

    Example::

        Client("localhost:50052", retries=RetryPolicy(max_attempts=6, initial_backoff=0.2))
    """

    max_attempts: int = 4
    initial_backoff: float = 0.5
    max_backoff: float = 10.0
    multiplier: float = 2.0
    unstarted_protect_only: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ValueError(
                f"RetryPolicy.max_attempts must be an integer >= 1, got {self.max_attempts!r}"
            )
        if self.initial_backoff < 0 or self.max_backoff < 0:
            raise ValueError("RetryPolicy backoffs must be >= 0 seconds")
        if self.multiplier < 1:
            raise ValueError(f"RetryPolicy.multiplier must be >= 1, got {self.multiplier}")

    @classmethod
    def of(cls, retries: int | RetryPolicy) -> RetryPolicy:
        """``retries`` as a policy: an integer is the number of retries after the first attempt."""
        if isinstance(retries, RetryPolicy):
            return retries
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an integer >= 0 or a RetryPolicy, got {retries!r}")
        return cls(max_attempts=retries + 1)

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (0-based), with full jitter."""
        return random.uniform(
            0.0, min(self.max_backoff, self.initial_backoff * self.multiplier**attempt)
        )
