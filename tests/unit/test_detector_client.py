"""The masker's detector client names the detector when it cannot be reached."""

from __future__ import annotations

import asyncio
import socket

import pytest

from faceoff.common.errors import BackendUnavailable
from faceoff.masker.detector_client import DetectorClient


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_detector_is_unavailable_naming_it() -> None:
    address = f"127.0.0.1:{_closed_port()}"

    async def call() -> None:
        client = DetectorClient(address)
        try:
            await client.detect(b"\xff\xd8", timeout=5)
        finally:
            await client.close()

    with pytest.raises(BackendUnavailable) as info:
        asyncio.run(call())
    assert address in info.value.message and info.value.status == "UNAVAILABLE"
