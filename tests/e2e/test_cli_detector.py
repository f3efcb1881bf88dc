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
