"""``faceoff protect`` and ``faceoff bench transfer`` as a person runs them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import PHOTOS

pytestmark = pytest.mark.slow

FACEOFF = [sys.executable, "-m", "faceoff.cli"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def test_protect_writes_the_photo_and_a_receipt(tmp_path: Path) -> None:
    photo = PHOTOS / "meryl" / "meryl_02.jpg"
    out = tmp_path / "out" / "meryl_02.protected.jpg"
    run = subprocess.run(
        [
            *FACEOFF,
            "protect",
            str(photo),
            "-o",
            str(out),
            "--json",
            "--seed",
            "4",
            "--reference",
            str(PHOTOS / "meryl"),
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    # a quiet command line: TensorFlow's and OpenCV's own lines only with --verbose
    assert not re.search(r"onednn|absl|WARN:", run.stderr, re.IGNORECASE), run.stderr
    receipt = json.loads(run.stdout)
    assert (
        receipt["output"] == str(out)
        and receipt["faces_protected"] == 1
        and receipt["format"] == "JPEG"
    )
    face = receipt["faces"][0]
    assert face["psnr"] > 30 and face["distance_after"] > face["distance_before"]
    assert face["butteraugli"] > 0 and face["butteraugli_native"] > 0
    with Image.open(photo) as a, Image.open(out) as b:
        assert a.size == b.size and b.format == "JPEG"
        assert not np.array_equal(np.asarray(a), np.asarray(b))


def test_protect_refuses_bad_options_naming_them(tmp_path: Path) -> None:
    run = subprocess.run(
        [
            *FACEOFF,
            "protect",
            str(PHOTOS / "bill" / "bill_03.jpg"),
            "-o",
            str(tmp_path / "x.jpg"),
            "--alpha",
            "0",
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )
    assert (
        run.returncode == 2 and "alpha must be in" in run.stderr and "Traceback" not in run.stderr
    )
    assert not (tmp_path / "x.jpg").exists()


def test_bench_transfer_small_run(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for name in ("barack", "taylor"):
        (data / name).symlink_to(PHOTOS / name)
    report, plot = tmp_path / "transfer.json", tmp_path / "transfer.png"
    run = subprocess.run(
        [
            *FACEOFF,
            "bench",
            "transfer",
            "--data",
            str(data),
            "--recognizers",
            "dlib,sface,facenet",
            "--probes-per-identity",
            "1",
            "--alpha",
            "3",
            "--json",
            str(report),
            "--plot",
            str(plot),
            "--sheet",
            str(tmp_path / "sheet.png"),
            "--label",
            "a small run",
            "--set",
            "adaptive_alpha=true",
            "--set",
            "loop_recognizers=sface",
            "--set",
            "momentum=0.9",
            "--set",
            "surrogates=facenet",
            "--set",
            "norm=l2",
            "--set",
            "epsilon=1.5",
            "--set",
            "iterations=20",
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    doc = json.loads(report.read_text())
    assert doc["identities"] == 2 and doc["probes"] == 2 and len(doc["results"]) == 1
    assert doc["label"] == "a small run"
    result = doc["results"][0]
    assert result["alpha"] == 3.0 and 25 < result["psnr_face_mean"] < 60 and result["l2_mean"] > 0
    assert doc["config"]["momentum"] == 0.9 and doc["config"]["loop_recognizers"] == ["sface"]
    assert 1.0 <= result["alpha_applied_mean"] <= 3.0
    # a second judge of the look, and how large the faces are as displayed
    assert 0 < result["blotch_median"] <= result["blotch_p90"] < 30
    assert set(result["blotch_per_face"]) == set(result["butteraugli_per_face"])
    applied = result["alpha_per_face"]  # each face's alpha, where the mean comes from
    assert set(applied) == set(result["butteraugli_per_face"])
    assert all(1.0 <= a <= 3.0 for a in applied.values())
    assert abs(sum(applied.values()) / len(applied) - result["alpha_applied_mean"]) < 0.01
    assert 50 < doc["probe_face_px_displayed_median"] <= doc["probe_face_px_median"]
    under = doc["probes_face_displayed_under"]
    assert set(under) == {"150", "200"} and 0 <= under["150"] <= under["200"] <= 2
    assert result["goal"]["judged_on"] == ["dlib"], (
        "the surrogate and the loop recogniser are not judges"
    )
    for name in ("dlib", "sface", "facenet"):
        r = result["recognizers"][name]
        assert r["white_box"] is (name == "facenet")
        assert r["in_loop"] is (name == "sface")
        assert r["clean_top1"] == 1.0
        for key in ("protected_top1", "protected_top3", "evasion_rate", "evasion_rate_jpeg75_half"):
            assert 0.0 <= r[key] <= 1.0
    with Image.open(plot) as img:
        assert img.format == "PNG" and img.size[0] > 400
    with Image.open(tmp_path / "sheet.png") as img:
        assert img.format == "PNG" and img.size[1] > 100
    if shutil.which("butteraugli"):
        assert (
            result["butteraugli_median"] > 0
            and result["butteraugli_p90"] >= result["butteraugli_median"]
        )
        assert result["goal"]["visibility_judged_by"] == "butteraugli"
