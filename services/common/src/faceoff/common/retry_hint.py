"""The retry hint that goes with RESOURCE_EXHAUSTED: when the client should try again.

Two trailing-metadata keys carry the same time: ``grpc-retry-pushback-ms`` (milliseconds, the key
gRPC's own retry policy honours) and ``retry-after`` (whole seconds, rounded up, as in HTTP), so
that a gRPC client, a proxy or a person reading a log can each find it. The status message says
it in words too. The masker also reads the hint from the detector's answers, to pass it on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

PUSHBACK_KEY = "grpc-retry-pushback-ms"
RETRY_AFTER_KEY = "retry-after"


#: The hint that asks a client not to retry at all (a negative pushback, gRFC A6).
NO_RETRY: tuple[tuple[str, str], ...] = ((PUSHBACK_KEY, "-1"),)


def retry_metadata(seconds: float) -> tuple[tuple[str, str], ...]:
    """Trailing metadata asking the client to retry after ``seconds``; negative: never retry."""
    if seconds < 0:
        return NO_RETRY
    seconds = float(seconds)
    return (
        (PUSHBACK_KEY, str(int(round(seconds * 1000)))),
        (RETRY_AFTER_KEY, str(max(1, math.ceil(seconds)))),
    )


def retry_after_from(metadata: Iterable[Any] | None) -> float | None:
    """The hint in trailing ``metadata`` in seconds (``grpc-retry-pushback-ms`` first), or None."""
    values = {}
    for item in metadata or ():
        key, value = item[0], item[1]
        values[key] = value.decode("latin-1") if isinstance(value, bytes) else str(value)
    for key, scale in ((PUSHBACK_KEY, 1000.0), (RETRY_AFTER_KEY, 1.0)):
        try:
            seconds = float(values[key]) / scale
        except (KeyError, ValueError):
            continue
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    return None
