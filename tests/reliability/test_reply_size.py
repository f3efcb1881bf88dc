"""Replies over the message size limit: refused once, named, counted, never retried.

A photo whose protected output is over the limit used to be protected four times: grpc 1.85
prefixes ``SERVER: `` to its "Sent message larger than max" error, which the SDK's check missed,
and the masker, which had done the work and failed to send, counted the call OK.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import numpy as np
import pytest

from faceoff.masker.servicer import MaskerServicer
from faceoff.sdk import Client, ResourceExhaustedError, RetryPolicy
from faceoff.v1 import common_pb2, masker_pb2, masker_pb2_grpc
from tests.conftest import encode
from tests.reliability.conftest import CHEAP, SMALL_PHOTO, Services

NOISE = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
RETRIES = RetryPolicy(max_attempts=4, initial_backoff=0.01, max_backoff=0.01)


class BigReplyMasker(masker_pb2_grpc.MaskerServicer):
    """Answers every Protect with a reply of about 12 KB, counting the attempts."""

    def __init__(self) -> None:
        self.attempts = 0

    def Protect(self, request: Any, context: grpc.ServicerContext) -> masker_pb2.ProtectResponse:
        self.attempts += 1
        return masker_pb2.ProtectResponse(image=common_pb2.Image(data=encode(NOISE)))


@pytest.fixture()
def small_limit_server() -> Iterator[tuple[str, BigReplyMasker]]:
    """A server whose send limit (4 KB) is below its replies: gRPC itself refuses to send them."""
    servicer = BigReplyMasker()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2),
        options=[("grpc.max_send_message_length", 4096)],
    )
    masker_pb2_grpc.add_MaskerServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", servicer
    server.stop(0)


def test_sdk_does_not_retry_grpcs_own_oversize_error(
    small_limit_server: tuple[str, BigReplyMasker],
) -> None:
    address, servicer = small_limit_server
    with Client(address, retries=RETRIES) as client, pytest.raises(ResourceExhaustedError) as info:
        client.protect(b"photo")
    assert "larger than max" in info.value.message
    assert servicer.attempts == 1


def _servicer(services: Services) -> MaskerServicer:
    servicer = services.masker.spec.load.__self__  # the bound load of the masker's servicer
    assert isinstance(servicer, MaskerServicer)
    return servicer


def _count(services: Services, code: str) -> float:
    value = services.registry.get_sample_value(
        "faceoff_masker_requests_total", {"method": "Protect", "code": code}
    )
    return value or 0.0


def test_masker_refuses_a_reply_over_its_limit_once_naming_the_size(small_masker: Services) -> None:
    servicer = _servicer(small_masker)
    ok, refused = _count(small_masker, "OK"), _count(small_masker, "RESOURCE_EXHAUSTED")
    limit = servicer.max_reply_bytes
    servicer.max_reply_bytes = 2000  # below the protected photo's reply, above any request here
    try:
        with (
            Client(small_masker.masker.address, retries=RETRIES) as client,
            pytest.raises(ResourceExhaustedError) as info,
        ):
            client.protect(SMALL_PHOTO.read_bytes(), **CHEAP)
    finally:
        servicer.max_reply_bytes = limit
    message = info.value.message
    assert "over this server's message limit of" in message and "(2000 bytes" in message
    assert "FACEOFF_MAX_MESSAGE_BYTES" in message
    # The server records a call just after its status went out: wait for it.
    deadline = time.monotonic() + 30
    while _count(small_masker, "RESOURCE_EXHAUSTED") == refused and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # a retry, had there been one, would have been recorded by now
    assert _count(small_masker, "RESOURCE_EXHAUSTED") == refused + 1  # one attempt, not four
    assert _count(small_masker, "OK") == ok  # not counted as a success
