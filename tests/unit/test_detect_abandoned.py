"""A detection whose caller went away is skipped, not run for nobody.

In a burst of 64 large photos, 48 callers gave up at the masker's detection deadline while the
detector went on detecting their photos one after another.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest

from faceoff.detector.detection import DetectionResult, DetectOptions, FaceDetector
from faceoff.detector.servicer import Abandoned, DetectorServicer
from faceoff.v1 import common_pb2, detector_pb2


class SlowMTCNN:
    """Holds the first call until released; counts the calls that ran."""

    def __init__(self) -> None:
        self.calls = 0
        self.running = threading.Event()
        self.release = threading.Event()

    def detect_faces(self, pixels: Any, **kwargs: Any) -> np.ndarray:
        self.calls += 1
        self.running.set()
        self.release.wait(10)
        return np.zeros((0, 16))


def _detector() -> tuple[FaceDetector, SlowMTCNN]:
    detector = object.__new__(FaceDetector)  # no model: MTCNN is the stand-in
    mtcnn = SlowMTCNN()
    detector._mtcnn = mtcnn
    detector._lock = threading.Lock()
    return detector, mtcnn


def test_a_detection_waiting_for_the_detector_stops_when_told() -> None:
    detector, mtcnn = _detector()
    pixels = np.zeros((64, 64, 3), np.uint8)
    first = threading.Thread(target=detector.detect_pixels, args=(pixels, DetectOptions()))
    first.start()
    assert mtcnn.running.wait(5)
    gone = threading.Event()
    outcome: list[str] = []

    def waiting() -> None:
        def should_stop() -> None:
            if gone.is_set():
                raise Abandoned

        try:
            detector.detect_pixels(pixels, DetectOptions(), should_stop=should_stop)
            outcome.append("ran")
        except Abandoned:
            outcome.append("skipped")

    second = threading.Thread(target=waiting)
    second.start()
    gone.set()  # its caller leaves while the first detection holds the detector
    mtcnn.release.set()
    first.join(5)
    second.join(5)
    assert outcome == ["skipped"] and mtcnn.calls == 1


class Context:
    def time_remaining(self) -> None:
        return None


def test_the_servicer_tells_the_detection_its_caller_went_away() -> None:
    told: list[bool] = []
    started = threading.Event()
    release = threading.Event()

    class Detector:
        def detect(self, data: bytes, options: DetectOptions, should_stop: Any) -> DetectionResult:
            started.set()
            release.wait(10)
            try:
                should_stop()
                told.append(False)
            except Abandoned:
                told.append(True)
            return DetectionResult(width=1, height=1, faces=[])

    servicer = DetectorServicer(Detector)
    servicer.load()
    request = detector_pb2.DetectRequest(image=common_pb2.Image(data=b"x"))

    async def scenario() -> None:
        call = asyncio.ensure_future(servicer.Detect(request, Context()))  # type: ignore[arg-type]
        while not started.is_set():
            await asyncio.sleep(0.01)
        call.cancel()  # what grpc.aio does when the client cancels or its deadline passes
        with pytest.raises(asyncio.CancelledError):
            await call
        release.set()
        for _ in range(200):
            if told:
                break
            await asyncio.sleep(0.01)

    asyncio.run(scenario())
    assert told == [True]
