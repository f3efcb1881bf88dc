"""A small masker and a recording detector for the overload and fault tests, started once for both.

Real services in this process, on ports the tests choose; the ``small_masker`` fixture starts
them only for the tests that ask for it (the package's other modules have their own servers).

The detector is the real one (MTCNN, the shared server scaffolding) with one addition: it
records the deadline each Detect call arrived with, so a test can see that the masker passes
its caller's deadline on. It listens on a port the test picks, so that a test can stop it and
start a new one on the same port while the masker keeps its channel.

One masker serves both modules (``small_masker``): loading the surrogate and tracing the attack
for the first request take most of a minute on two busy cores, too much to pay per module. It is
small on purpose: 12 RPCs at once, attack batches of one face, two faces waiting.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry

from faceoff.common.server import RunningServer, ServiceSpec, start_server
from faceoff.common.settings import ServerSettings
from faceoff.detector.detection import FaceDetector
from faceoff.detector.servicer import DetectorServicer
from faceoff.masker import server as masker_server
from faceoff.v1 import detector_pb2, detector_pb2_grpc, masker_pb2
from tests.conftest import CELEBS, LoopThread, free_port

#: A small shared photo with one face: cheap to detect and protect.
SMALL_PHOTO = CELEBS / "photos" / "bill" / "bill_03.jpg"


class RecordingDetector(DetectorServicer):
    """The real Detector servicer, also recording ``context.time_remaining()`` of every call."""

    def __init__(self) -> None:
        super().__init__(FaceDetector)
        self.remaining: list[float | None] = []

    async def Detect(
        self, request: detector_pb2.DetectRequest, context: grpc.aio.ServicerContext
    ) -> detector_pb2.DetectResponse:
        self.remaining.append(context.time_remaining())
        return await super().Detect(request, context)


def start_detector(loop_thread: LoopThread, port: int) -> tuple[RunningServer, RecordingDetector]:
    """A recording detector on 127.0.0.1:``port``, loaded."""
    servicer = RecordingDetector()
    spec = ServiceSpec(
        name="faceoff.v1.Detector",
        namespace="faceoff_detector",
        register=lambda server: detector_pb2_grpc.add_DetectorServicer_to_server(servicer, server),
        load=servicer.load,
    )
    settings = ServerSettings(host="127.0.0.1", port=port, metrics_port=-1, grace_seconds=1)
    running = loop_thread.run(start_server(settings, spec, registry=CollectorRegistry()))
    loop_thread.run(running.wait_ready(timeout=300))
    return running, servicer


def start_masker(
    loop_thread: LoopThread,
    detector_address: str,
    registry: CollectorRegistry,
    *,
    max_concurrent_rpcs: int = 64,
    grace_seconds: float = 1,
    **settings: Any,
) -> RunningServer:
    """A masker in this process wired to ``detector_address``, loaded."""
    server_settings = ServerSettings(
        host="127.0.0.1",
        port=0,
        metrics_port=-1,
        grace_seconds=grace_seconds,
        max_concurrent_rpcs=max_concurrent_rpcs,
    )
    masker_settings = masker_server.MaskerSettings(detector_address=detector_address, **settings)
    running = loop_thread.run(
        masker_server.serve(server_settings, masker_settings, registry=registry)
    )
    loop_thread.run(running.wait_ready(timeout=600))
    return running


def protect_request(
    data: bytes, references: tuple[bytes, ...] = (), **options: Any
) -> masker_pb2.ProtectRequest:
    """A ProtectRequest with explicit options."""
    from faceoff.v1 import common_pb2

    return masker_pb2.ProtectRequest(
        image=common_pb2.Image(data=data),
        options=masker_pb2.ProtectOptions(**options),
        reference_images=[common_pb2.Image(data=r) for r in references],
    )


#: The package masker's limits.
MAX_CONCURRENT_RPCS = 12
MAX_QUEUE_FACES = 2
MAX_BATCH_FACES = 1
#: The options of the cheap protections the tests send.
CHEAP = {"profile": "low", "iterations": 1, "seed": 0}


@dataclass
class Services:
    """The package's detector (replaceable: a test may stop it and start another) and masker."""

    loop_thread: LoopThread
    detector_port: int
    detector: RunningServer
    recorder: RecordingDetector
    masker: RunningServer
    registry: CollectorRegistry

    @property
    def detector_address(self) -> str:
        return f"127.0.0.1:{self.detector_port}"

    def restart_detector(self) -> None:
        """Start a new detector on the same port (after the old one was stopped)."""
        self.detector, self.recorder = start_detector(self.loop_thread, self.detector_port)


@pytest.fixture(scope="package")
def small_masker(loop_thread: LoopThread) -> Iterator[Services]:
    port = free_port()
    detector, recorder = start_detector(loop_thread, port)
    registry = CollectorRegistry()
    masker = start_masker(
        loop_thread,
        f"127.0.0.1:{port}",
        registry,
        max_concurrent_rpcs=MAX_CONCURRENT_RPCS,
        max_queue_faces=MAX_QUEUE_FACES,
        max_batch_faces=MAX_BATCH_FACES,
    )
    with grpc.insecure_channel(
        masker.address
    ) as channel:  # the first request traces the attack: pay it here
        from faceoff.v1 import masker_pb2_grpc

        masker_pb2_grpc.MaskerStub(channel).Protect(
            protect_request(SMALL_PHOTO.read_bytes(), **CHEAP), timeout=600
        )
    services = Services(loop_thread, port, detector, recorder, masker, registry)
    yield services
    loop_thread.run(masker.stop(0))
    loop_thread.run(services.detector.stop(0))
