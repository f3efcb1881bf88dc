"""Retries with exponential backoff and full jitter, bounded by a deadline.

Cloud APIs throttle (HTTP 429, Face++'s ``CONCURRENCY_LIMIT_EXCEEDED``, AWS's
``ThrottlingException``) and occasionally fail transiently (5xx, dropped connections). The
adapters turn those into :class:`~faceoff.evaluator.cloud.errors.CloudThrottled` and
:class:`~faceoff.evaluator.cloud.errors.CloudTransient`; :func:`call_with_retries` retries
them after ``uniform(0, min(max_delay, base_delay * 2**(attempt-1)))`` seconds ("full jitter",
so that many clients throttled at once do not come back in step), waiting at least the API's
``Retry-After`` when it gave one. It never sleeps past the deadline: when the next attempt could
not start in time the last error is raised. Every other error is raised at once (an auth
failure will not get better by asking again).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from faceoff.evaluator.cloud.errors import CloudThrottled, CloudTimeout, CloudTransient

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How a cloud adapter retries.

    Attributes:
        max_attempts: Attempts per API call, the first included (>= 1).
        base_delay: Backoff before the second attempt, at most, in seconds (> 0).
        max_delay: Cap on one backoff, in seconds (>= base_delay).
        request_timeout: Timeout of one HTTP request, in seconds (> 0); shortened to what is
            left before the deadline.
    """

    max_attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 8.0
    request_timeout: float = 10.0

    def __post_init__(self) -> None:
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ValueError(f"max_attempts must be an integer >= 1, got {self.max_attempts!r}")
        if self.base_delay <= 0:
            raise ValueError(f"base_delay must be > 0 seconds, got {self.base_delay}")
        if self.max_delay < self.base_delay:
            raise ValueError(
                f"max_delay ({self.max_delay}) must be >= base_delay ({self.base_delay})"
            )
        if self.request_timeout <= 0:
            raise ValueError(f"request_timeout must be > 0 seconds, got {self.request_timeout}")

    def backoff(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        """Full-jitter backoff after failed attempt number ``attempt`` (1-based)."""
        cap: float = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return rng() * cap


def call_with_retries(
    fn: Callable[[float], T],
    *,
    policy: RetryPolicy,
    deadline: float | None,
    backend: str,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rng: Callable[[], float] = random.random,
) -> T:
    """Call ``fn(timeout)`` until it succeeds, retrying throttling and transient failures.

    Args:
        fn: One attempt; gets the timeout in seconds for its HTTP request.
        policy: Attempts, backoff and request timeout.
        deadline: ``clock()`` value after which no attempt starts (None: no deadline).
        backend: Name used in error messages.

    Raises:
        CloudTimeout: the deadline passed before an attempt could start.
        CloudThrottled, CloudTransient: still failing after the last attempt, or the backoff
            would pass the deadline.
        Any other error of ``fn`` at once.
    """
    attempt = 0
    while True:
        attempt += 1
        timeout = policy.request_timeout
        if deadline is not None:
            left = deadline - clock()
            if left <= 0:
                raise CloudTimeout(f"{backend}: deadline passed after {attempt - 1} attempt(s)")
            timeout = min(timeout, left)
        try:
            return fn(timeout)
        except (CloudThrottled, CloudTransient) as exc:
            if attempt >= policy.max_attempts:
                raise type(exc)(f"{exc.message} (gave up after {attempt} attempts)") from None
            delay = policy.backoff(attempt, rng)
            retry_after = getattr(exc, "retry_after", None)
            if retry_after is not None:
                delay = max(delay, float(retry_after))
            if deadline is not None and clock() + delay >= deadline:
                raise type(exc)(
                    f"{exc.message} (no time left to retry before the deadline)"
                ) from None
            sleep(delay)
