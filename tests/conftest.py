"""Shared fixtures: paths to ../shared data, synthetic photos, and real servers on free ports.

Servers run on a background asyncio loop (one per server) and tests talk to them over real
channels; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import functools
import io
import os
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The suite starts about fifteen maskers (in this process and as children, which inherit it): each
# traces only the attacks its tests ask for instead of every profile's at start (about 25 s a
# masker on 2 cores). Results do not depend on it (FACEOFF_WARM_UP in docs/operations.md).
os.environ.setdefault("FACEOFF_WARM_UP", "off")

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FACEOFF_SHARED_DIR", REPO.parent / "shared"))
CELEBS = SHARED / "data" / "faceoff-celebs"
PHOTOS = CELEBS / "photos"
ALIGNED = CELEBS / "aligned160"


def cached_model_file(name: str) -> Path:
    """The model cache's file of asset ``name``; skips the test, saying so, when not fetched."""
    from faceoff.common import assets

    file = assets.default_cache_dir() / assets.ASSETS[name].filename
    if not file.exists():
        pytest.skip(f"{file} is not in the model cache; run `faceoff models fetch`")
    return file


@functools.cache
def _aligned_crops() -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for label, folder in enumerate(sorted(p for p in ALIGNED.iterdir() if p.is_dir())):
        for png in sorted(folder.glob("*.png")):
            images.append(np.asarray(Image.open(png).convert("RGB"), dtype=np.float32) / 255.0)
            labels.append(label)
    return np.stack(images), np.asarray(labels)


def aligned_crops() -> tuple[np.ndarray, np.ndarray]:
    """The 90 shared 160 px crops in [0, 1] and their identities (read once per process)."""
    if not ALIGNED.is_dir():
        pytest.skip(f"{ALIGNED} not found")
    images, labels = _aligned_crops()
    return images.copy(), labels.copy()


def celeb_photos() -> list[Path]:
    """The 50 full photos of the shared set (sorted)."""
    return sorted(PHOTOS.glob("*/*.jpg"))


@pytest.fixture(scope="session")
def protector() -> Any:
    """The masker's :class:`~faceoff.masker.protection.Protector` (FaceNet loaded), once per test
    worker: the files that attack real surrogates share it, as the masker's requests do."""
    from faceoff.masker.protection import Protector

    return Protector()


@pytest.fixture(scope="session")
def detector() -> Any:
    """The MTCNN :class:`~faceoff.detector.detection.FaceDetector`, once per test worker."""
    from faceoff.detector.detection import FaceDetector

    return FaceDetector()


@pytest.fixture(scope="session")
def shared_photos() -> list[Path]:
    photos = celeb_photos()
    if not photos:
        pytest.fail(f"the shared photo set is missing at {PHOTOS}")
    return photos


def encode(pixels: np.ndarray, fmt: str = "PNG", **kwargs: Any) -> bytes:
    """Encode an array with Pillow, in memory."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt, **kwargs)
    return buf.getvalue()


class LoopThread:
    """An asyncio loop on a daemon thread, to run async servers under synchronous tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float | None = 300) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


def start_service(
    loop_thread: LoopThread, serve: Callable[[], Coroutine[Any, Any, Any]], wait: bool = True
) -> Any:
    """Start a server with ``serve()`` on the loop thread; wait until its models are loaded."""
    running = loop_thread.run(serve())
    if wait:
        loop_thread.run(running.wait_ready(timeout=600))
    return running


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape_metrics(port: int) -> str:
    """The text of a server's Prometheus ``/metrics`` page."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of sample ``name{labels}`` in a metrics page (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(name + "{"):
            body = line[len(name) + 1 : line.index("}")]
            if ",".join(sorted(body.split(","))) == want:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def serve_until_serving_then_drain(
    command: list[str], service: str, port: int, env: dict[str, str]
) -> str:
    """Run a ``faceoff serve ...`` command, wait for health SERVING, SIGTERM it; return its log.

    Asserts that it turns SERVING within 5 minutes and exits 0 after draining.
    """
    import signal
    import subprocess
    import time

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 300
        status = None
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                try:
                    status = stub.Check(
                        health_pb2.HealthCheckRequest(service=service), timeout=2
                    ).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError:
                    pass
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                time.sleep(0.5)
        assert status == health_pb2.HealthCheckResponse.SERVING
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        return proc.stdout.read() if proc.stdout else ""
    finally:
        if proc.poll() is None:
            proc.kill()


class ServeAll:
    """``faceoff serve all --free-ports`` in a child process: the three real services, for a test module.

    Its log goes to a file (a full pipe would block it); ``addresses`` comes from the JSON line
    it prints once all three are SERVING. :meth:`stop` sends SIGTERM and returns its exit code.
    """

    def __init__(self, log_path: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        import json
        import queue
        import subprocess
        import sys

        env = {
            **os.environ,
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "FACEOFF_GRACE_SECONDS": "2",
            **(env or {}),
        }
        self._log = log_path.open("w")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "faceoff.cli",
                "serve",
                "all",
                "--free-ports",
                "--log-level",
                "WARNING",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=env,
        )
        lines: queue.Queue[str | None] = queue.Queue()

        def read() -> None:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=read, daemon=True).start()
        self.info: dict[str, Any] = {}
        while not self.info:
            try:
                line = lines.get(timeout=600)
            except queue.Empty:
                line = None
            if line is None:
                self.stop()
                pytest.fail(
                    f"faceoff serve all did not come up; its log: {log_path.read_text()[-3000:]}"
                )
            if line.startswith("{"):
                self.info = json.loads(line)

    def address(self, service: str) -> str:
        """``host:port`` of ``detector``, ``masker`` or ``evaluator``."""
        return str(self.info[service]["address"])

    def stop(self, sig: int | None = None) -> int:
        """Send ``sig`` (default SIGTERM; SIGINT is Ctrl-C), wait for the drain, return the exit code."""
        import signal

        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM if sig is None else sig)
        code = self.process.wait(timeout=120)
        self._log.close()
        return code


#: Bit-exact kernels for served stacks and subprocesses whose bytes tests compare (README
#: "Reproducible results").
DETERMINISTIC = {"FACEOFF_DETERMINISTIC": "1"}

#: The test files that use the one ``faceoff serve all`` of a test run (:func:`serve_all`). Under
#: ``--dist loadfile`` they are one work unit (:func:`pytest_xdist_make_scheduler`), so the stack
#: starts once per run, on the worker that runs them.
SERVE_ALL_FILES = ("tests/e2e/test_cli_batch.py", "tests/integration/test_sdk.py")


@pytest.hookimpl(optionalhook=True)  # the SDK's own venv (./dev test-sdk) has no xdist
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadfile`` with :data:`SERVE_ALL_FILES` as one unit; other modes as xdist makes them."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class ServeAllOnce(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            return SERVE_ALL_FILES[0] if scope in SERVE_ALL_FILES else scope

    return ServeAllOnce(config, log)


@pytest.fixture(scope="session")
def serve_all(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeAll]:
    """The test run's ``faceoff serve all``, with bit-exact kernels (``FACEOFF_DETERMINISTIC=1``;
    tests compare the bytes of two protections). A test may kill its children (the supervisor
    starts them again) but not stop it: at the end, Ctrl-C and then SIGTERM during the drain must
    drain the three services and exit 0 (both signals handled, the second not cutting the drain)."""
    import signal
    import time

    log = tmp_path_factory.mktemp("serve-all") / "log.txt"
    services = ServeAll(log, env=DETERMINISTIC)
    yield services
    assert services.process.poll() is None, "a test stopped the shared serve all"
    services.process.send_signal(signal.SIGINT)
    time.sleep(0.5)
    code = services.stop(signal.SIGTERM)
    text = log.read_text()
    assert code == 0 and "SIGINT: draining" in text and "stopped" in text, text[-3000:]
