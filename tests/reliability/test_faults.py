"""Faults: a detector that dies and comes back, slow and failing cloud APIs, deadlines, SIGTERM.

- The detector is stopped while clients keep protecting photos: the masker answers UNAVAILABLE
  naming the detector's address, and once a new detector listens on the same port the masker
  protects photos again by itself (its channel reconnects; nothing is restarted).
- Inside Evaluate, a cloud API that answers far too late and one that fails each end in their
  own verdict's error while the local recognisers' verdicts are there.
- A protection's deadline reaches the detector (each Detect arrives with no more time than the
  caller had left), and when it passes the masker stops the attack instead of running on.
- SIGTERM to ``faceoff serve masker`` during a protection: the protection completes, new calls
  are refused, and the process exits 0.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from faceoff.common.settings import ServerSettings
from faceoff.evaluator import server as evaluator_server
from faceoff.evaluator.cloud.credentials import AzureConfig, CloudConfig, FaceppConfig
from faceoff.v1 import common_pb2, evaluator_pb2, evaluator_pb2_grpc, masker_pb2_grpc
from tests.conftest import PHOTOS, LoopThread, free_port
from tests.integration import fakes
from tests.integration.fakes import Canned, FakeCloud
from tests.reliability.conftest import CHEAP, SMALL_PHOTO, Services, protect_request

pytestmark = pytest.mark.slow


def _wait_for(condition: Any, timeout: float, what: str) -> None:
    give_up = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > give_up:
            pytest.fail(f"gave up waiting {timeout:.0f} s for {what}")
        time.sleep(0.05)


# -- (a) the detector dies during a load and comes back -----------------------------------------


class Clients:
    """Two clients protecting photos in a loop, recording ``(time, code, details)`` of every call."""

    def __init__(self, address: str, data: bytes) -> None:
        self.calls: list[tuple[float, str, str]] = []
        self._stop = threading.Event()
        self._channel = grpc.insecure_channel(address)
        stub = masker_pb2_grpc.MaskerStub(self._channel)
        request = protect_request(data, **CHEAP)

        def run() -> None:
            while not self._stop.is_set():
                try:
                    stub.Protect(request, timeout=120)
                    self.calls.append((time.monotonic(), "OK", ""))
                except grpc.RpcError as exc:
                    self.calls.append((time.monotonic(), exc.code().name, exc.details() or ""))
                    time.sleep(0.05)

        self._threads = [threading.Thread(target=run, daemon=True) for _ in range(2)]
        for t in self._threads:
            t.start()

    def count(self, code: str, after: float = 0.0) -> int:
        return sum(1 for t, c, _ in list(self.calls) if c == code and t > after)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=180)
        self._channel.close()


def test_detector_killed_during_load_is_unavailable_naming_it_and_the_masker_recovers_alone(
    small_masker: Services, loop_thread: LoopThread
) -> None:
    clients = Clients(small_masker.masker.address, SMALL_PHOTO.read_bytes())
    try:
        _wait_for(
            lambda: clients.count("OK") >= 2, 300, "protections before the detector goes away"
        )
        killed = time.monotonic()
        loop_thread.run(small_masker.detector.stop(0))
        _wait_for(
            lambda: clients.count("UNAVAILABLE", after=killed) >= 2,
            120,
            "UNAVAILABLE while the detector is away",
        )
        back = time.monotonic()
        small_masker.restart_detector()
        _wait_for(
            lambda: clients.count("OK", after=back) >= 2,
            120,
            "protections after the detector came back",
        )
    finally:
        clients.stop()
    codes = {c for _, c, _ in clients.calls}
    assert codes <= {"OK", "UNAVAILABLE"}, clients.calls
    for _, code, details in clients.calls:
        if code == "UNAVAILABLE":
            assert f"detector at {small_masker.detector_address}" in details, details


def _masker_health(address: str, service: str) -> int:
    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=10
        )
    return int(reply.status)


def test_masker_readiness_follows_its_detector_and_liveness_stays(
    small_masker: Services, loop_thread: LoopThread
) -> None:
    """The masker checks its detector every 5 s: NOT_SERVING after 2 failures, back after one."""
    address = small_masker.masker.address
    serving, not_serving = (
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    )
    assert _masker_health(address, "faceoff.v1.Masker") == serving
    loop_thread.run(small_masker.detector.stop(0))
    try:
        _wait_for(
            lambda: _masker_health(address, "faceoff.v1.Masker") == not_serving,
            60,
            "the masker's readiness to follow its stopped detector",
        )
        assert _masker_health(address, "") == serving, "liveness does not depend on the detector"
    finally:
        small_masker.restart_detector()
    _wait_for(
        lambda: _masker_health(address, "faceoff.v1.Masker") == serving,
        60,
        "the masker's readiness to come back with its detector",
    )


# -- (b) slow and failing cloud APIs inside Evaluate ---------------------------------------------


@pytest.fixture(scope="module")
def cloud() -> Iterator[FakeCloud]:
    server = FakeCloud()
    for photo in sorted(PHOTOS.glob("*/*.jpg")):
        server.register(photo.read_bytes(), photo.parent.name)
    yield server
    server.close()


@pytest.fixture(scope="module")
def evaluator(loop_thread: LoopThread, cloud: FakeCloud) -> Iterator[Any]:
    config = CloudConfig(
        azure=AzureConfig(endpoint=cloud.url, key=fakes.AZURE_KEY),
        facepp=FaceppConfig(key=fakes.FACEPP_KEY, secret=fakes.FACEPP_SECRET, endpoint=cloud.url),
    )
    _, settings = evaluator_server.load_settings(
        env={},
        cloud=config,
        local_recognizers="dlib,sface",
        backend_timeout_seconds=8,
        cloud_max_attempts=2,
        cloud_backoff_seconds=0.01,
        cloud_backoff_max_seconds=0.05,
    )
    server_settings = ServerSettings(host="127.0.0.1", port=0, metrics_port=-1, grace_seconds=1)
    running = loop_thread.run(
        evaluator_server.serve(server_settings, settings, registry=CollectorRegistry())
    )
    loop_thread.run(running.wait_ready(timeout=600))
    yield running
    loop_thread.run(running.stop(0))


def test_a_slow_and_a_failing_cloud_api_fail_alone_inside_evaluate(
    evaluator: Any, cloud: FakeCloud
) -> None:
    cloud.script(
        "azure_detect", *[Canned(200, [], delay=60)] * 8
    )  # answers long after the backend's 8 s
    cloud.script("facepp", *[fakes.facepp_error(500, "BACKEND_ERROR")] * 8)
    bill = sorted((PHOTOS / "bill").glob("*.jpg"))
    request = evaluator_pb2.EvaluateRequest(
        image=common_pb2.Image(data=bill[2].read_bytes()),
        reference_images=[common_pb2.Image(data=p.read_bytes()) for p in (bill[0], bill[3])],
        recognizers=["dlib", "sface", "azure", "facepp"],
    )
    try:
        with grpc.insecure_channel(evaluator.address) as channel:
            # The client's deadline is far beyond the backend timeout: an answer at all (not
            # DEADLINE_EXCEEDED) shows that the slow API did not hold the call.
            response = evaluator_pb2_grpc.EvaluatorStub(channel).Evaluate(request, timeout=120)
    finally:
        cloud.reset()
    verdicts = {v.recognizer: v for v in response.verdicts}
    assert [v.recognizer for v in response.verdicts] == ["dlib", "sface", "azure", "facepp"]
    for name in ("dlib", "sface"):
        v = verdicts[name]
        assert v.configured and not v.error and v.verified and v.match, (name, v.error)
    azure, facepp = verdicts["azure"], verdicts["facepp"]
    assert (
        azure.configured
        and azure.error_kind in ("timeout", "unavailable")
        and "azure" in azure.error
    )
    assert not azure.verified
    assert (
        facepp.configured and facepp.error_kind == "unavailable" and "server error" in facepp.error
    )
    assert not facepp.verified


# -- (c) the client's deadline reaches the detector, and an expired protection stops ---------------


def test_deadline_reaches_the_detector_and_an_expired_protection_stops(
    small_masker: Services, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="faceoff.masker.batching")
    bill = sorted((PHOTOS / "bill").glob("*.jpg"))
    small_masker.recorder.remaining.clear()
    deadline = 9.0
    # gRPC sends a deadline as a timeout rounded up: to 10 ms between 1 and 10 s.
    wire_rounding = 0.01
    with grpc.insecure_channel(small_masker.masker.address) as channel:
        stub = masker_pb2_grpc.MaskerStub(channel)
        # 10000 iterations would run for many minutes on this CPU; the stream shows the attack running.
        long = protect_request(
            SMALL_PHOTO.read_bytes(), (bill[0].read_bytes(),), profile="low", iterations=10_000
        )
        attacking = False
        with pytest.raises(grpc.RpcError) as info:
            for event in stub.ProtectStream(long, timeout=deadline):
                attacking = attacking or (
                    event.progress.stage == "attack" and event.progress.iteration > 0
                )
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert attacking, "the deadline passed before the attack started; nothing to stop"
        remaining = list(small_masker.recorder.remaining)
        assert len(remaining) == 2, "one Detect for the photo and one for the reference"
        assert all(r is not None and 0 < r <= deadline + wire_rounding for r in remaining), (
            remaining
        )
        _wait_for(
            lambda: any("stopped an attack" in r.getMessage() for r in caplog.records),
            120,
            "the masker to stop the attack of the expired request",
        )
        # The one attack worker is free again: a cheap protection does not wait behind the long one.
        assert stub.Protect(protect_request(SMALL_PHOTO.read_bytes(), **CHEAP), timeout=120).faces


# -- (d) SIGTERM during a protection -------------------------------------------------------------


def _health(address: str) -> int | None:
    """The masker's health status, or None when the server refuses the call."""
    with grpc.insecure_channel(address) as channel:
        try:
            return (
                health_pb2_grpc.HealthStub(channel)
                .Check(health_pb2.HealthCheckRequest(service="faceoff.v1.Masker"), timeout=5)
                .status
            )
        except grpc.RpcError:
            return None


def test_sigterm_finishes_the_protection_in_flight_refuses_new_calls_and_exits_0(
    small_masker: Services, tmp_path: Path
) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "FACEOFF_GRACE_SECONDS": "120"}
    log = (tmp_path / "masker.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "faceoff.cli",
            "serve",
            "masker",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--metrics-port",
            "-1",
            "--detector",
            small_masker.detector_address,
            "--log-level",
            "INFO",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        _wait_for(
            lambda: (
                proc.poll() is not None
                or _health(address) == health_pb2.HealthCheckResponse.SERVING
            ),
            600,
            "faceoff serve masker to turn SERVING",
        )
        assert proc.poll() is None, (tmp_path / "masker.log").read_text()[-3000:]
        with grpc.insecure_channel(address) as channel:
            stream = masker_pb2_grpc.MaskerStub(channel).ProtectStream(
                protect_request(SMALL_PHOTO.read_bytes(), profile="low", iterations=40, seed=0),
                timeout=600,
            )
            events = iter(stream)
            for event in events:  # until the attack is under way (its first compiled chunk has run)
                if (
                    event.WhichOneof("event") == "progress"
                    and event.progress.stage == "attack"
                    and event.progress.iteration
                ):
                    break
            else:
                pytest.fail("the stream ended before the attack started")
            proc.send_signal(signal.SIGTERM)
            _wait_for(
                lambda: _health(address) is None, 60, "the draining server to stop taking calls"
            )
            with pytest.raises(grpc.RpcError) as refused:
                with grpc.insecure_channel(address) as fresh:
                    masker_pb2_grpc.MaskerStub(fresh).Protect(
                        protect_request(SMALL_PHOTO.read_bytes(), **CHEAP), timeout=30
                    )
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            rest = list(events)  # the protection in flight goes on to its result
        assert rest and rest[-1].WhichOneof("event") == "result" and len(rest[-1].result.faces) == 1
        attack = [
            e.progress.iteration
            for e in rest
            if e.WhichOneof("event") == "progress" and e.progress.stage == "attack"
        ]
        assert attack and attack[-1] == 40, "the attack ran to its end after SIGTERM"
        assert proc.wait(timeout=180) == 0, (tmp_path / "masker.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
