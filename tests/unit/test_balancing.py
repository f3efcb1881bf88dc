"""Balanced traffic: the masker's detector channel spreads calls over every address it resolves.

Two real detector servers on loopback, one DetectorClient for both (the form a headless
Service's DNS name takes): each detector must get calls. And the servers' keepalive and
connection-age settings reach gRPC as channel arguments.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from faceoff.common.errors import FaceOffError
from faceoff.common.server import server_options
from faceoff.common.settings import ServerSettings, SettingsError
from faceoff.detector import server as detector_server
from faceoff.masker.detector_client import DetectorClient
from tests.conftest import LoopThread, encode, metric_value, scrape_metrics
from tests.unit.test_imaging import PIXELS


@pytest.fixture(scope="module")
def detectors(loop_thread: LoopThread) -> Iterator[list[Any]]:
    running = []
    for _ in range(2):
        settings = ServerSettings(host="127.0.0.1", port=0, metrics_port=0, grace_seconds=1)
        running.append(
            loop_thread.run(
                detector_server.serve(
                    settings, detector_server.DetectorSettings(), registry=CollectorRegistry()
                )
            )
        )
    for r in running:
        loop_thread.run(r.wait_ready(timeout=300))
    yield running
    for r in running:
        loop_thread.run(r.stop(0))


def _detects(port: int) -> float:
    text = scrape_metrics(port)
    return sum(
        metric_value(text, "faceoff_detector_requests_total", method="Detect", code=code)
        for code in ("OK", "INVALID_ARGUMENT")
    )


def test_round_robin_sends_calls_to_every_detector(
    detectors: list[Any], loop_thread: LoopThread
) -> None:
    target = "ipv4:" + ",".join(d.address for d in detectors)
    before = [_detects(d.metrics_port) for d in detectors]

    async def calls() -> None:
        client = DetectorClient(target)
        try:
            for i in range(12):
                try:
                    await client.detect(encode(PIXELS) if i % 2 else b"not a photo", timeout=30)
                except FaceOffError as exc:
                    assert exc.reason == "INVALID_IMAGE", exc
        finally:
            await client.close()

    loop_thread.run(calls())
    got = [_detects(d.metrics_port) - b for d, b in zip(detectors, before)]
    assert sum(got) == 12 and min(got) >= 3, f"calls per detector: {got}"


def test_keepalive_and_connection_age_reach_grpc() -> None:
    options = dict(server_options(ServerSettings()))
    assert options["grpc.keepalive_time_ms"] == 60_000
    assert options["grpc.max_connection_age_ms"] == 300_000
    assert options["grpc.max_connection_age_grace_ms"] == 600_000
    off = dict(server_options(ServerSettings(keepalive_seconds=0, max_connection_age_seconds=0)))
    assert "grpc.keepalive_time_ms" not in off and "grpc.max_connection_age_ms" not in off
    with pytest.raises(SettingsError, match="FACEOFF_MAX_CONNECTION_AGE_SECONDS"):
        ServerSettings(max_connection_age_seconds=-1)
