"""Security: TLS, mutual TLS, bearer tokens and per-client rate limits, on real servers.

Certificates are made at test time (``tls_material.py``). Most checks run against detectors (cheap
to load); the masker is used only where the masker -> detector channel is the subject. Three
detectors run for the module: TLS only; mutual TLS plus tokens; plaintext with tokens and a rate
limit of one request per 100 s after a burst of 3 (so no refill can happen during the test, on
any machine).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import CollectorRegistry

from faceoff.cli import serve_all
from faceoff.common import security
from faceoff.common.interceptors import TokenBuckets
from faceoff.common.settings import ServerSettings, SettingsError, from_env
from faceoff.detector import server as detector_server
from faceoff.masker import server as masker_server
from faceoff.sdk import (
    AsyncClient,
    Client,
    ResourceExhaustedError,
    TLSConfig,
    UnauthenticatedError,
    UnavailableError,
)
from faceoff.v1 import common_pb2, detector_pb2, detector_pb2_grpc
from tests.conftest import (
    PHOTOS,
    REPO,
    LoopThread,
    encode,
    metric_value,
    scrape_metrics,
    start_service,
)
from tests.reliability.tls_material import TLSMaterial, make_tls_material

ALICE = "alice-0123456789abcdef0123456789"
BOB = "bob-fedcba9876543210fedcba9876543"
WRONG = "mallory-00000000000000000000000000"
PHOTO = encode(np.full((64, 64, 3), 90, np.uint8))  # no face: the detector answers quickly
DETECTOR = "faceoff.v1.Detector"


def _server(**overrides: Any) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": 0, "metrics_port": -1, "grace_seconds": 0, **overrides}


def _start_detector(loop_thread: LoopThread, **overrides: Any) -> Any:
    server_settings, settings = detector_server.load_settings(env={}, **_server(**overrides))
    return start_service(
        loop_thread,
        lambda: detector_server.serve(server_settings, settings, registry=CollectorRegistry()),
    )


def _health(address: str, credentials: grpc.ChannelCredentials | None = None) -> int:
    channel = (
        grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address)
    )
    with channel:
        return (
            health_pb2_grpc.HealthStub(channel)
            .Check(health_pb2.HealthCheckRequest(service=DETECTOR), timeout=10)
            .status
        )


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSMaterial:
    return make_tls_material(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tokens_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tokens") / "tokens"
    path.write_text(f"# who may call\nalice:{ALICE}\n\nbob:{BOB}\n")
    return path


@pytest.fixture(scope="module")
def alice_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("client") / "token"
    path.write_text(f"# the masker's token\n{ALICE}\n")
    return path


@pytest.fixture(scope="module")
def tls_detector(loop_thread: LoopThread, tls: TLSMaterial) -> Iterator[Any]:
    running = _start_detector(
        loop_thread, tls_cert=str(tls.server_cert), tls_key=str(tls.server_key)
    )
    yield running
    loop_thread.run(running.stop(0))


@pytest.fixture(scope="module")
def mtls_detector(loop_thread: LoopThread, tls: TLSMaterial, tokens_file: Path) -> Iterator[Any]:
    running = _start_detector(
        loop_thread,
        metrics_port=0,
        tls_cert=str(tls.server_cert),
        tls_key=str(tls.server_key),
        tls_client_ca=str(tls.ca),
        auth_tokens_file=str(tokens_file),
    )
    yield running
    loop_thread.run(running.stop(0))


@pytest.fixture(scope="module")
def limited_detector(loop_thread: LoopThread, tokens_file: Path) -> Iterator[Any]:
    running = _start_detector(
        loop_thread,
        metrics_port=0,
        auth_tokens_file=str(tokens_file),
        rate_limit_per_client=0.01,
        rate_limit_burst=3,
    )
    yield running
    loop_thread.run(running.stop(0))


def _client(address: str, **kwargs: Any) -> Client:
    return Client(address, timeout=120, retries=0, **kwargs)


def _mtls(tls: TLSMaterial) -> TLSConfig:
    return TLSConfig(ca=tls.ca, cert=tls.client_cert, key=tls.client_key)


# ---- TLS ---------------------------------------------------------------------------------------


def test_tls_client_trusting_the_ca_detects(tls_detector: Any, tls: TLSMaterial) -> None:
    with _client(tls_detector.address, tls=TLSConfig(ca=tls.ca)) as client:
        assert client.detect(PHOTO).width == 64
    assert (
        _health(tls_detector.address, grpc.ssl_channel_credentials(tls.ca.read_bytes()))
        == health_pb2.HealthCheckResponse.SERVING
    )


def test_plaintext_client_to_tls_server_fails(tls_detector: Any) -> None:
    with _client(tls_detector.address) as client, pytest.raises(UnavailableError) as info:
        client.detect(PHOTO)
    assert tls_detector.address in info.value.message
    with pytest.raises(grpc.RpcError) as raw:
        _health(tls_detector.address)
    assert raw.value.code() == grpc.StatusCode.UNAVAILABLE


def test_client_refuses_a_server_its_ca_did_not_sign(tls_detector: Any, tls: TLSMaterial) -> None:
    with (
        _client(tls_detector.address, tls=TLSConfig(ca=tls.other_ca)) as client,
        pytest.raises(UnavailableError),
    ):
        client.detect(PHOTO)


# ---- mutual TLS --------------------------------------------------------------------------------


def test_mtls_refuses_a_client_without_a_certificate(mtls_detector: Any, tls: TLSMaterial) -> None:
    with _client(mtls_detector.address, tls=TLSConfig(ca=tls.ca), token=ALICE) as client:
        with pytest.raises(UnavailableError):
            client.detect(PHOTO)


def test_mtls_refuses_a_certificate_from_another_ca(mtls_detector: Any, tls: TLSMaterial) -> None:
    wrong = TLSConfig(ca=tls.ca, cert=tls.other_client_cert, key=tls.other_client_key)
    with (
        _client(mtls_detector.address, tls=wrong, token=ALICE) as client,
        pytest.raises(UnavailableError),
    ):
        client.detect(PHOTO)


def test_mtls_accepts_a_certificate_from_its_ca(mtls_detector: Any, tls: TLSMaterial) -> None:
    with _client(mtls_detector.address, tls=_mtls(tls), token=ALICE) as client:
        assert client.detect(PHOTO).width == 64


# ---- bearer tokens -----------------------------------------------------------------------------


def test_missing_token_is_unauthenticated_with_what_is_expected(
    mtls_detector: Any, tls: TLSMaterial
) -> None:
    before = metric_value(
        scrape_metrics(mtls_detector.metrics_port),
        "faceoff_detector_auth_refusals_total",
        reason="missing",
    )
    with (
        _client(mtls_detector.address, tls=_mtls(tls)) as client,
        pytest.raises(UnauthenticatedError) as info,
    ):
        client.detect(PHOTO)
    assert "missing bearer token" in info.value.message
    assert "authorization: Bearer <token>" in info.value.message
    # the server records a call once it has finished, which can be just after the client saw it
    deadline = time.monotonic() + 10
    while True:
        page = scrape_metrics(mtls_detector.metrics_port)
        finished = metric_value(
            page, "faceoff_detector_requests_total", method="Detect", code="UNAUTHENTICATED"
        )
        if finished >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert (
        metric_value(page, "faceoff_detector_auth_refusals_total", reason="missing") == before + 1
    )
    assert finished >= 1


def test_wrong_token_is_unauthenticated_and_never_echoed(
    mtls_detector: Any, tls: TLSMaterial
) -> None:
    with (
        _client(mtls_detector.address, tls=_mtls(tls), token=WRONG) as client,
        pytest.raises(UnauthenticatedError) as info,
    ):
        client.detect(PHOTO)
    assert "invalid bearer token" in info.value.message
    assert WRONG not in info.value.message and "mallory" not in info.value.message
    # A prefix of a real token, or a real token with a character more, is no token.
    for near in (ALICE[:-1], ALICE + "x"):
        with (
            _client(mtls_detector.address, tls=_mtls(tls), token=near) as client,
            pytest.raises(UnauthenticatedError),
        ):
            client.detect(PHOTO)
    assert (
        metric_value(
            scrape_metrics(mtls_detector.metrics_port),
            "faceoff_detector_auth_refusals_total",
            reason="invalid",
        )
        >= 3
    )


def test_malformed_authorization_is_unauthenticated(mtls_detector: Any, tls: TLSMaterial) -> None:
    creds = grpc.ssl_channel_credentials(
        tls.ca.read_bytes(), tls.client_key.read_bytes(), tls.client_cert.read_bytes()
    )
    with grpc.secure_channel(mtls_detector.address, creds) as channel:
        stub = detector_pb2_grpc.DetectorStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Detect(
                detector_pb2.DetectRequest(image=common_pb2.Image(data=PHOTO)),
                timeout=20,
                metadata=(("authorization", f"Basic {ALICE}"),),
            )
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "expected 'authorization: Bearer <token>'" in info.value.details()
    assert ALICE not in info.value.details()


def test_second_token_works_and_health_needs_none(mtls_detector: Any, tls: TLSMaterial) -> None:
    with _client(mtls_detector.address, tls=_mtls(tls), token=BOB) as client:
        assert client.detect(PHOTO).width == 64
    creds = grpc.ssl_channel_credentials(
        tls.ca.read_bytes(), tls.client_key.read_bytes(), tls.client_cert.read_bytes()
    )
    assert _health(mtls_detector.address, creds) == health_pb2.HealthCheckResponse.SERVING


def test_reflection_needs_a_token(mtls_detector: Any, tls: TLSMaterial) -> None:
    creds = grpc.ssl_channel_credentials(
        tls.ca.read_bytes(), tls.client_key.read_bytes(), tls.client_cert.read_bytes()
    )
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    with grpc.secure_channel(mtls_detector.address, creds) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            list(stub.ServerReflectionInfo(iter([request]), timeout=20))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        replies = list(
            stub.ServerReflectionInfo(
                iter([request]), timeout=20, metadata=(("authorization", f"Bearer {ALICE}"),)
            )
        )
    names = {s.name for s in replies[0].list_services_response.service}
    assert DETECTOR in names


def test_async_client_over_mtls_with_and_without_a_token(
    mtls_detector: Any, tls: TLSMaterial
) -> None:
    import asyncio

    async def detect(token: str | None) -> int:
        async with AsyncClient(
            mtls_detector.address, tls=_mtls(tls), token=token, timeout=120, retries=0
        ) as client:
            return (await client.detect(PHOTO)).width

    assert asyncio.run(detect(BOB)) == 64
    with pytest.raises(UnauthenticatedError, match="missing bearer token"):
        asyncio.run(detect(None))


def test_token_table_checks_every_token(monkeypatch: pytest.MonkeyPatch) -> None:
    table = security.TokenTable({"a": "a" * 20, "b": "b" * 30, "c": "c" * 40})
    calls: list[int] = []
    real = security.hmac.compare_digest

    def counting(x: bytes, y: bytes) -> bool:
        calls.append(1)
        return real(x, y)

    monkeypatch.setattr(security.hmac, "compare_digest", counting)
    assert table.match("a" * 20) == "a"
    assert len(calls) == 3  # no early exit on the first token, which matched
    assert (
        table.match("c" * 40) == "c" and table.match("c" * 39) is None and table.match("") is None
    )


# ---- rate limits -------------------------------------------------------------------------------


def test_rate_limit_refuses_past_the_burst_with_a_retry_hint(limited_detector: Any) -> None:
    address = limited_detector.address
    with _client(address, token=ALICE) as alice:
        for _ in range(3):
            assert alice.detect(PHOTO).width == 64
        with pytest.raises(ResourceExhaustedError) as info:
            alice.detect(PHOTO)
    assert (
        "rate limit exceeded: at most 0.01 requests per second per client (bursts of 3)"
        in info.value.message
    )
    assert "retry in" in info.value.message
    with grpc.insecure_channel(address) as channel:
        with pytest.raises(grpc.RpcError) as raw:
            detector_pb2_grpc.DetectorStub(channel).Detect(
                detector_pb2.DetectRequest(image=common_pb2.Image(data=PHOTO)),
                timeout=20,
                metadata=(("authorization", f"Bearer {ALICE}"),),
            )
        assert raw.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        trailing = dict(raw.value.trailing_metadata())
        assert 1 <= int(trailing["retry-after"]) <= 100
        assert 0 < int(trailing["grpc-retry-pushback-ms"]) <= 100_000
        # A health check carries no token: it has its peer address's bucket, not Alice's.
        status = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=DETECTOR), timeout=10
        )
        assert status.status == health_pb2.HealthCheckResponse.SERVING
    # Another client (another token) has its own bucket.
    with _client(address, token=BOB) as bob:
        assert bob.detect(PHOTO).width == 64
    page = scrape_metrics(limited_detector.metrics_port)
    assert metric_value(page, "faceoff_detector_rate_limited_total", method="Detect") >= 2
    assert (
        metric_value(
            page, "faceoff_detector_requests_total", method="Detect", code="RESOURCE_EXHAUSTED"
        )
        >= 2
    )


def test_token_buckets_refill_and_forget_idle_clients() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate=2.0, burst=2, max_clients=3, clock=lambda: now[0])
    assert buckets.take("a") == 0 and buckets.take("a") == 0
    assert buckets.take("a") == pytest.approx(0.5)  # one token comes back every 0.5 s
    now[0] = 0.25
    assert buckets.take("a") == pytest.approx(0.25)
    now[0] = 0.5
    assert buckets.take("a") == 0
    for client in "bcd":
        buckets.take(client)
    assert len(buckets) == 3  # capped: "a", the least recently seen, was dropped
    now[0] = 10.0  # every bucket has refilled: all are forgotten on the next call
    assert buckets.take("e") == 0 and len(buckets) == 1


# ---- settings: files are checked at start, and errors name the variable and the file -------------


def test_settings_errors_name_the_variable_and_the_file(tls: TLSMaterial, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("this is not a certificate\n")
    missing = tmp_path / "missing.pem"
    base = {"FACEOFF_TLS_CERT": str(tls.server_cert), "FACEOFF_TLS_KEY": str(tls.server_key)}
    cases = [
        (
            {**base, "FACEOFF_TLS_CERT": str(missing)},
            ["FACEOFF_TLS_CERT", str(missing), "cannot read"],
        ),
        (
            {**base, "FACEOFF_TLS_CERT": str(garbage)},
            ["FACEOFF_TLS_CERT", str(garbage), "not a PEM certificate"],
        ),
        (
            {**base, "FACEOFF_TLS_KEY": str(garbage)},
            ["FACEOFF_TLS_KEY", str(garbage), "private key"],
        ),
        (
            {**base, "FACEOFF_TLS_KEY": str(tls.client_key)},
            ["FACEOFF_TLS_KEY", "is not the private key of"],
        ),
        ({**base, "FACEOFF_TLS_CLIENT_CA": str(garbage)}, ["FACEOFF_TLS_CLIENT_CA", str(garbage)]),
        (
            {"FACEOFF_TLS_CERT": str(tls.server_cert)},
            ["FACEOFF_TLS_CERT and FACEOFF_TLS_KEY go together"],
        ),
        (
            {"FACEOFF_TLS_CLIENT_CA": str(tls.ca)},
            ["FACEOFF_TLS_CLIENT_CA", "needs FACEOFF_TLS_CERT"],
        ),
        ({"FACEOFF_AUTH_TOKENS_FILE": str(missing)}, ["FACEOFF_AUTH_TOKENS_FILE", str(missing)]),
        ({"FACEOFF_RATE_LIMIT_PER_CLIENT": "-1"}, ["FACEOFF_RATE_LIMIT_PER_CLIENT"]),
        ({"FACEOFF_RATE_LIMIT_BURST": "0"}, ["FACEOFF_RATE_LIMIT_BURST"]),
    ]
    for env, words in cases:
        with pytest.raises(SettingsError) as info:
            from_env(ServerSettings, env)
        for word in words:
            assert word in str(info.value), (env, str(info.value))
    assert from_env(
        ServerSettings, {**base, "FACEOFF_TLS_CLIENT_CA": str(tls.ca)}
    ).tls_client_ca == str(tls.ca)


def test_token_file_errors_never_show_a_token(tmp_path: Path) -> None:
    cases = {
        "empty": ("# nothing here\n\n", "holds no token"),
        "short": ("alice:short-secret\n", "at least 16 characters"),
        "twice": (f"alice:{ALICE}\nalice:{BOB}\n", "used twice"),
        "badname": (f"al ice:{ALICE}\n", "the name must be"),
    }
    for name, (text, words) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(SettingsError) as info:
            from_env(ServerSettings, {"FACEOFF_AUTH_TOKENS_FILE": str(path)})
        message = str(info.value)
        assert words in message and "FACEOFF_AUTH_TOKENS_FILE" in message and str(path) in message
        assert "short-secret" not in message and ALICE not in message and BOB not in message
    assert security.read_tokens("X", str(_write(tmp_path / "ok", f"{ALICE}\nbob:{BOB}\n"))) == {
        "token-1": ALICE,
        "bob": BOB,
    }


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_masker_detector_client_settings_are_checked(
    tls: TLSMaterial, tokens_file: Path, tmp_path: Path
) -> None:
    garbage = _write(
        tmp_path / "garbage.pem",
        "-----BEGIN CERTIFICATE-----\nbm9wZQ==\n-----END CERTIFICATE-----\n",
    )
    cases = [
        (
            {"detector_tls_ca": str(garbage)},
            ["FACEOFF_DETECTOR_TLS_CA", str(garbage), "not a PEM certificate"],
        ),
        (
            {"detector_tls_cert": str(tls.client_cert)},
            ["FACEOFF_DETECTOR_TLS_CERT and FACEOFF_DETECTOR_TLS_KEY go together"],
        ),
        (
            {
                "detector_tls_ca": str(tls.ca),
                "detector_tls_cert": str(tls.client_cert),
                "detector_tls_key": str(tls.server_key),
            },
            ["FACEOFF_DETECTOR_TLS_KEY", "is not the private key of"],
        ),
        (
            {"detector_token_file": str(tokens_file)},
            ["FACEOFF_DETECTOR_TOKEN_FILE", "exactly one token, found 2"],
        ),
    ]
    for overrides, words in cases:
        with pytest.raises(SettingsError) as info:
            masker_server.load_settings(env={}, **overrides)
        for word in words:
            assert word in str(info.value), (overrides, str(info.value))


def test_serve_refuses_a_garbage_certificate_at_start(tmp_path: Path, tls: TLSMaterial) -> None:
    garbage = _write(tmp_path / "cert.pem", "garbage\n")
    env = {**os.environ, "FACEOFF_TLS_KEY": str(tls.server_key)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "faceoff.cli",
            "serve",
            "detector",
            "--port",
            "0",
            "--metrics-port",
            "-1",
            "--tls-cert",
            str(garbage),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 2
    assert "bad setting: FACEOFF_TLS_CERT=" in proc.stderr and str(garbage) in proc.stderr


# ---- faceoff serve all: its health probes dial like the masker ---------------------------------


def test_serve_all_probe_needs_the_client_side_of_tls(
    tls: TLSMaterial, tokens_file: Path, alice_file: Path
) -> None:
    server = {"FACEOFF_TLS_CERT": str(tls.server_cert), "FACEOFF_TLS_KEY": str(tls.server_key)}
    with pytest.raises(SettingsError, match="FACEOFF_DETECTOR_TLS_CA"):
        serve_all.probe_for(server)
    with pytest.raises(SettingsError, match="FACEOFF_DETECTOR_TLS_CERT"):
        serve_all.probe_for(
            {**server, "FACEOFF_TLS_CLIENT_CA": str(tls.ca), "FACEOFF_DETECTOR_TLS_CA": str(tls.ca)}
        )
    with pytest.raises(SettingsError, match="FACEOFF_DETECTOR_TOKEN_FILE"):
        serve_all.probe_for({"FACEOFF_AUTH_TOKENS_FILE": str(tokens_file)})
    assert serve_all.probe_for({}).credentials is None
    assert (
        serve_all.probe_for({**server, "FACEOFF_DETECTOR_TLS_CA": str(tls.ca)}).credentials
        is not None
    )


def test_serve_all_probe_reaches_an_mtls_server(mtls_detector: Any, tls: TLSMaterial) -> None:
    env = {
        "FACEOFF_TLS_CERT": str(tls.server_cert),
        "FACEOFF_TLS_KEY": str(tls.server_key),
        "FACEOFF_TLS_CLIENT_CA": str(tls.ca),
        "FACEOFF_DETECTOR_TLS_CA": str(tls.ca),
        "FACEOFF_DETECTOR_TLS_CERT": str(tls.client_cert),
        "FACEOFF_DETECTOR_TLS_KEY": str(tls.client_key),
    }
    assert serve_all.serving(mtls_detector.address, DETECTOR, serve_all.probe_for(env))
    assert not serve_all.serving(mtls_detector.address, DETECTOR)  # plaintext probe


# ---- masker -> detector over mutual TLS with a token --------------------------------------------


@pytest.fixture(scope="module")
def one_surrogate() -> Iterator[None]:
    """The two maskers of this module share one loaded FaceNet (the detector channel is the subject)."""
    import functools

    from faceoff.faces import models

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(models, "load_surrogate", functools.cache(models.load_surrogate))
        yield


@pytest.fixture(scope="module")
def secure_masker(
    loop_thread: LoopThread,
    mtls_detector: Any,
    tls: TLSMaterial,
    tokens_file: Path,
    alice_file: Path,
    one_surrogate: None,
) -> Iterator[Any]:
    """A masker served over mutual TLS with tokens, calling the mTLS detector with its own certificate."""
    server_settings, settings = masker_server.load_settings(
        env={},
        **_server(
            tls_cert=str(tls.server_cert),
            tls_key=str(tls.server_key),
            tls_client_ca=str(tls.ca),
            auth_tokens_file=str(tokens_file),
        ),
        detector_address=mtls_detector.address,
        detector_tls_ca=str(tls.ca),
        detector_tls_cert=str(tls.client_cert),
        detector_tls_key=str(tls.client_key),
        detector_token_file=str(alice_file),
    )
    running = start_service(
        loop_thread,
        lambda: masker_server.serve(server_settings, settings, registry=CollectorRegistry()),
    )
    yield running
    loop_thread.run(running.stop(0))


def test_masker_protects_through_an_mtls_detector_with_a_token(
    secure_masker: Any, tls: TLSMaterial
) -> None:
    photo = PHOTOS / "taylor" / "taylor_02.jpg"
    with _client(secure_masker.address, tls=_mtls(tls), token=BOB) as client:
        protected = client.protect(photo, iterations=2, seed=1)
    assert protected.faces_found >= 1 and len(protected.faces) >= 1
    assert protected.data != photo.read_bytes()


def test_cli_protect_over_mtls_with_a_token_file(
    secure_masker: Any, tls: TLSMaterial, alice_file: Path, tmp_path: Path
) -> None:
    photo = PHOTOS / "taylor" / "taylor_02.jpg"
    base = [
        sys.executable,
        "-m",
        "faceoff.cli",
        "protect",
        str(photo),
        "--server",
        secure_masker.address,
        "--ca",
        str(tls.ca),
        "--cert",
        str(tls.client_cert),
        "--key",
        str(tls.client_key),
        "--iterations",
        "2",
        "--json",
    ]
    env = {k: v for k, v in os.environ.items() if k != "FACEOFF_TOKEN"}
    ok = subprocess.run(
        [*base, "-o", str(tmp_path / "a.jpg"), "--token-file", str(alice_file)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=REPO,
    )
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "a.jpg").stat().st_size > 0
    # FACEOFF_TOKEN is used without --token-file; a wrong one stops the batch with the server's words.
    refused = subprocess.run(
        [*base, "-o", str(tmp_path / "b.jpg")],
        capture_output=True,
        text=True,
        env={**env, "FACEOFF_TOKEN": WRONG},
        timeout=300,
        cwd=REPO,
    )
    assert refused.returncode == 1
    assert "invalid bearer token" in refused.stdout + refused.stderr
    assert not (tmp_path / "b.jpg").exists()


def test_masker_with_the_wrong_ca_reports_the_detector_unavailable(
    loop_thread: LoopThread,
    mtls_detector: Any,
    tls: TLSMaterial,
    alice_file: Path,
    one_surrogate: None,
) -> None:
    server_settings, settings = masker_server.load_settings(
        env={},
        **_server(),
        detector_address=mtls_detector.address,
        detector_tls_ca=str(tls.other_ca),
        detector_tls_cert=str(tls.client_cert),
        detector_tls_key=str(tls.client_key),
        detector_token_file=str(alice_file),
    )
    running = start_service(
        loop_thread,
        lambda: masker_server.serve(server_settings, settings, registry=CollectorRegistry()),
    )
    try:
        with _client(running.address) as client, pytest.raises(UnavailableError) as info:
            client.protect(PHOTOS / "taylor" / "taylor_02.jpg", iterations=2)
        assert f"the detector at {mtls_detector.address} is unavailable" in info.value.message
    finally:
        loop_thread.run(running.stop(0))
