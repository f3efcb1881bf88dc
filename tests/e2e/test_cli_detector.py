"""The command line as a person uses it: ``faceoff detect`` and ``faceoff serve detector``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import free_port, serve_until_serving_then_drain

FACEOFF = [sys.executable, "-m", "faceoff.cli"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def test_detect_json(shared_photos: list[Path]) -> None:
    photo = shared_photos[-1]
    out = subprocess.run(
        [*FACEOFF, "detect", str(photo), "--json"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert set(doc) == {"width", "height", "faces"}
    face = doc["faces"][0]
    assert len(face["box"]) == 4 and 0.9 <= face["confidence"] <= 1.0
    assert set(face["landmarks"]) == {"left_eye", "right_eye", "nose", "mouth_left", "mouth_right"}


def test_detect_bad_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a photo")
    out = subprocess.run(
        [*FACEOFF, "detect", str(bad)], capture_output=True, text=True, env=ENV, timeout=300
    )
    assert out.returncode == 2
    assert "not an image" in out.stderr and "Traceback" not in out.stderr


def test_serve_detector_drains_on_sigterm() -> None:
    port = free_port()
    log = serve_until_serving_then_drain(
        [
            *FACEOFF,
            "serve",
            "detector",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--metrics-port",
            "-1",
        ],
        "faceoff.v1.Detector",
        port,
        {**ENV, "FACEOFF_GRACE_SECONDS": "2"},
    )
    assert "draining" in log and "stopped" in log


def test_serve_detector_logs_json_lines_with_the_request_id() -> None:
    """``--log-format json``: every line on stderr is one JSON object, native libraries' too."""
    import signal
    import time

    import grpc

    from faceoff.v1 import common_pb2, detector_pb2, detector_pb2_grpc

    port = free_port()
    proc = subprocess.Popen(
        [*FACEOFF, "serve", "detector", "--host", "127.0.0.1", "--port", str(port)]
        + ["--metrics-port", "-1", "--log-format", "json"],
        env={**ENV, "FACEOFF_GRACE_SECONDS": "1", "TF_CPP_MIN_LOG_LEVEL": "0"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        request = detector_pb2.DetectRequest(image=common_pb2.Image(data=b"not a photo"))
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = detector_pb2_grpc.DetectorStub(channel)
            deadline = time.monotonic() + 300
            while True:
                try:
                    stub.Detect(request, timeout=5, metadata=(("x-request-id", "json-log-1"),))
                except grpc.RpcError as exc:
                    if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                        break
                    assert time.monotonic() < deadline and proc.poll() is None, exc
                    time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = [line for line in err.splitlines() if line.strip()]
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON line: {line[:200]!r}") from None
    assert all(r["service"] == "detector" and r["time"].endswith("Z") for r in records)
    access = [r for r in records if r["logger"] == "faceoff.access"]
    assert any(
        r.get("request_id") == "json-log-1"
        and r.get("code") == "INVALID_ARGUMENT"
        and r.get("method") == "/faceoff.v1.Detector/Detect"
        and r.get("duration_seconds", -1) >= 0
        for r in access
    ), access
    assert any("stopped" in r["message"] for r in records)
    # TensorFlow's C++ start-up lines (TF_CPP_MIN_LOG_LEVEL=0) came through the native pipe
    assert any(r["logger"] == "native" for r in records), [r["logger"] for r in records]
