"""The three real servers for the hostile-input and privacy tests, started once for both.

A pytest plugin (``pytest_plugins = ["tests.reliability.pipeline"]`` in the test modules that
use it), so that its package-scoped ``pipeline`` fixture is one instance for every module of
the package. The detector, masker and evaluator run in this process (on the shared background
loop, free ports, no metrics port), with their default settings, so that the tests can measure
the process's peak memory around each request and look inside the servicers afterwards (what
they still hold of a user's photo). The evaluator runs SFace and dlib, the cheapest local
recognisers to load.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from faceoff.detector import server as detector_server
from faceoff.evaluator import server as evaluator_server
from faceoff.masker import server as masker_server
from tests.conftest import PHOTOS, LoopThread

#: Local recognisers of the evaluator under test.
RECOGNIZERS = "sface,dlib"
_SERVER = {"host": "127.0.0.1", "port": 0, "metrics_port": -1, "grace_seconds": 1}
_NAMES = {
    "detector": "faceoff.v1.Detector",
    "masker": "faceoff.v1.Masker",
    "evaluator": "faceoff.v1.Evaluator",
}


@dataclass
class Pipeline:
    """The three running servers (``faceoff.common.server.RunningServer``) and a channel to each."""

    detector: Any
    masker: Any
    evaluator: Any
    channels: dict[str, grpc.Channel]

    def health(self, service: str) -> int:
        """The health status of ``detector``, ``masker`` or ``evaluator``."""
        stub = health_pb2_grpc.HealthStub(self.channels[service])
        return stub.Check(health_pb2.HealthCheckRequest(service=_NAMES[service]), timeout=10).status


def _until_warm(channel: grpc.Channel) -> None:
    """Return once the masker has traced every profile it warms up: it traces the default one
    before SERVING and the others (``low``) right after, and a protection of ``low`` waits for
    that trace (or makes it). The tests then see a fully warm masker, as before."""
    from faceoff.v1 import common_pb2, masker_pb2, masker_pb2_grpc

    request = masker_pb2.ProtectRequest(
        image=common_pb2.Image(data=(PHOTOS / "bill" / "bill_03.jpg").read_bytes()),
        options=masker_pb2.ProtectOptions(profile="low", iterations=1, seed=0),
    )
    masker_pb2_grpc.MaskerStub(channel).Protect(request, timeout=600)


@pytest.fixture(scope="package")
def pipeline(loop_thread: LoopThread) -> Iterator[Pipeline]:
    # env={}: the servers' defaults, whatever FACEOFF_* variables the machine has.
    detector_settings = detector_server.load_settings(env={}, **_SERVER)
    detector = loop_thread.run(
        detector_server.serve(*detector_settings, registry=CollectorRegistry())
    )
    masker_settings = masker_server.load_settings(
        env={}, detector_address=detector.address, **_SERVER
    )
    masker = loop_thread.run(masker_server.serve(*masker_settings, registry=CollectorRegistry()))
    evaluator_settings = evaluator_server.load_settings(
        env={}, local_recognizers=RECOGNIZERS, **_SERVER
    )
    evaluator = loop_thread.run(
        evaluator_server.serve(*evaluator_settings, registry=CollectorRegistry())
    )
    options = [
        ("grpc.max_receive_message_length", 64 << 20),
        ("grpc.max_send_message_length", 64 << 20),
    ]
    channels = {
        name: grpc.insecure_channel(s.address, options=options)
        for name, s in (("detector", detector), ("masker", masker), ("evaluator", evaluator))
    }
    try:
        for running in (detector, masker, evaluator):
            loop_thread.run(running.wait_ready(timeout=600))
        _until_warm(channels["masker"])
        yield Pipeline(detector, masker, evaluator, channels)
    finally:
        for channel in channels.values():
            channel.close()
        for running in (masker, evaluator, detector):
            loop_thread.run(running.stop(0))
