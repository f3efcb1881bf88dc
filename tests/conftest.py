"""Shared fixtures: paths to ../shared data, synthetic photos, and real servers on free ports.

Servers run on a background asyncio loop (one per server) and tests talk to them over real
channels; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import io
import os
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FACEOFF_SHARED_DIR", REPO.parent / "shared"))
CELEBS = SHARED / "data" / "faceoff-celebs"
PHOTOS = CELEBS / "photos"
ALIGNED = CELEBS / "aligned160"


def celeb_photos() -> list[Path]:
    """The 50 full photos of the shared set (sorted)."""
    return sorted(PHOTOS.glob("*/*.jpg"))


@pytest.fixture(scope="session")
def shared_photos() -> list[Path]:
    photos = celeb_photos()
    if not photos:
        pytest.fail(f"the shared photo set is missing at {PHOTOS}")
    return photos


def encode(pixels: np.ndarray, fmt: str = "PNG", **kwargs: Any) -> bytes:
    """Encode an array with Pillow, in memory."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt, **kwargs)
    return buf.getvalue()


class LoopThread:
    """An asyncio loop on a daemon thread, to run async servers under synchronous tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float | None = 300) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


def start_service(loop_thread: LoopThread, serve: Callable[[], Coroutine[Any, Any, Any]], wait: bool = True) -> Any:
    """Start a server with ``serve()`` on the loop thread; wait until its models are loaded."""
    running = loop_thread.run(serve())
    if wait:
        loop_thread.run(running.wait_ready(timeout=600))
    return running
