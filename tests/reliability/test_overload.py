"""Overload: bounded admission with a retry hint, and clients that honour the hint.

- The shared server's concurrency limit refuses past ``max_concurrent_rpcs`` with
  RESOURCE_EXHAUSTED, a message saying when to retry and the trailing metadata
  ``grpc-retry-pushback-ms`` / ``retry-after``; health checks still answer; refusals are counted.
- The masker's attack queue refuses past ``max_queue_faces`` the same way, and forgets a queued
  request whose caller went away.
- A short ``faceoff bench load`` (40 clients, a few seconds) against a real masker with a tiny
  queue and a low RPC limit: only OK and RESOURCE_EXHAUSTED, every refusal with a hint, every
  accepted request completed, and queue and in-flight RPCs never past their bounds.
- The SDK waits what the server's hint says instead of its own backoff, and does not retry when
  the hint says not to.
"""

from __future__ import annotations

import asyncio
import threading
import time
import types
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

import faceoff.sdk._grpc as sdk_grpc
from faceoff.bench import load
from faceoff.common.errors import Overloaded
from faceoff.common.retry_hint import retry_after_from
from faceoff.common.server import ServiceSpec, start_server
from faceoff.common.settings import ServerSettings
from faceoff.sdk import AsyncClient, Client, ResourceExhaustedError, RetryPolicy
from faceoff.v1 import common_pb2, masker_pb2, masker_pb2_grpc
from tests.conftest import LoopThread, encode
from tests.reliability.conftest import (
    CHEAP,
    MAX_CONCURRENT_RPCS,
    MAX_QUEUE_FACES,
    SMALL_PHOTO,
    Services,
    protect_request,
)

PIXELS = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)


def _ok_response() -> masker_pb2.ProtectResponse:
    return masker_pb2.ProtectResponse(
        image=common_pb2.Image(data=encode(PIXELS), format=common_pb2.IMAGE_FORMAT_PNG)
    )


# -- the shared server's concurrency limit ------------------------------------------------------


class SlowMasker(masker_pb2_grpc.MaskerServicer):
    """Holds every Protect until released, so that calls pile up."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = 0

    async def Protect(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> masker_pb2.ProtectResponse:
        self.started += 1
        await self.release.wait()
        return _ok_response()


def test_concurrency_limit_refuses_with_a_retry_hint_and_health_still_answers(
    loop_thread: LoopThread,
) -> None:
    servicer = SlowMasker()
    registry = CollectorRegistry()
    spec = ServiceSpec(
        name="faceoff.v1.Masker",
        namespace="faceoff_masker",
        load=lambda: None,
        register=lambda server: masker_pb2_grpc.add_MaskerServicer_to_server(servicer, server),
    )
    settings = ServerSettings(
        host="127.0.0.1", port=0, metrics_port=-1, grace_seconds=0, max_concurrent_rpcs=2
    )
    running = loop_thread.run(start_server(settings, spec, registry=registry))
    try:
        loop_thread.run(running.wait_ready(timeout=60))
        with grpc.insecure_channel(running.address) as channel:
            stub = masker_pb2_grpc.MaskerStub(channel)
            held = [stub.Protect.future(protect_request(b"x"), timeout=60) for _ in range(2)]
            give_up = time.monotonic() + 30
            while servicer.started < 2 and time.monotonic() < give_up:
                time.sleep(0.01)
            assert servicer.started == 2
            refused = []
            for _ in range(3):
                with pytest.raises(grpc.RpcError) as info:
                    stub.Protect(protect_request(b"x"), timeout=30)
                refused.append(info.value)
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING, (
                "a saturated server must still answer probes"
            )
            loop_thread.loop.call_soon_threadsafe(servicer.release.set)
            assert all(f.result(timeout=30).image.data for f in held)
        for exc in refused:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "limit" in exc.details() and "retry in" in exc.details()
            metadata = dict(exc.trailing_metadata())
            assert int(metadata["grpc-retry-pushback-ms"]) > 0 and int(metadata["retry-after"]) >= 1
        refusals = registry.get_sample_value(
            "faceoff_masker_requests_total", {"method": "Protect", "code": "RESOURCE_EXHAUSTED"}
        )
        assert refusals == 3, "refusals must reach the metrics"
        # Once the held calls finished, the limit admits calls again.
        servicer.release.set()
        with grpc.insecure_channel(running.address) as channel:
            assert (
                masker_pb2_grpc.MaskerStub(channel)
                .Protect(protect_request(b"x"), timeout=30)
                .image.data
            )
    finally:
        loop_thread.run(running.stop(0))


# -- the masker's attack queue ------------------------------------------------------------------


def _job(seed: int = 0) -> Any:
    from faceoff.masker.jobs import Job
    from faceoff.masker.options import resolve

    crops = np.full((1, 160, 160, 3), 0.5, np.float32)
    return Job(
        data=b"",
        photo=None,
        options=resolve("low", seed=seed),
        faces_found=1,
        indices=[0],
        boxes=[(0, 0, 1, 1)],
        regions=[],
        crops=crops,
        user_refs=[np.zeros((1, 512), np.float32)],
        anchors=[],
        others=[],
        targets=[None],
    )


def test_full_queue_refuses_with_a_hint_and_forgets_callers_that_left() -> None:
    from faceoff.masker.batching import AttackBatcher

    release = threading.Event()

    def attack(jobs: Any, progress: Any) -> list[np.ndarray]:
        release.wait(30)
        return [np.zeros_like(j.crops) for j in jobs]

    async def scenario() -> tuple[Overloaded, int, int]:
        batcher = AttackBatcher(attack, max_batch_faces=1, max_wait_seconds=0.0, max_queue_faces=2)
        try:
            running = asyncio.ensure_future(batcher.submit(_job()))
            while batcher.queued_faces:  # the worker took the first job: it is running, not waiting
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            waiting = [asyncio.ensure_future(batcher.submit(_job())) for _ in range(2)]
            await asyncio.sleep(0.05)
            with pytest.raises(Overloaded) as info:
                await batcher.submit(_job())
            with pytest.raises(Overloaded, match="queue is full"):
                batcher.refuse_if_full()  # what the servicer asks before detecting a new request's faces
            full = batcher.queued_faces
            waiting[
                0
            ].cancel()  # that caller went away (deadline passed): its place is free at once
            await asyncio.sleep(0.05)
            after_cancel = batcher.queued_faces
            batcher.refuse_if_full()  # room for one face again
            admitted = asyncio.ensure_future(batcher.submit(_job()))
            release.set()
            await asyncio.gather(running, waiting[1], admitted)
            return info.value, full, after_cancel
        finally:
            release.set()
            await batcher.close()

    refusal, full, after_cancel = asyncio.run(scenario())
    assert full == 2 and after_cancel == 1
    assert (
        refusal.status == "RESOURCE_EXHAUSTED"
        and refusal.retry_after is not None
        and refusal.retry_after > 0
    )
    assert (
        "queue is full" in refusal.message
        and f"retry in {refusal.retry_after:.1f} s" in refusal.message
    )


# -- a short load run against a real masker ------------------------------------------------------


@pytest.mark.slow
def test_short_load_only_ok_or_resource_exhausted_and_every_accepted_request_completes(
    small_masker: Services, loop_thread: LoopThread
) -> None:
    masker, registry = small_masker.masker, small_masker.registry
    samples: list[tuple[float, float]] = []
    stop = threading.Event()

    async def sample() -> None:  # on the server's loop, between its own steps
        while not stop.is_set():
            samples.append(
                (
                    registry.get_sample_value("faceoff_masker_queue_depth") or 0.0,
                    registry.get_sample_value(
                        "faceoff_masker_requests_in_progress", {"method": "Protect"}
                    )
                    or 0.0,
                )
            )
            await asyncio.sleep(0.005)

    sampler = asyncio.run_coroutine_threadsafe(sample(), loop_thread.loop)
    request = load.build_request(
        "protect", SMALL_PHOTO.read_bytes(), CHEAP["profile"], CHEAP["iterations"], CHEAP["seed"]
    )
    try:
        tally, wall = asyncio.run(
            load.run_load(
                masker.address,
                "protect",
                request,
                concurrency=40,
                duration=6.0,
                deadline=120.0,
                distinct_seeds=True,  # each request its own seed, as bench load sends by default
            )
        )
    finally:
        stop.set()
        sampler.result(timeout=10)
    result = load.summarise(
        tally,
        wall,
        target=masker.address,
        rpc="protect",
        concurrency=40,
        duration=6.0,
        deadline=120.0,
        settings={},
    )
    assert set(result["codes"]) <= {"OK", "RESOURCE_EXHAUSTED"}, result["example_messages"]
    assert result["codes"].get("RESOURCE_EXHAUSTED", 0) > 0, (
        f"40 clients must overload {MAX_CONCURRENT_RPCS} RPCs"
    )
    assert result["completed"] > 0
    assert result["every_accepted_completed"] and result["accepted"] == result["completed"]
    assert result["refused_without_retry_hint"] == 0 and all(h > 0 for h in tally.hints)
    assert "retry in" in result["example_messages"]["RESOURCE_EXHAUSTED"]
    assert result["latency_seconds"]["p50"] is not None and result["throughput_per_second"] > 0
    # Memory stays bounded: the attack queue never held more than its capacity (the RPC limit itself is
    # tested exactly above; the in-progress gauge also counts refusals while they are being answered).
    assert samples and max(q for q, _ in samples) <= MAX_QUEUE_FACES
    assert max(r for _, r in samples) >= 2, "the sampler never saw the server busy"


# -- the SDK honours the hint -------------------------------------------------------------------


class HintingMasker(masker_pb2_grpc.MaskerServicer):
    """Refuses with RESOURCE_EXHAUSTED and the given trailing metadata, then answers OK."""

    def __init__(self, refusals: int, trailing: tuple[tuple[str, str], ...]) -> None:
        self.refusals = refusals
        self.trailing = trailing
        self.attempts = 0

    def Protect(self, request: Any, context: grpc.ServicerContext) -> masker_pb2.ProtectResponse:
        self.attempts += 1
        if self.attempts <= self.refusals:
            context.set_trailing_metadata(self.trailing)
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full; retry in 0.25 s")
        return _ok_response()


@pytest.fixture()
def hinting() -> Iterator[Any]:
    servers = []

    def start(refusals: int, trailing: tuple[tuple[str, str], ...]) -> tuple[str, HintingMasker]:
        servicer = HintingMasker(refusals, trailing)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        masker_pb2_grpc.add_MaskerServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}", servicer

    yield start
    for server in servers:
        server.stop(0)


@pytest.fixture()
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """What the SDK's retry loop waits, recorded instead of slept."""
    recorded: list[float] = []

    async def asleep(seconds: float) -> None:
        recorded.append(seconds)

    monkeypatch.setattr(
        sdk_grpc,
        "time",
        types.SimpleNamespace(sleep=recorded.append, monotonic=time.monotonic),
    )
    monkeypatch.setattr(sdk_grpc, "asyncio", types.SimpleNamespace(sleep=asleep))
    return recorded


SLOW_POLICY = RetryPolicy(max_attempts=4, initial_backoff=30.0, max_backoff=60.0)


def test_sdk_waits_the_servers_pushback_instead_of_its_backoff(
    hinting: Any, waits: list[float]
) -> None:
    address, servicer = hinting(2, (("grpc-retry-pushback-ms", "250"), ("retry-after", "1")))
    with Client(address, retries=SLOW_POLICY) as client:
        assert client.protect(b"photo").data
    assert servicer.attempts == 3 and waits == [0.25, 0.25]

    address, servicer = hinting(1, (("grpc-retry-pushback-ms", "400"),))

    async def main() -> bytes:
        async with AsyncClient(address, retries=SLOW_POLICY) as client:
            return (await client.protect(b"photo")).data

    assert asyncio.run(main()) and servicer.attempts == 2 and waits[-1] == 0.4


def test_sdk_reads_retry_after_and_falls_back_to_its_backoff(
    hinting: Any, waits: list[float]
) -> None:
    address, _ = hinting(1, (("retry-after", "2"),))
    with Client(address, retries=SLOW_POLICY) as client:
        client.protect(b"photo")
    address, _ = hinting(1, ())
    with Client(
        address, retries=RetryPolicy(max_attempts=2, initial_backoff=0.01, max_backoff=0.01)
    ) as client:
        client.protect(b"photo")
    assert waits[0] == 2.0 and 0 <= waits[1] <= 0.01


def test_sdk_does_not_retry_when_the_pushback_says_not_to(hinting: Any, waits: list[float]) -> None:
    address, servicer = hinting(5, (("grpc-retry-pushback-ms", "-1"),))
    with (
        Client(address, retries=SLOW_POLICY) as client,
        pytest.raises(ResourceExhaustedError) as info,
    ):
        client.protect(b"photo")
    assert servicer.attempts == 1 and waits == []
    assert info.value.retry_after is None, "a server that asks for no retry gives no wait"


def test_sdk_errors_carry_the_servers_retry_hint(hinting: Any, waits: list[float]) -> None:
    address, _ = hinting(5, (("grpc-retry-pushback-ms", "1500"), ("retry-after", "2")))
    with (
        Client(address, retries=RetryPolicy(max_attempts=1)) as client,
        pytest.raises(ResourceExhaustedError) as info,
    ):
        client.protect(b"photo")
    assert info.value.retry_after == 1.5 and info.value.code == "RESOURCE_EXHAUSTED"


def test_retry_hint_metadata_round_trips() -> None:
    from faceoff.common.retry_hint import retry_metadata

    assert retry_metadata(2.5) == (("grpc-retry-pushback-ms", "2500"), ("retry-after", "3"))
    assert retry_after_from(retry_metadata(2.5)) == 2.5
    assert retry_after_from((("retry-after", "4"),)) == 4.0
    assert retry_after_from((("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT"),)) is None
    assert retry_after_from(()) is None and retry_after_from(None) is None


def test_bench_load_only_targets_this_machine(capsys: pytest.CaptureFixture[str]) -> None:
    from faceoff.cli import build_parser

    for target in ("127.0.0.1:50052", "127.9.9.9:1", "localhost:50052", "[::1]:50052"):
        load.check_loopback(target)
    for target, why in (
        ("10.1.2.3:50052", "not loopback"),
        ("192.168.0.7:80", "not loopback"),
        ("127.0.0.1", "HOST:PORT"),
        ("127.0.0.1:port", "HOST:PORT"),
    ):
        with pytest.raises(load.LoadError, match=why):
            load.check_loopback(target)
    args = build_parser().parse_args(
        ["bench", "load", "--target", "10.1.2.3:50052", "--duration", "1"]
    )
    assert load.main(args) == 2
    err = capsys.readouterr().err
    assert "10.1.2.3" in err and "only runs against this machine" in err


def test_bench_load_takes_one_concurrency_or_a_sweep_and_names_a_bad_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from faceoff.bench import load
    from faceoff.cli.main import build_parser

    assert load.parse_levels("8") == [8] and load.parse_levels("1,4,8") == [1, 4, 8]
    for bad in ("0", "1,x", "", "4,20000"):
        with pytest.raises(load.LoadError, match="--concurrency must be 1..10000"):
            load.parse_levels(bad)
    args = build_parser().parse_args(["bench", "load", "--concurrency", "1,0", "--duration", "1"])
    assert load.main(args) == 2
    assert "got '1,0'" in capsys.readouterr().err
    args = build_parser().parse_args(["bench", "load", "--seed", "-1", "--duration", "1"])
    assert load.main(args) == 2
    assert "--seed must be in 0..2^63-1, got -1" in capsys.readouterr().err
    assert build_parser().parse_args(["bench", "load"]).seeds == "distinct"
