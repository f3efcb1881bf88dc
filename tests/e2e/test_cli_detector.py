"""The command line as a person uses it: ``faceoff detect`` and ``faceoff serve detector``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

FACEOFF = [sys.executable, "-m", "faceoff.cli"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def test_detect_json(shared_photos: list[Path]) -> None:
    photo = shared_photos[-1]
    out = subprocess.run([*FACEOFF, "detect", str(photo), "--json"], capture_output=True, text=True, env=ENV, timeout=300)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert set(doc) == {"width", "height", "faces"}
    face = doc["faces"][0]
    assert len(face["box"]) == 4 and 0.9 <= face["confidence"] <= 1.0
    assert set(face["landmarks"]) == {"left_eye", "right_eye", "nose", "mouth_left", "mouth_right"}


def test_detect_bad_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a photo")
    out = subprocess.run([*FACEOFF, "detect", str(bad)], capture_output=True, text=True, env=ENV, timeout=300)
    assert out.returncode == 2
    assert "not an image" in out.stderr and "Traceback" not in out.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_detector_drains_on_sigterm() -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [*FACEOFF, "serve", "detector", "--host", "127.0.0.1", "--port", str(port), "--metrics-port", "-1"],
        env={**ENV, "FACEOFF_GRACE_SECONDS": "2"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 300
        status = None
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                try:
                    status = stub.Check(health_pb2.HealthCheckRequest(service="faceoff.v1.Detector"), timeout=2).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError:
                    pass
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                time.sleep(0.5)
        assert status == health_pb2.HealthCheckResponse.SERVING
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        log = proc.stdout.read() if proc.stdout else ""
        assert "draining" in log and "stopped" in log
    finally:
        if proc.poll() is None:
            proc.kill()
