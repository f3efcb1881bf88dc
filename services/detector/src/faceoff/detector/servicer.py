"""The Detector RPCs: messages in, domain calls, messages out. Nothing else."""

from __future__ import annotations

import asyncio
import threading

import grpc

from faceoff.common import memory
from faceoff.common.errors import ModelNotReady
from faceoff.detector.convert import options_from_proto, result_to_proto
from faceoff.detector.detection import FaceDetector
from faceoff.v1 import detector_pb2, detector_pb2_grpc


class DetectorServicer(detector_pb2_grpc.DetectorServicer):
    """Serves ``faceoff.v1.Detector`` with a :class:`FaceDetector` built by ``factory``."""

    def __init__(self, factory: type[FaceDetector] | object) -> None:
        self._factory = factory
        self._detector: FaceDetector | None = None

    def load(self) -> None:
        """Build the detector (loads MTCNN); the server calls this in a thread at start-up."""
        self._detector = self._factory()  # type: ignore[operator]

    def _ready(self) -> FaceDetector:
        if self._detector is None:
            raise ModelNotReady("the detector is still loading its model; retry in a few seconds")
        return self._detector

    async def Detect(
        self,
        request: detector_pb2.DetectRequest,
        context: grpc.aio.ServicerContext[detector_pb2.DetectRequest, detector_pb2.DetectResponse],
    ) -> detector_pb2.DetectResponse:
        detector = self._ready()
        options = options_from_proto(request.options)
        abandoned = threading.Event()

        def should_stop() -> None:  # in the detection thread, before each MTCNN pass
            if abandoned.is_set():
                raise Abandoned

        try:
            result = await asyncio.to_thread(
                detector.detect, request.image.data, options, should_stop
            )
        except asyncio.CancelledError:
            # the caller went away (cancelled, or its deadline passed): a detection still
            # waiting for the detector is skipped instead of run for nobody
            abandoned.set()
            raise
        finally:
            await asyncio.to_thread(memory.trim)  # the decoded photo is garbage now
        return result_to_proto(result)


class Abandoned(Exception):
    """Raised in a detection thread whose caller has gone away."""
