"""The SDK without models: its exports, photo inputs, requests, retries, errors, token and TLS.

Retries and status translation are tested against a small real gRPC server (port 0) whose
Masker answers with scripted status codes before it answers OK, so every attempt is a real
call over a real channel; the services themselves are exercised in tests/integration/test_sdk.py.
"""

from __future__ import annotations

import asyncio
import inspect
import io
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from PIL import Image

import faceoff.sdk
from faceoff.sdk import (
    AsyncClient,
    Client,
    DeadlineExceededError,
    FaceOffError,
    InvalidArgumentError,
    Progress,
    ResourceExhaustedError,
    RetryPolicy,
    TLSConfig,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
)
from faceoff.sdk._convert import protect_request
from faceoff.sdk.photos import read_photo
from faceoff.v1 import common_pb2, detector_pb2, masker_pb2, masker_pb2_grpc, schema_pb2
from tests.conftest import REPO, encode

FAST = RetryPolicy(max_attempts=4, initial_backoff=0.01, max_backoff=0.05)
PIXELS = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)


# -- the package --------------------------------------------------------------------------------


def test_all_lists_exactly_the_public_api() -> None:
    public = {name for name in dir(faceoff.sdk) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(faceoff.sdk, name)).__name__ == "module"}
    assert sorted(faceoff.sdk.__all__) == faceoff.sdk.__all__, "keep __all__ sorted"
    assert set(faceoff.sdk.__all__) == public - modules
    classes = [name for name in faceoff.sdk.__all__ if isinstance(getattr(faceoff.sdk, name), type)]
    assert "Client" in classes and "AsyncClient" in classes
    for name in classes:
        assert getattr(faceoff.sdk, name).__doc__, f"{name} has no docstring"


def test_importing_the_sdk_loads_no_tensorflow() -> None:
    code = (
        "import sys, faceoff.sdk; c = faceoff.sdk.Client; a = faceoff.sdk.AsyncClient; "
        "assert 'tensorflow' not in sys.modules, 'importing the SDK imported TensorFlow'; "
        "assert not any(m.startswith(('faceoff.masker', 'faceoff.detector', 'faceoff.evaluator')) "
        "for m in sys.modules), 'importing the SDK imported a service'; print('ok')"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr


def test_sdk_ships_py_typed() -> None:
    assert (Path(faceoff.sdk.__file__).parent / "py.typed").is_file()
    assert '"faceoff.sdk" = ["py.typed"]' in (REPO / "sdk" / "pyproject.toml").read_text()


# -- photos and requests ------------------------------------------------------------------------


def test_every_photo_kind_reads_to_encoded_bytes(tmp_path: Path) -> None:
    png = encode(PIXELS)
    path = tmp_path / "p.png"
    path.write_bytes(png)
    for photo in (str(path), path, png, bytearray(png), memoryview(png), io.BytesIO(png)):
        assert read_photo(photo) == png
    with path.open("rb") as f:
        assert read_photo(f) == png
    for photo in (Image.fromarray(PIXELS), PIXELS):
        data = read_photo(photo)
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and np.array_equal(
            np.asarray(Image.open(io.BytesIO(data))), PIXELS
        )
    cmyk = Image.fromarray(PIXELS).convert("CMYK")
    assert Image.open(io.BytesIO(read_photo(cmyk))).mode == "RGB"


@pytest.mark.parametrize(
    ("photo", "error"),
    [
        (PIXELS.astype(np.float32), TypeError),
        (PIXELS[:, :, :2], ValueError),
        (12, TypeError),
        (io.StringIO("x"), TypeError),
    ],
)
def test_unreadable_photo_kinds_are_refused(photo: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        read_photo(photo)


def test_protect_request_carries_every_option() -> None:
    request = protect_request(
        b"photo",
        profile="high",
        reference_photos=[b"r1", b"r2"],
        target="leo",
        seed=9,
        options={
            "attack": "cw",
            "norm": "linf",
            "loss": "hinge",
            "epsilon": 0.02,
            "iterations": 7,
            "alpha": 3.5,
            "kappa": 0.1,
            "search_steps": 2,
            "faces": [0, 2],
            "strip_gps": True,
            "min_face_size": 40,
        },
    )
    o = request.options
    assert request.image.data == b"photo" and [r.data for r in request.reference_images] == [
        b"r1",
        b"r2",
    ]
    assert (o.profile, o.attack, o.norm, o.loss, o.mode) == (
        "high",
        masker_pb2.ATTACK_CW,
        masker_pb2.NORM_LINF,
        masker_pb2.LOSS_HINGE,
        masker_pb2.MODE_TARGETED,
    )
    assert (
        o.target,
        o.seed,
        o.iterations,
        list(o.face_indices),
        o.strip_gps,
        o.detect.min_face_size,
    ) == ("leo", 9, 7, [0, 2], True, 40)
    assert o.HasField("alpha") and not o.HasField("learning_rate"), (
        "unset options take the profile's values"
    )


def test_protect_request_carries_the_transfer_options() -> None:
    request = protect_request(
        b"photo",
        profile=None,
        reference_photos=[],
        target=None,
        seed=None,
        options={
            "momentum": 0.9,
            "diversity": 0.5,
            "ti_kernel": 5,
            "eot": 0.25,
            "surrogates": "facenet,facenet512",
            "surrogate_weights": [2, 1],
            "adaptive_alpha": True,
            "psnr_floor": 33,
            "loop_recognizers": ["sface"],
        },
    )
    o = request.options
    assert (
        o.ti_kernel,
        list(o.surrogates),
        list(o.surrogate_weights),
        o.adaptive_alpha,
        list(o.loop_recognizers),
    ) == (5, ["facenet", "facenet512"], [2.0, 1.0], True, ["sface"])
    assert (o.momentum, o.diversity, o.eot, o.psnr_floor) == pytest.approx((0.9, 0.5, 0.25, 33.0))
    assert not o.HasField("alpha")


def test_evaluate_sends_the_models_the_protection_attacked() -> None:
    from faceoff.sdk._convert import evaluate_request

    photo = encode(PIXELS)
    request = evaluate_request(photo, [photo], "dlib", attacked_models="facenet, sface")
    assert list(request.attacked_models) == ["facenet", "sface"]
    assert list(evaluate_request(photo, [photo], ["dlib"]).attacked_models) == []
    for client in (faceoff.sdk.Client, faceoff.sdk.AsyncClient):
        assert "attacked_models" in inspect.signature(client.evaluate).parameters


def test_the_check_names_the_models_the_protection_used() -> None:
    from faceoff.sdk import Verdict
    from faceoff.sdk._convert import protected_photo
    from faceoff.sdk.client import check_request

    options = masker_pb2.ProtectOptions(
        surrogates=["facenet", "facenet512"], adaptive_alpha=True, loop_recognizers=["sface"]
    )
    response = masker_pb2.ProtectResponse(
        image=common_pb2.Image(data=encode(PIXELS)), options=options
    )
    request = masker_pb2.ProtectRequest(image=common_pb2.Image(data=encode(PIXELS)))
    check = check_request(request, response, ["dlib", "sface"])
    assert list(check.attacked_models) == ["facenet", "facenet512", "sface"]
    response.options.adaptive_alpha = False  # the loop's recognisers count only when the loop ran
    assert list(check_request(request, response, ["dlib"]).attacked_models) == [
        "facenet",
        "facenet512",
    ]
    # The evaluator's flag is kept; the adaptive loop's recognisers are marked in_loop.
    response.options.adaptive_alpha = True
    said = [
        Verdict(recognizer=n, white_box=n == "facenet512", configured=True)
        for n in ("facenet512", "dlib", "sface")
    ]
    got = {v.recognizer: (v.white_box, v.in_loop) for v in protected_photo(response, said).verdicts}
    assert got == {"facenet512": (True, False), "dlib": (False, False), "sface": (False, True)}


def test_the_check_asks_about_the_references_or_else_the_original_photo() -> None:
    from faceoff.sdk.client import check_request

    original = common_pb2.Image(data=encode(PIXELS))
    protected = common_pb2.Image(data=encode(PIXELS[::-1]))
    response = masker_pb2.ProtectResponse(image=protected)
    alone = check_request(masker_pb2.ProtectRequest(image=original), response, ["dlib"])
    assert list(alone.reference_images) == [original] and alone.image == protected
    refs = [common_pb2.Image(data=b"me1"), common_pb2.Image(data=b"me2")]
    given = check_request(
        masker_pb2.ProtectRequest(image=original, reference_images=refs), response, ["dlib"]
    )
    assert list(given.reference_images) == refs


def test_verdicts_carry_the_identification_among_decoys() -> None:
    from faceoff.sdk._convert import verdicts
    from faceoff.v1 import evaluator_pb2

    response = evaluator_pb2.EvaluateResponse(
        verdicts=[
            evaluator_pb2.Verdict(
                recognizer="dlib",
                configured=True,
                verified=True,
                confidence=0.2,
                threshold=0.5,
                distance=0.7,
                identified=False,
                rank=4,
                gallery_size=10,
            ),
            evaluator_pb2.Verdict(
                recognizer="mobilefacenet",
                configured=True,
                verified=True,
                confidence=0.9,
                threshold=0.5,
                match=True,
                distance=0.3,
                identified=True,
                rank=1,
                gallery_size=11,
            ),
            # a cloud API: verification only, no gallery
            evaluator_pb2.Verdict(
                recognizer="facepp", configured=True, verified=True, confidence=0.8, threshold=0.5
            ),
        ]
    )
    # the message survives the wire
    dlib, mobile, cloud = verdicts(
        evaluator_pb2.EvaluateResponse.FromString(response.SerializeToString())
    )
    assert (dlib.identified, dlib.rank, dlib.gallery_size) == (False, 4, 10)
    assert (mobile.identified, mobile.rank, mobile.gallery_size) == (True, 1, 11)
    assert (cloud.identified, cloud.rank, cloud.gallery_size) == (None, None, None)
    assert {k: dlib.to_json()[k] for k in ("identified", "rank", "gallery_size")} == {
        "identified": False,
        "rank": 4,
        "gallery_size": 10,
    }
    assert mobile.to_json()["identified"] is True
    assert not {"identified", "rank", "gallery_size"} & set(cloud.to_json())


def test_protect_request_refuses_what_cannot_be_sent() -> None:
    with pytest.raises(TypeError, match="unexpected keyword.*epsilonn"):
        protect_request(
            b"x",
            profile=None,
            reference_photos=(),
            target=None,
            seed=None,
            options={"epsilonn": 1.0},
        )
    with pytest.raises(InvalidArgumentError, match="attack must be one of pgd, cw"):
        protect_request(
            b"x",
            profile=None,
            reference_photos=(),
            target=None,
            seed=None,
            options={"attack": "fgsm"},
        )
    with pytest.raises(InvalidArgumentError, match="iterations"):
        protect_request(
            b"x",
            profile=None,
            reference_photos=(),
            target=None,
            seed=None,
            options={"iterations": -1},
        )


def test_retry_policy_backs_off_exponentially_with_jitter() -> None:
    policy = RetryPolicy(max_attempts=5, initial_backoff=0.5, max_backoff=3.0)
    for attempt, cap in enumerate((0.5, 1.0, 2.0, 3.0, 3.0)):
        waits = [policy.backoff(attempt) for _ in range(200)]
        assert all(0 <= w <= cap for w in waits) and max(waits) > cap / 2
    assert RetryPolicy.of(2).max_attempts == 3 and RetryPolicy.of(policy) is policy
    with pytest.raises(ValueError):
        RetryPolicy.of(-1)


# -- a scripted Masker over a real channel ------------------------------------------------------


@dataclass
class Script:
    """What the fake masker answers: these codes first, then OK."""

    codes: list[grpc.StatusCode] = field(default_factory=list)
    #: ErrorInfo reasons sent with those codes (None: a bare status, as a proxy sends)
    reasons: list[str | None] = field(default_factory=list)
    sleep: float = 0.0
    token: str | None = None
    attempts: int = 0
    metadata: list[dict[str, str]] = field(default_factory=list)
    remaining: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _rich(code: grpc.StatusCode, message: str, reason: str, field: str = "") -> grpc.Status:
    """A status with a Face-Off ErrorInfo (and BadRequest) in grpc-status-details-bin, built from
    googleapis-common-protos alone (the SDK's own dependency), as the servers send it."""
    from google.rpc import error_details_pb2, status_pb2

    status = status_pb2.Status(code=code.value[0], message=message)
    info = error_details_pb2.ErrorInfo(
        reason=reason, domain="faceoff.v1", metadata={"request_id": "server-rid"}
    )
    status.details.add().Pack(info)
    if field:
        violation = error_details_pb2.BadRequest.FieldViolation(field=field, description=message)
        status.details.add().Pack(error_details_pb2.BadRequest(field_violations=[violation]))

    class _Status(grpc.Status):
        pass

    out = _Status()
    out.code, out.details = code, message  # type: ignore[misc]
    out.trailing_metadata = (("grpc-status-details-bin", status.SerializeToString()),)  # type: ignore[misc]
    return out


def _response() -> masker_pb2.ProtectResponse:
    return masker_pb2.ProtectResponse(
        image=common_pb2.Image(data=encode(PIXELS), format=common_pb2.IMAGE_FORMAT_PNG),
        profile="low",
        faces_found=0,
    )


class ScriptedMasker(masker_pb2_grpc.MaskerServicer):
    def __init__(self, script: Script) -> None:
        self.script = script

    def _attempt(self, context: grpc.ServicerContext) -> None:
        s = self.script
        with s.lock:
            s.attempts += 1
            s.remaining.append(context.time_remaining())
            metadata = dict(context.invocation_metadata())
            s.metadata.append(metadata)
            code = s.codes.pop(0) if s.codes else None
            reason = s.reasons.pop(0) if s.reasons else None
        if s.token is not None and metadata.get("authorization") != f"Bearer {s.token}":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "a valid bearer token is required")
        if s.sleep:
            time.sleep(s.sleep)
        if code is not None and reason is not None:
            context.abort_with_status(_rich(code, f"scripted {code.name}", reason))
        if code is not None:
            context.abort(code, f"scripted {code.name}")

    def Protect(self, request: Any, context: grpc.ServicerContext) -> masker_pb2.ProtectResponse:
        self._attempt(context)
        return _response()

    def ProtectStream(
        self, request: Any, context: grpc.ServicerContext
    ) -> Iterator[masker_pb2.ProtectEvent]:
        self._attempt(context)
        yield masker_pb2.ProtectEvent(progress=masker_pb2.ProtectProgress(stage="detect"))
        for i in (0, 5, 10):
            yield masker_pb2.ProtectEvent(
                progress=masker_pb2.ProtectProgress(
                    stage="attack", faces=1, iteration=i, iterations=10
                )
            )
        yield masker_pb2.ProtectEvent(
            progress=masker_pb2.ProtectProgress(stage="paste", faces=1, iteration=10, iterations=10)
        )
        yield masker_pb2.ProtectEvent(result=_response())


@pytest.fixture()
def script() -> Script:
    return Script()


def _start(
    script: Script, credentials: grpc.ServerCredentials | None = None, host: str = "127.0.0.1"
) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    masker_pb2_grpc.add_MaskerServicer_to_server(ScriptedMasker(script), server)
    port = (
        server.add_secure_port(f"{host}:0", credentials)
        if credentials
        else server.add_insecure_port(f"{host}:0")
    )
    server.start()
    return server, port


@pytest.fixture()
def masker(script: Script) -> Iterator[str]:
    server, port = _start(script)
    yield f"127.0.0.1:{port}"
    server.stop(0)


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED])
def test_transient_codes_are_retried_until_ok(
    masker: str, script: Script, code: grpc.StatusCode
) -> None:
    script.codes = [code, code]
    with Client(masker, retries=FAST) as client:
        protected = client.protect(b"photo")
    assert (
        script.attempts == 3
        and protected.format == "PNG"
        and (protected.width, protected.height) == (32, 24)
    )


def test_retries_are_bounded_and_end_in_a_typed_error(masker: str, script: Script) -> None:
    script.codes = [grpc.StatusCode.UNAVAILABLE] * 10
    with Client(masker, retries=FAST) as client, pytest.raises(UnavailableError) as info:
        client.protect(b"photo")
    assert script.attempts == FAST.max_attempts
    assert info.value.code == "UNAVAILABLE" and "scripted UNAVAILABLE" in info.value.message


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgumentError),
        (grpc.StatusCode.INTERNAL, FaceOffError),
        (grpc.StatusCode.FAILED_PRECONDITION, FaceOffError),
    ],
)
def test_other_codes_are_not_retried(
    masker: str, script: Script, code: grpc.StatusCode, error: type[Exception]
) -> None:
    script.codes = [code]
    with Client(masker, retries=FAST) as client, pytest.raises(error) as info:
        client.protect(b"photo")
    assert script.attempts == 1
    assert info.value.code == code.name and info.value.message == f"scripted {code.name}"  # type: ignore[attr-defined]


def test_a_deadline_that_spends_the_budget_is_not_retried(masker: str, script: Script) -> None:
    script.sleep = 1.0
    with Client(
        masker, timeout=0.3, retries=RetryPolicy(max_attempts=4, initial_backoff=0.01)
    ) as client:
        with pytest.raises(DeadlineExceededError) as info:
            client.protect(b"photo")
    assert info.value.code == "DEADLINE_EXCEEDED" and masker in info.value.message
    time.sleep(0.3)  # a retry would reach the server a moment after the client gave up on it
    assert script.attempts == 1, "the whole budget went to the first attempt: no retry"


def test_a_per_call_timeout_overrides_the_clients(masker: str, script: Script) -> None:
    script.sleep = 1.0
    with Client(masker, timeout=300, retries=FAST) as client:
        with pytest.raises(DeadlineExceededError):
            client.protect(b"photo", timeout=0.3)
        with pytest.raises(ValueError, match="timeout must be > 0"):
            client.protect(b"photo", timeout=0)
    assert script.attempts == 1 and script.remaining[0] <= 0.35

    async def main() -> None:
        async with AsyncClient(masker, timeout=300, retries=FAST) as client:
            with pytest.raises(DeadlineExceededError):
                await client.protect(b"photo", timeout=0.3)

    asyncio.run(main())
    assert script.attempts == 2 and script.remaining[1] <= 0.35


def test_the_timeout_bounds_the_whole_call_retries_and_back_off_included(
    masker: str, script: Script
) -> None:
    """Each attempt gets what is left of the budget, and no retry starts past it."""
    script.codes = [grpc.StatusCode.UNAVAILABLE] * 20
    policy = RetryPolicy(max_attempts=20, initial_backoff=0.3, max_backoff=0.3, multiplier=1.0)
    with Client(masker, timeout=1.0, retries=policy) as client, pytest.raises(UnavailableError):
        client.protect(b"photo")
    assert 2 <= script.attempts < 20, "back-offs up to 0.3 s fit a few times into 1 s, not 20"
    remaining = script.remaining
    assert all(r is not None and r <= 1.05 for r in remaining)  # gRPC rounds the header up
    assert remaining[-1] < remaining[0] - 0.1, "later attempts get only what is left"


def test_unreachable_address_is_unavailable_after_retries() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but never listening: connections are refused
        with Client(
            f"127.0.0.1:{port}", retries=RetryPolicy(max_attempts=2, initial_backoff=0.01)
        ) as client:
            with pytest.raises(UnavailableError) as info:
                client.protect(b"photo")
    assert f"127.0.0.1:{port}" in info.value.message


def test_bearer_token_is_sent_and_a_refusal_is_typed(masker: str, script: Script) -> None:
    script.token = "s3cret"
    with Client(masker, token="s3cret", retries=FAST) as client:
        client.protect(b"photo")
    assert script.metadata[-1]["authorization"] == "Bearer s3cret"
    assert script.metadata[-1]["user-agent"].startswith("faceoff-sdk/")
    with Client(masker, retries=FAST) as client, pytest.raises(UnauthenticatedError):
        client.protect(b"photo")
    assert script.attempts == 2, "UNAUTHENTICATED must not be retried"


def test_stream_progress_arrives_in_order_as_typed_events(masker: str) -> None:
    events: list[Progress] = []
    with Client(masker) as client:
        client.protect(b"photo", on_progress=events.append)
    assert [(e.stage, e.iteration) for e in events] == [
        ("detect", 0),
        ("attack", 0),
        ("attack", 5),
        ("attack", 10),
        ("paste", 10),
    ]
    assert events[2].fraction == 0.5 and events[-1].fraction == 1.0


def test_a_failing_progress_callback_stops_the_call(masker: str, script: Script) -> None:
    def boom(event: Progress) -> None:
        raise RuntimeError("callback failed")

    with (
        Client(masker, retries=FAST) as client,
        pytest.raises(RuntimeError, match="callback failed"),
    ):
        client.protect(b"photo", on_progress=boom)
    assert script.attempts == 1


def test_detect_at_an_address_without_a_detector_says_so(masker: str) -> None:
    with Client(masker) as client, pytest.raises(UnimplementedError) as info:
        client.detect(encode(PIXELS))
    assert "faceoff.v1.Detector" in info.value.message and "detector=" in info.value.message


def test_async_client_retries_and_awaits_async_progress(masker: str, script: Script) -> None:
    script.codes = [grpc.StatusCode.UNAVAILABLE]
    events: list[str] = []

    async def on_progress(event: Progress) -> None:
        await asyncio.sleep(0)
        events.append(event.stage)

    async def main() -> tuple[Any, Any]:
        async with AsyncClient(masker, retries=FAST) as client:
            streamed = await client.protect(b"photo", on_progress=on_progress)
            script.codes = [grpc.StatusCode.INVALID_ARGUMENT]
            with pytest.raises(InvalidArgumentError):
                await client.protect(b"photo")
            return streamed, await client.protect(b"photo")

    streamed, unary = asyncio.run(main())
    assert streamed.data == unary.data and events == [
        "detect",
        "attack",
        "attack",
        "attack",
        "paste",
    ]
    assert script.attempts == 4  # UNAVAILABLE + OK, INVALID_ARGUMENT once, OK


def test_tls_with_a_private_ca(tmp_path: Path, script: Script) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a throw-away certificate")
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-keyout",
            str(tmp_path / "key.pem"),
            "-out",
            str(tmp_path / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )
    credentials = grpc.ssl_server_credentials(
        [((tmp_path / "key.pem").read_bytes(), (tmp_path / "cert.pem").read_bytes())]
    )
    server, port = _start(script, credentials, host="localhost")
    try:
        with Client(f"localhost:{port}", tls=TLSConfig(ca=tmp_path / "cert.pem")) as client:
            assert client.protect(b"photo").format == "PNG"
        with Client(f"localhost:{port}", retries=0) as plaintext, pytest.raises(UnavailableError):
            plaintext.protect(b"photo")
    finally:
        server.stop(0)
    with pytest.raises(ValueError, match="both cert and key"):
        TLSConfig(cert=b"x")


def test_resource_exhausted_is_a_typed_error_after_retries(masker: str, script: Script) -> None:
    script.codes = [grpc.StatusCode.RESOURCE_EXHAUSTED] * 10
    with Client(masker, retries=1) as client, pytest.raises(ResourceExhaustedError):
        client.protect(b"photo")
    assert script.attempts == 2


def test_save_writes_atomically_with_the_usual_permissions(tmp_path: Path) -> None:
    from faceoff.sdk import ProtectedPhoto

    photo = ProtectedPhoto(
        data=encode(PIXELS),
        format="PNG",
        width=32,
        height=24,
        faces=(),
        faces_found=0,
        profile="low",
    )
    target = photo.save(tmp_path / "new" / f"p{photo.suffix}")
    assert target.read_bytes() == photo.data and [p.name for p in target.parent.iterdir()] == [
        "p.png"
    ]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    photo.save(target)  # over an existing file
    assert [p.name for p in target.parent.iterdir()] == ["p.png"]


def test_local_without_the_services_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec

    def without_masker(name: str, *args: Any) -> Any:
        return None if name == "faceoff.masker" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_masker)
    with pytest.raises(ImportError, match="missing: .*faceoff-masker") as info:
        Client.local()
    assert "Client('host:port')" in str(info.value)
    with pytest.raises(ImportError, match="missing: .*faceoff-masker"):
        AsyncClient.local()


@pytest.mark.parametrize(
    ("reason", "attempts"),
    [("OVERLOADED", 3), ("MODELS_LOADING", 3), (None, 1), ("DEADLINE_EXCEEDED", 1)],
)
def test_unstarted_protect_only_retries_what_the_server_did_not_start(
    masker: str, script: Script, reason: str | None, attempts: int
) -> None:
    # UNAVAILABLE twice, then OK: retried only when the reason says no work was done
    script.codes = [grpc.StatusCode.UNAVAILABLE] * 2
    script.reasons = [reason] * 2
    policy = RetryPolicy(max_attempts=4, initial_backoff=0.01, unstarted_protect_only=True)
    with Client(masker, retries=policy) as client:
        if attempts == 3:
            client.protect(b"photo")
        else:
            with pytest.raises(UnavailableError) as info:
                client.protect(b"photo")
            assert info.value.reason == reason
    assert script.attempts == attempts


def test_errors_carry_the_servers_reason_field_and_request_id(masker: str, script: Script) -> None:
    script.codes = [grpc.StatusCode.INVALID_ARGUMENT]
    script.reasons = ["INVALID_OPTION"]
    with Client(masker, retries=FAST) as client, pytest.raises(InvalidArgumentError) as info:
        client.protect(b"photo")
    assert info.value.reason == "INVALID_OPTION" and info.value.request_id == "server-rid"
    # each call sends one request id, the same on every attempt
    script.codes = [grpc.StatusCode.UNAVAILABLE]
    script.metadata.clear()
    with Client(masker, retries=FAST) as client:
        client.protect(b"photo")
    ids = [m.get("x-request-id") for m in script.metadata]
    assert len(ids) == 2 and ids[0] == ids[1] and len(ids[0] or "") == 32


def test_profiles_come_from_the_contract() -> None:
    """The profile names and the default are written once, in the contract (issue 26)."""
    declared = masker_pb2.ProtectOptions.DESCRIPTOR.GetOptions().Extensions[schema_pb2.profiles]
    assert faceoff.sdk.PROFILES == tuple(declared.names) == ("low", "medium", "high")
    assert faceoff.sdk.DEFAULT_PROFILE == declared.default
    assert faceoff.sdk.DEFAULT_PROFILE in faceoff.sdk.PROFILES
    assert inspect.signature(Client.protect).parameters["profile"].default == (
        faceoff.sdk.DEFAULT_PROFILE
    )


def test_a_client_runs_on_the_backend_it_is_given() -> None:
    """Client and AsyncClient share one base: a backend in place of the services (what
    ``local()`` passes), never both, and the same repr."""
    from faceoff.v1 import detector_pb2

    class Backend:
        closed = False

        def detect(
            self, request: detector_pb2.DetectRequest, timeout: float | None = None
        ) -> detector_pb2.DetectResponse:
            assert request.image.data  # the photo, encoded
            return detector_pb2.DetectResponse(width=32, height=24)

        def close(self) -> None:
            self.closed = True

    backend = Backend()
    with Client(backend=backend) as client:  # type: ignore[arg-type]
        assert client.detect(PIXELS).width == 32
        assert repr(client) == "Client.local()" and client.target is None
    assert backend.closed
    with pytest.raises(ValueError, match="not both"):
        Client("localhost:1", backend=backend)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"AsyncClient\.local\(\)"):
        AsyncClient("")
    assert repr(Client("localhost:1")) == "Client('localhost:1')"


def test_the_protected_photo_s_size_comes_from_the_masker_without_decoding() -> None:
    """The thin SDK needs no Pillow: the masker reports the display size (Pillow only reads it
    from the image for a masker that does not)."""
    from faceoff.sdk._convert import protected_photo

    msg = masker_pb2.ProtectResponse(
        image=common_pb2.Image(data=b"not decoded", format=common_pb2.IMAGE_FORMAT_JPEG),
        width=640,
        height=480,
    )
    photo = protected_photo(msg)
    assert (photo.width, photo.height, photo.format) == (640, 480, "JPEG")
    old = masker_pb2.ProtectResponse(
        image=common_pb2.Image(data=encode(PIXELS), format=common_pb2.IMAGE_FORMAT_PNG)
    )
    assert (protected_photo(old).width, protected_photo(old).height) == (32, 24)


def test_detect_passes_its_options_and_serialises_its_detection() -> None:
    seen: list[detector_pb2.DetectRequest] = []
    landmarks = {  # the detector always finds all five (values off the rounding edges: the
        # wire carries float32)
        "left_eye": (12.34, 25.57),
        "right_eye": (31.2, 25.93),
        "nose": (20.0, 30.02),
        "mouth_left": (14.81, 40.4),
        "mouth_right": (28.66, 40.1),
    }
    face = common_pb2.Face(
        box=common_pb2.BoundingBox(x=10.04, y=20.06, width=30.0, height=40.0), confidence=0.987654
    )
    for name, (x, y) in landmarks.items():
        getattr(face.landmarks, name).x, getattr(face.landmarks, name).y = x, y

    class Backend:
        def detect(
            self, request: detector_pb2.DetectRequest, timeout: float | None = None
        ) -> detector_pb2.DetectResponse:
            seen.append(request)
            return detector_pb2.DetectResponse(width=64, height=48, faces=[face])

        def close(self) -> None:
            pass

    with Client(backend=Backend()) as client:  # type: ignore[arg-type]
        found = client.detect(PIXELS, min_face_size=30, min_confidence=0.95)
        plain = client.detect(PIXELS)
    options = seen[0].options
    assert options.min_face_size == 30 and options.min_confidence == pytest.approx(0.95)
    assert not seen[1].HasField("options"), "unset options take the detector's defaults"
    expected = {
        "width": 64,
        "height": 48,
        "faces": [
            {
                "box": [10.0, 20.1, 30.0, 40.0],
                "confidence": 0.9877,
                "landmarks": {k: [round(x, 1), round(y, 1)] for k, (x, y) in landmarks.items()},
            }
        ],
    }
    assert found.to_json() == plain.to_json() == expected
