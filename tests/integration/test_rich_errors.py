"""Machine-readable refusals over a real channel: google.rpc.Status details and request ids.

A detector on loopback (token auth and a rate limit on) is asked wrong things; each refusal must
carry ErrorInfo (reason, domain faceoff.v1, request id), BadRequest naming the field for
INVALID_ARGUMENT, RetryInfo for RESOURCE_EXHAUSTED, and the SDK must surface them as ``.reason``,
``.field``, ``.retry_after`` and ``.request_id``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from prometheus_client import CollectorRegistry

from faceoff.common import status
from faceoff.common.settings import ServerSettings
from faceoff.detector import server as detector_server
from faceoff.sdk import Client, InvalidArgumentError, ResourceExhaustedError, UnauthenticatedError
from faceoff.v1 import common_pb2, detector_pb2, detector_pb2_grpc
from tests.conftest import REPO, LoopThread, encode
from tests.unit.test_imaging import PIXELS

TOKEN = "rich-errors-test-token-0123456789"


@pytest.fixture(scope="module")
def detector(loop_thread: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tokens = tmp_path_factory.mktemp("tokens") / "tokens"
    tokens.write_text(f"tests:{TOKEN}\n")
    settings = ServerSettings(
        host="127.0.0.1",
        port=0,
        metrics_port=0,
        grace_seconds=1,
        auth_tokens_file=str(tokens),
        rate_limit_per_client=0.5,
        rate_limit_burst=30,
    )
    running = loop_thread.run(
        detector_server.serve(
            settings, detector_server.DetectorSettings(), registry=CollectorRegistry()
        )
    )
    loop_thread.run(running.wait_ready(timeout=300))
    yield running
    loop_thread.run(running.stop(0))


def _detect(
    address: str, data: bytes, metadata: tuple[tuple[str, str], ...] | None = None, **options: Any
) -> grpc.RpcError:
    auth = (("authorization", f"Bearer {TOKEN}"),)
    request = detector_pb2.DetectRequest(
        image=common_pb2.Image(data=data), options=detector_pb2.DetectOptions(**options)
    )
    with grpc.insecure_channel(address) as channel:
        with pytest.raises(grpc.RpcError) as info:
            detector_pb2_grpc.DetectorStub(channel).Detect(
                request, timeout=30, metadata=auth if metadata is None else metadata
            )
    return info.value


def _details(exc: grpc.RpcError) -> dict[str, Any]:
    found = rpc_status.from_call(exc)  # type: ignore[arg-type]
    assert found is not None, f"no grpc-status-details-bin on {exc.code()}: {exc.details()}"
    assert found.code == exc.code().value[0] and found.message == exc.details()
    out: dict[str, Any] = {}
    for detail in found.details:
        for kind in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.RetryInfo,
        ):
            message = kind()
            if detail.Is(message.DESCRIPTOR):
                detail.Unpack(message)
                out[kind.__name__] = message
    return out


def test_a_corrupt_photo_names_the_image_field_and_a_request_id(detector: Any) -> None:
    exc = _detect(detector.address, b"\x89PNG\r\n\x1a\n not really")
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = _details(exc)
    info = details["ErrorInfo"]
    assert (info.reason, info.domain) == ("INVALID_IMAGE", "faceoff.v1")
    assert len(info.metadata["request_id"]) == 32
    violation = details["BadRequest"].field_violations[0]
    assert violation.field == "image" and violation.description == exc.details()
    returned = dict(exc.trailing_metadata())[status.REQUEST_ID_KEY]  # type: ignore[arg-type]
    assert returned == info.metadata["request_id"]


def test_a_bad_option_names_its_field_and_the_clients_request_id_is_kept(detector: Any) -> None:
    sent = (("authorization", f"Bearer {TOKEN}"), ("x-request-id", "app-1234.retry-0"))
    exc = _detect(detector.address, encode(PIXELS), sent, min_confidence=1.5)
    details = _details(exc)
    assert details["ErrorInfo"].reason == "INVALID_OPTION"
    assert details["ErrorInfo"].metadata["request_id"] == "app-1234.retry-0"
    assert details["BadRequest"].field_violations[0].field == "options.min_confidence"
    assert "RetryInfo" not in details


def test_a_request_id_that_is_not_a_token_is_replaced(detector: Any) -> None:
    for bad in ("two words; rm -rf", "x" * 129, ""):
        sent = (("authorization", f"Bearer {TOKEN}"), ("x-request-id", bad))
        exc = _detect(detector.address, b"", sent)
        rid = _details(exc)["ErrorInfo"].metadata["request_id"]
        assert rid != bad and len(rid) == 32


def test_auth_refusals_say_which_problem_without_a_field(detector: Any) -> None:
    for sent, reason in (
        ((), "TOKEN_MISSING"),
        ((("authorization", "Basic abc"),), "TOKEN_MALFORMED"),
        ((("authorization", "Bearer wrong-token"),), "TOKEN_INVALID"),
    ):
        exc = _detect(detector.address, encode(PIXELS), sent)
        assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
        details = _details(exc)
        assert details["ErrorInfo"].reason == reason
        assert "BadRequest" not in details and "RetryInfo" not in details


def test_the_sdk_exposes_reason_field_and_request_id(detector: Any) -> None:
    with Client(detector.address, token=TOKEN, retries=0) as client:
        with pytest.raises(InvalidArgumentError) as info:
            client.detect(b"GIF89a broken")
        assert (info.value.reason, info.value.field) == ("INVALID_IMAGE", "image")
        assert info.value.request_id is not None and len(info.value.request_id) == 32
    with Client(detector.address, token="not-the-token-but-long-enough", retries=0) as client:
        with pytest.raises(UnauthenticatedError) as auth:
            client.detect(encode(PIXELS))
        assert auth.value.reason == "TOKEN_INVALID" and auth.value.field is None


def test_the_request_id_is_in_the_access_log(
    detector: Any, caplog: pytest.LogCaptureFixture
) -> None:
    sent = (("authorization", f"Bearer {TOKEN}"), ("x-request-id", "find-me-in-the-log"))

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "faceoff.access"]

    with caplog.at_level(logging.INFO, logger="faceoff.access"):
        _detect(detector.address, b"", sent)
        # the server logs the call once it has ended, which the client may see first
        deadline = time.monotonic() + 5
        while not any("find-me" in line for line in lines()) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert any("request_id=find-me-in-the-log" in line for line in lines()), lines()


def test_rate_limited_calls_carry_retry_info_that_the_sdk_reads(detector: Any) -> None:
    # Burst 30 at 0.5/s: the 31st call within a few seconds is refused.
    with Client(detector.address, token=TOKEN, retries=0) as client:
        refusal = None
        for _ in range(40):
            try:
                client.detect(b"")
            except InvalidArgumentError:
                continue
            except ResourceExhaustedError as exc:
                refusal = exc
                break
        assert refusal is not None, "40 calls at once were never rate-limited"
        assert refusal.reason == "RATE_LIMITED"
        assert refusal.retry_after is not None and 0 < refusal.retry_after <= 3
    exc = _detect(detector.address, b"")
    assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = _details(exc)
    delay = details["RetryInfo"].retry_delay.ToNanoseconds() / 1e9
    assert details["ErrorInfo"].reason == "RATE_LIMITED"
    assert abs(delay - int(details["ErrorInfo"].metadata["retry_after_ms"]) / 1000) < 0.002


def test_every_reason_is_documented() -> None:
    doc = (REPO / "docs" / "errors.md").read_text()
    for reason, (code, _) in status.REASONS.items():
        assert f"| `{reason}` | {code} |" in doc, f"docs/errors.md lacks {reason} ({code})"


def test_an_unknown_reason_is_refused_at_the_source() -> None:
    with pytest.raises(ValueError, match="unknown reason"):
        status.rich_status(grpc.StatusCode.INTERNAL, "x", "NOT_A_REASON")
