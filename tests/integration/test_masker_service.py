"""The masker end to end: real detector and masker servers on free ports, real channels."""

from __future__ import annotations

import io
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image
from prometheus_client import CollectorRegistry

from faceoff.common.crops import crop_region
from faceoff.common.imaging import decode
from faceoff.common.settings import ServerSettings
from faceoff.detector import server as detector_server
from faceoff.masker import server as masker_server
from faceoff.v1 import common_pb2, masker_pb2, masker_pb2_grpc
from tests.conftest import LoopThread, encode

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def services(loop_thread: LoopThread) -> Iterator[dict[str, Any]]:
    def settings() -> ServerSettings:
        return ServerSettings(host="127.0.0.1", port=0, metrics_port=0, grace_seconds=1)

    detector = loop_thread.run(
        detector_server.serve(
            settings(), detector_server.DetectorSettings(), registry=CollectorRegistry()
        )
    )
    masker = loop_thread.run(
        masker_server.serve(
            settings(),
            masker_server.MaskerSettings(detector_address=detector.address),
            registry=CollectorRegistry(),
        )
    )
    loop_thread.run(detector.wait_ready(timeout=600))
    loop_thread.run(masker.wait_ready(timeout=600))
    yield {"detector": detector, "masker": masker}
    loop_thread.run(masker.stop(0))
    loop_thread.run(detector.stop(0))


@pytest.fixture(scope="module")
def stub(services: dict[str, Any]) -> Iterator[masker_pb2_grpc.MaskerStub]:
    with grpc.insecure_channel(
        services["masker"].address, options=[("grpc.max_receive_message_length", 64 << 20)]
    ) as ch:
        yield masker_pb2_grpc.MaskerStub(ch)


def _request(data: bytes, refs: list[bytes] = (), **options: Any) -> masker_pb2.ProtectRequest:  # type: ignore[assignment]
    return masker_pb2.ProtectRequest(
        image=common_pb2.Image(data=data),
        options=masker_pb2.ProtectOptions(**options),
        reference_images=[common_pb2.Image(data=r) for r in refs],
    )


def _png(photo: Path) -> bytes:
    return encode(np.asarray(Image.open(photo).convert("RGB")), "PNG")


def test_protect_keeps_size_format_and_untouched_pixels(
    stub: masker_pb2_grpc.MaskerStub, shared_photos: list[Path]
) -> None:
    data = _png(shared_photos[5])
    response = stub.Protect(_request(data, seed=3), timeout=300)
    assert response.image.format == common_pb2.IMAGE_FORMAT_PNG and response.profile == "medium"
    assert response.faces_found == len(response.faces) == 1
    before, after = decode(data).pixels, decode(response.image.data).pixels
    assert before.shape == after.shape
    face = response.faces[0]
    region = crop_region(
        (face.box.x, face.box.y, face.box.width, face.box.height), before.shape[1], before.shape[0]
    )
    outside = np.ones(before.shape[:2], bool)
    outside[region.slices] = False
    assert np.array_equal(before[outside], after[outside]), "pixels outside the face crop changed"
    assert not np.array_equal(before[region.slices], after[region.slices])
    assert 30 < face.psnr < 60 and 0.8 < face.ssim <= 1.0
    # Butteraugli through gRPC (./dev setup installs the tool): visible change, as displayed and native
    assert face.HasField("butteraugli") and face.butteraugli > 0 and face.butteraugli_native > 0
    assert face.distance_after > face.distance_before + 0.3
    assert face.l2 > 0 and 0 < face.linf <= 1


def test_jpeg_stays_jpeg_with_its_exif(
    stub: masker_pb2_grpc.MaskerStub, shared_photos: list[Path]
) -> None:
    pixels = np.asarray(Image.open(shared_photos[12]).convert("RGB"))
    exif = Image.Exif()
    exif[0x010F] = "FaceOffTestCam"
    exif[0x8825] = {1: "N", 2: (52.0, 22.0, 0.0)}
    data = encode(pixels, "JPEG", quality=92, exif=exif.tobytes())
    response = stub.Protect(_request(data, strip_gps=True, iterations=3), timeout=300)
    out = Image.open(io.BytesIO(response.image.data))
    assert out.format == "JPEG" and out.size == (pixels.shape[1], pixels.shape[0])
    assert out.getexif().get(0x010F) == "FaceOffTestCam" and 0x8825 not in out.getexif()
    assert out.quantization == Image.open(io.BytesIO(data)).quantization


def test_every_face_of_a_group_photo_is_protected(
    stub: masker_pb2_grpc.MaskerStub, shared_photos: list[Path]
) -> None:
    tiles = [
        np.asarray(Image.open(shared_photos[i]).convert("RGB").resize((400, 400)))
        for i in (0, 10, 20)
    ]
    data = encode(np.concatenate(tiles, axis=1), "PNG")
    # which faces are protected, not how well: a few steps each
    response = stub.Protect(_request(data, iterations=3), timeout=300)
    assert response.faces_found == 3 and sorted(f.index for f in response.faces) == [0, 1, 2]
    only = stub.Protect(_request(data, face_indices=[1], iterations=3), timeout=300)
    assert [f.index for f in only.faces] == [1]


def test_reference_photos_are_the_users_set(
    stub: masker_pb2_grpc.MaskerStub, shared_photos: list[Path]
) -> None:
    leo = [p for p in shared_photos if p.name.startswith("leo_")]
    response = stub.Protect(
        _request(leo[0].read_bytes(), [p.read_bytes() for p in leo[1:]]), timeout=300
    )
    face = response.faces[0]
    # Against the user's other photos the clean face is near (same person), the protected one far.
    assert face.distance_before < 1.0 < face.distance_after


def test_stream_sends_progress_then_the_result(
    stub: masker_pb2_grpc.MaskerStub, shared_photos: list[Path]
) -> None:
    events = list(stub.ProtectStream(_request(shared_photos[40].read_bytes()), timeout=300))
    assert events[-1].WhichOneof("event") == "result" and len(events[-1].result.faces) == 1
    progress = [e.progress for e in events[:-1]]
    assert all(e.WhichOneof("event") == "progress" for e in events[:-1])
    stages = [p.stage for p in progress]
    assert stages[0] == "detect" and "attack" in stages and stages[-1] == "paste"
    iterations = [p.iteration for p in progress if p.stage == "attack"]
    assert iterations == sorted(iterations) and iterations[-1] == progress[-1].iterations


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"epsilon": -1.0}, "epsilon"),
        ({"alpha": 0.0}, "alpha"),
        ({"attack": 99}, "attack"),
        ({"iterations": 0}, "iterations"),
        ({"iterations": 10**9}, "iterations"),
        ({"kappa": -1.0}, "kappa"),
        ({"profile": "ultra"}, "profile"),
        ({"face_indices": [7]}, "face_indices"),
        ({"mode": masker_pb2.MODE_TARGETED, "target": "nobody"}, "target"),
    ],
)
def test_bad_options_are_invalid_argument(
    stub: masker_pb2_grpc.MaskerStub, shared_photos: list[Path], options: dict[str, Any], field: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.Protect(_request(shared_photos[0].read_bytes(), **options), timeout=300)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in info.value.details()


def test_bad_photo_is_invalid_argument_and_service_stays_up(
    stub: masker_pb2_grpc.MaskerStub, services: dict[str, Any]
) -> None:
    for data in (b"", b"GIF89a broken"):
        with pytest.raises(grpc.RpcError) as info:
            stub.Protect(_request(data), timeout=60)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with grpc.insecure_channel(services["masker"].address) as ch:
        status = health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service="faceoff.v1.Masker"), timeout=5
        )
    assert status.status == health_pb2.HealthCheckResponse.SERVING


def test_targeted_protection_names_its_decoy(
    stub: masker_pb2_grpc.MaskerStub, shared_photos: list[Path]
) -> None:
    response = stub.Protect(
        _request(shared_photos[0].read_bytes(), mode=masker_pb2.MODE_TARGETED), timeout=300
    )
    assert response.faces[0].target and response.faces[0].target != "barack"


def test_masker_metrics_count_faces(services: dict[str, Any]) -> None:
    with urllib.request.urlopen(
        f"http://127.0.0.1:{services['masker'].metrics_port}/metrics", timeout=5
    ) as r:
        text = r.read().decode()
    faces = [
        line
        for line in text.splitlines()
        if line.startswith("faceoff_masker_faces_protected_total ")
    ]
    assert faces and float(faces[0].split()[1]) >= 1
    for name in (
        "faceoff_masker_queue_depth",
        "faceoff_masker_queue_capacity",
        "faceoff_masker_batch_size_bucket",
        "faceoff_masker_attack_iterations_total",
        "faceoff_masker_requests_total",
    ):
        assert name in text


def test_refusals_name_the_field_and_the_request_id_reaches_the_detector(
    stub: masker_pb2_grpc.MaskerStub,
    shared_photos: list[Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    def refusal(request: masker_pb2.ProtectRequest, rid: str) -> tuple[str, str]:
        with pytest.raises(grpc.RpcError) as info:
            stub.Protect(request, timeout=120, metadata=(("x-request-id", rid),))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        found = rpc_status.from_call(info.value)  # type: ignore[arg-type]
        assert found is not None
        reason = field = ""
        for detail in found.details:
            error, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
            if detail.Unpack(error):
                reason = error.reason
                assert error.metadata["request_id"] == rid
            elif detail.Unpack(bad):
                field = bad.field_violations[0].field
        return reason, field

    data = shared_photos[0].read_bytes()
    assert refusal(_request(data, epsilon=99.0, norm=masker_pb2.NORM_LINF), "m-1") == (
        "INVALID_OPTION",
        "options.epsilon",
    )

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if "request_id=m-2" in r.getMessage()]

    with caplog.at_level("INFO", logger="faceoff.access"):
        # a reference whose header is sound (the masker's admission reads headers only) but whose
        # data is cut short is refused by the detector's decode: the refusal comes back through
        # the masker
        assert refusal(_request(data, [data[: len(data) // 3]]), "m-2") == (
            "INVALID_IMAGE",
            "reference_images[0]",
        )
        deadline = time.monotonic() + 5  # a server logs a call once it has ended
        while len(lines()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert any("/faceoff.v1.Detector/Detect" in line for line in lines()), lines()
    assert any("/faceoff.v1.Masker/Protect" in line for line in lines()), lines()


def test_one_trace_follows_a_photo_through_the_sdk_the_masker_and_the_detector(
    services: dict[str, Any], shared_photos: list[Path]
) -> None:
    """W3C trace context from the SDK's span through the masker to the detector, with a span
    for each stage; the spans carry no payload."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from faceoff.sdk import Client

    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):  # the first test of this process to trace
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    assert isinstance(provider, TracerProvider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        with trace.get_tracer("tests").start_as_current_span("app uploads a photo") as root:
            with Client(services["masker"].address) as client:
                client.protect(shared_photos[3].read_bytes(), iterations=2, seed=1)
        spans = exporter.get_finished_spans()
    finally:
        exporter.shutdown()  # later tests' spans go nowhere
    trace_id = root.get_span_context().trace_id
    mine = [s for s in spans if s.context.trace_id == trace_id]
    names = {s.name for s in mine}
    for expected in (
        "faceoff.v1.Masker/Protect",  # the SDK's CLIENT span and the masker's SERVER span
        "faceoff.v1.Detector/Detect",
        "detect",
        "prepare",
        "decode",
        "mtcnn",
        "attack",
        "finish",
        "paste",
        "encode",
    ):
        assert expected in names, f"{expected} missing from the trace: {sorted(names)}"
    by_id = {s.context.span_id: s for s in mine}
    server = next(
        s for s in mine if s.name == "faceoff.v1.Masker/Protect" and s.kind.name == "SERVER"
    )
    client_span = by_id[server.parent.span_id]  # the masker continued the SDK's span
    assert (
        client_span.kind.name == "CLIENT"
        and client_span.parent.span_id == root.get_span_context().span_id
    )
    detect = next(s for s in mine if s.name == "faceoff.v1.Detector/Detect")
    assert by_id[detect.parent.span_id].name == "detect"  # the detector continued the masker's
    assert server.attributes["rpc.grpc.status_code"] == 0
    for s in mine:
        for value in s.attributes.values():
            assert not isinstance(value, bytes) and len(str(value)) < 200, (s.name, value)
