"""The command line as a person uses it: ``faceoff evaluate`` and ``faceoff serve evaluator``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import PHOTOS, free_port, serve_until_serving_then_drain

FACEOFF = [sys.executable, "-m", "faceoff.cli"]
# No cloud credentials from the machine: the cloud backends must show as not configured.
CLOUD_VARS = (
    "AWS_",
    "FACEOFF_AZURE_",
    "FACEOFF_FACEPP_",
    "FACEOFF_REKOGNITION_",
    "FACEOFF_CLOUD_SECRETS_FILE",
)
ENV = {k: v for k, v in os.environ.items() if not k.startswith(CLOUD_VARS)} | {
    "TF_CPP_MIN_LOG_LEVEL": "2"
}


@pytest.mark.parametrize("attacked", [(), ("--attacked", "facenet")], ids=["default", "facenet"])
def test_evaluate_json(attacked: tuple[str, ...]) -> None:
    out = subprocess.run(
        [
            *FACEOFF,
            "evaluate",
            str(PHOTOS / "leo" / "leo_01.jpg"),
            "--reference",
            str(PHOTOS / "barack"),
            "--gallery",
            str(PHOTOS),
            "--recognizers",
            "sface,facepp",
            "--top-k",
            "2",
            "--json",
            *attacked,
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    sface, facepp = doc["verdicts"]
    assert sface["configured"] and not sface["match"] and sface["confidence"] < 0.5
    # Not told how the photo was protected: the default profile's surrogates (sface among them).
    assert sface["white_box"] is (not attacked)
    assert sface["top_k"][0]["name"] == "leo" and len(sface["top_k"]) == 2
    assert facepp == {"recognizer": "facepp", "white_box": False, "configured": False}


def test_evaluate_table_and_errors() -> None:
    out = subprocess.run(
        [
            *FACEOFF,
            "evaluate",
            str(PHOTOS / "barack" / "barack_02.jpg"),
            "--reference",
            str(PHOTOS / "barack"),
            "--recognizers",
            "sface",
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "sface" in out.stdout and "MATCH" in out.stdout
    bad = subprocess.run(
        [
            *FACEOFF,
            "evaluate",
            str(PHOTOS / "barack" / "barack_02.jpg"),
            "--reference",
            str(PHOTOS / "barack"),
            "--recognizers",
            "sface,vggface",
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert (
        bad.returncode == 2
        and "accepted: dlib, sface" in bad.stderr
        and "Traceback" not in bad.stderr
    )
    # a malformed cloud setting is named, before any model loads
    setting = subprocess.run(
        [
            *FACEOFF,
            "evaluate",
            str(PHOTOS / "barack" / "barack_02.jpg"),
            "--reference",
            str(PHOTOS / "barack"),
        ],
        capture_output=True,
        text=True,
        env=ENV | {"FACEOFF_CLOUD_SECRETS_FILE": "/nonexistent/secrets.json"},
        timeout=300,
    )
    assert setting.returncode == 2, setting.stderr
    assert "bad setting: FACEOFF_CLOUD_SECRETS_FILE='/nonexistent/secrets.json'" in setting.stderr
    assert "Traceback" not in setting.stderr


def test_serve_evaluator_turns_serving_and_drains_on_sigterm() -> None:
    port = free_port()
    log = serve_until_serving_then_drain(
        [
            *FACEOFF,
            "serve",
            "evaluator",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--metrics-port",
            "-1",
            "--local-recognizers",
            "sface",
        ],
        "faceoff.v1.Evaluator",
        port,
        {**ENV, "FACEOFF_GRACE_SECONDS": "2"},
    )
    assert "draining" in log and "stopped" in log
