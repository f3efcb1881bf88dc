"""The detector service over a real channel: health, reflection, detection, bad input, metrics."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from PIL import Image
from prometheus_client import CollectorRegistry

from faceoff.common.settings import ServerSettings
from faceoff.detector import server as detector_server
from faceoff.v1 import common_pb2, detector_pb2, detector_pb2_grpc
from tests.conftest import LoopThread, encode, metric_value, scrape_metrics
from tests.unit.test_imaging import PIXELS, _png_with_size

EXPECTED = json.loads(
    (Path(__file__).resolve().parent.parent / "data" / "photo_faces.json").read_text()
)["boxes"]


@pytest.fixture(scope="module")
def detector(loop_thread: LoopThread) -> Iterator[Any]:
    settings = ServerSettings(host="127.0.0.1", port=0, metrics_port=0, grace_seconds=1)
    running = loop_thread.run(
        detector_server.serve(
            settings, detector_server.DetectorSettings(), registry=CollectorRegistry()
        )
    )
    yield running
    loop_thread.run(running.stop(0))


@pytest.fixture(scope="module")
def channel(detector: Any) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(detector.address) as ch:
        yield ch


def _health(channel: grpc.Channel, service: str = "faceoff.v1.Detector") -> int:
    return (
        health_pb2_grpc.HealthStub(channel)
        .Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        .status
    )


def _detect(channel: grpc.Channel, data: bytes, **options: Any) -> detector_pb2.DetectResponse:
    request = detector_pb2.DetectRequest(
        image=common_pb2.Image(data=data), options=detector_pb2.DetectOptions(**options)
    )
    return detector_pb2_grpc.DetectorStub(channel).Detect(request, timeout=60)


def _iou(a: list[float], b: list[float]) -> float:
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    ih = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def test_health_turns_serving_after_the_model_loads(
    detector: Any, channel: grpc.Channel, loop_thread: LoopThread
) -> None:
    # The fixture returned before loading finished: the first answer may be NOT_SERVING, never SERVING
    # before the model is there; after wait_ready it must be SERVING.
    first = _health(channel)
    assert first in (
        health_pb2.HealthCheckResponse.NOT_SERVING,
        health_pb2.HealthCheckResponse.SERVING,
    )
    if first == health_pb2.HealthCheckResponse.NOT_SERVING:
        with pytest.raises(grpc.RpcError) as info:
            _detect(channel, encode(PIXELS))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    loop_thread.run(detector.wait_ready(timeout=300))
    assert _health(channel) == health_pb2.HealthCheckResponse.SERVING
    assert _health(channel, "") == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_detector(detector: Any, channel: grpc.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert "faceoff.v1.Detector" in names and "grpc.health.v1.Health" in names


@pytest.fixture(scope="module")
def ready(detector: Any, loop_thread: LoopThread) -> None:
    loop_thread.run(detector.wait_ready(timeout=300))


def test_finds_the_person_in_every_shared_photo(
    ready: None, channel: grpc.Channel, shared_photos: list[Path]
) -> None:
    assert len(shared_photos) == 50
    misses = []
    for photo in shared_photos:
        response = _detect(channel, photo.read_bytes())
        with Image.open(photo) as img:
            assert (response.width, response.height) == img.size
        areas = [f.box.width * f.box.height for f in response.faces]
        assert areas == sorted(areas, reverse=True), "faces are not largest first"
        if not response.faces:
            misses.append((photo.name, "no face"))
            continue
        b = response.faces[0].box
        iou = _iou([b.x, b.y, b.width, b.height], EXPECTED[photo.name])
        if iou < 0.5:
            misses.append((photo.name, f"IoU {iou:.2f}"))
        lm = response.faces[0].landmarks
        assert b.x <= lm.nose.x <= b.x + b.width and b.y <= lm.nose.y <= b.y + b.height
        assert lm.left_eye.x < lm.right_eye.x and lm.left_eye.y < lm.mouth_left.y
    assert not misses, f"the person's face was not found in: {misses}"


def test_exif_rotated_copy_gives_display_coordinates(
    ready: None, channel: grpc.Channel, shared_photos: list[Path]
) -> None:
    photo = shared_photos[0]
    upright = np.asarray(Image.open(photo).convert("RGB"))
    exif = Image.Exif()
    exif[0x0112] = 8  # stored rotated 90 degrees clockwise; display rotates it back
    rotated = encode(
        np.ascontiguousarray(np.rot90(upright, k=-1)), "JPEG", quality=95, exif=exif.tobytes()
    )
    plain = _detect(channel, encode(upright, "JPEG", quality=95))
    turned = _detect(channel, rotated)
    assert (
        (turned.width, turned.height)
        == (plain.width, plain.height)
        == (upright.shape[1], upright.shape[0])
    )
    a, b = plain.faces[0].box, turned.faces[0].box
    assert _iou([a.x, a.y, a.width, a.height], [b.x, b.y, b.width, b.height]) > 0.8


def test_options_filter_faces(
    ready: None, channel: grpc.Channel, shared_photos: list[Path]
) -> None:
    data = shared_photos[0].read_bytes()
    assert len(_detect(channel, data, min_face_size=5000).faces) == 0
    assert len(_detect(channel, data, max_faces=1).faces) == 1
    with pytest.raises(grpc.RpcError) as info:
        _detect(channel, data, min_confidence=1.5)
    assert (
        info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        and "min_confidence" in info.value.details()
    )


def test_no_faces_is_an_empty_list(ready: None, channel: grpc.Channel) -> None:
    response = _detect(channel, encode(np.full((300, 400, 3), 200, np.uint8)))
    assert (response.width, response.height) == (400, 300) and len(response.faces) == 0
    assert len(_detect(channel, encode(np.zeros((1, 1, 3), np.uint8))).faces) == 0


BAD_INPUTS = {
    "empty": (b"", "empty"),
    "text": (b"just some text, not a photo", "not an image"),
    "truncated": (encode(PIXELS, "JPEG")[:300], "truncated"),
    "zero-size": (_png_with_size(0, 5), "zero size"),
    "over-limit": (_png_with_size(10000, 6000), "limit is 50 megapixels"),
    "unsupported": (encode(PIXELS, "ICO"), "not supported"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_invalid_argument_and_server_stays_healthy(
    ready: None, channel: grpc.Channel, case: str
) -> None:
    data, needle = BAD_INPUTS[case]
    with pytest.raises(grpc.RpcError) as info:
        _detect(channel, data)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in info.value.details()
    assert "Traceback" not in info.value.details()
    assert _health(channel) == health_pb2.HealthCheckResponse.SERVING


def test_metrics_move(ready: None, detector: Any, channel: grpc.Channel) -> None:
    ok = "faceoff_detector_requests_total"
    before = scrape_metrics(detector.metrics_port)
    _detect(channel, encode(PIXELS))
    with pytest.raises(grpc.RpcError):
        _detect(channel, b"")
    # The client sees the status a moment before the interceptor records it: poll briefly.
    deadline = time.monotonic() + 10
    while True:
        after = scrape_metrics(detector.metrics_port)
        moved = (
            metric_value(after, ok, method="Detect", code="OK")
            == metric_value(before, ok, method="Detect", code="OK") + 1
            and metric_value(after, ok, method="Detect", code="INVALID_ARGUMENT")
            == metric_value(before, ok, method="Detect", code="INVALID_ARGUMENT") + 1
        )
        if moved or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert moved, "the request counters did not move by one OK and one INVALID_ARGUMENT"
    assert metric_value(after, "faceoff_detector_request_seconds_count", method="Detect") >= 2
    assert "faceoff_detector_requests_in_progress" in after


def test_large_message_limit(ready: None, channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as info:
        _detect(channel, b"\xff" * (21 * 1024 * 1024))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _health(channel) == health_pb2.HealthCheckResponse.SERVING
