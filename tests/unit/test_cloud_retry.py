"""Retries with backoff and jitter, deadlines, and what the cloud adapters upload (no network)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from faceoff.evaluator.cloud.base import UploadLimits, upload_bytes
from faceoff.evaluator.cloud.errors import (
    CloudAuthError,
    CloudThrottled,
    CloudTimeout,
    CloudTransient,
)
from faceoff.evaluator.cloud.retry import RetryPolicy, call_with_retries
from faceoff.faces.recognizers.base import FacePhoto
from tests.conftest import encode


class Clock:
    """A fake monotonic clock that sleeping advances."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def failing(*errors: Exception, result: str = "ok") -> tuple[object, list[float]]:
    """A request that raises ``errors`` in turn, then returns ``result``; records its timeouts."""
    timeouts: list[float] = []
    queue = list(errors)

    def request(timeout: float) -> str:
        timeouts.append(timeout)
        if queue:
            raise queue.pop(0)
        return result

    return request, timeouts


def run(
    request: object,
    clock: Clock,
    policy: RetryPolicy,
    deadline: float | None = None,
    rng: float = 1.0,
) -> object:
    return call_with_retries(
        request,
        policy=policy,
        deadline=deadline,
        backend="api",  # type: ignore[arg-type]
        sleep=clock.sleep,
        clock=clock.time,
        rng=lambda: rng,
    )


def test_backoff_doubles_up_to_the_cap_with_full_jitter() -> None:
    policy = RetryPolicy(max_attempts=6, base_delay=0.5, max_delay=3.0)
    clock = Clock()
    request, _ = failing(*[CloudThrottled("api: throttled")] * 5)
    assert run(request, clock, policy) == "ok"
    assert clock.sleeps == [0.5, 1.0, 2.0, 3.0, 3.0]  # rng = 1: the top of each jitter range
    clock = Clock()
    request, _ = failing(*[CloudTransient("api: 503")] * 2)
    run(request, clock, policy, rng=0.25)
    assert clock.sleeps == [0.125, 0.25]


def test_retry_after_is_a_floor() -> None:
    clock = Clock()
    request, _ = failing(CloudThrottled("api: 429", retry_after=4.0))
    assert run(request, clock, RetryPolicy(base_delay=0.1)) == "ok"
    assert clock.sleeps == [4.0]


def test_gives_up_after_max_attempts() -> None:
    clock = Clock()
    request, timeouts = failing(*[CloudThrottled("api: throttled")] * 5)
    with pytest.raises(CloudThrottled) as info:
        run(request, clock, RetryPolicy(max_attempts=3))
    assert len(timeouts) == 3 and "gave up after 3 attempts" in info.value.message


def test_other_errors_are_not_retried() -> None:
    clock = Clock()
    request, timeouts = failing(CloudAuthError("api: 401"))
    with pytest.raises(CloudAuthError):
        run(request, clock, RetryPolicy())
    assert len(timeouts) == 1 and clock.sleeps == []


def test_the_deadline_bounds_timeouts_and_backoff() -> None:
    clock = Clock()
    policy = RetryPolicy(max_attempts=10, base_delay=1.0, max_delay=1.0, request_timeout=10.0)
    request, timeouts = failing(*[CloudTransient("api: 503")] * 10)
    with pytest.raises(CloudTransient) as info:
        run(request, clock, policy, deadline=clock.now + 2.5)
    assert timeouts[0] == 2.5 and all(
        t <= 2.5 for t in timeouts
    )  # request timeouts shrink to the deadline
    assert "deadline" in info.value.message and clock.now < 100.0 + 2.5
    with pytest.raises(CloudTimeout):
        run(failing()[0], clock, policy, deadline=clock.now - 1)


def test_a_retry_after_past_the_deadline_gives_up_at_once() -> None:
    clock = Clock()
    request, timeouts = failing(CloudThrottled("api: 429", retry_after=30.0))
    with pytest.raises(CloudThrottled):
        run(request, clock, RetryPolicy(), deadline=clock.now + 5)
    assert len(timeouts) == 1 and clock.sleeps == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"base_delay": 0},
        {"max_delay": 0.1, "base_delay": 1},
        {"request_timeout": 0},
    ],
)
def test_policy_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


# -- uploads ---------------------------------------------------------------------------------------

RNG = np.random.default_rng(0)
NOISE = RNG.integers(0, 256, (300, 400, 3), dtype=np.uint8)


def _fmt(data: bytes) -> tuple[str, tuple[int, int]]:
    with Image.open(io.BytesIO(data)) as img:
        return str(img.format), img.size


def test_accepted_files_are_sent_as_they_are() -> None:
    data = encode(NOISE, "JPEG", quality=90)
    assert upload_bytes(FacePhoto.from_bytes(data), UploadLimits()) == data


def test_other_formats_become_lossless_png() -> None:
    data = encode(NOISE, "WEBP", lossless=True)
    out = upload_bytes(FacePhoto.from_bytes(data), UploadLimits(formats=("JPEG", "PNG")))
    assert _fmt(out) == ("PNG", (400, 300))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(out)).convert("RGB")), NOISE)


def test_exif_rotated_files_are_sent_upright() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(NOISE, "JPEG", quality=95, exif=exif.tobytes())
    out = upload_bytes(FacePhoto.from_bytes(data), UploadLimits())
    assert _fmt(out) == ("PNG", (300, 400))  # displayed size: rotated


def test_too_large_files_shrink_under_the_limit() -> None:
    data = encode(NOISE, "PNG")  # noise compresses badly: ~360 kB
    out = upload_bytes(FacePhoto.from_bytes(data), UploadLimits(max_bytes=60_000))
    assert len(out) <= 60_000 and _fmt(out)[0] == "JPEG"
    out = upload_bytes(FacePhoto.from_bytes(data), UploadLimits(max_side=200))
    assert max(_fmt(out)[1]) <= 200
