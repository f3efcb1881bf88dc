"""``faceoff bench startup``'s summary of a fresh process's stamps (the process itself is a
benchmark: it loads TensorFlow and the models, so it is not run here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from faceoff.bench import startup


def stamps() -> dict:
    steps = []
    for step, at in (
        ("interpreter and imports", 0.2),
        ("tensorflow import", 3.0),
        ("detector (MTCNN)", 3.5),
        ("default surrogate (FaceNet, decoys)", 6.0),
        ("other surrogates of medium", 6.5),
        ("first photo", 30.5),
    ):
        steps.append({"step": step, "seconds": 0.0, "at": at})
    photo = {"detect": 0.5, "prepare": 0.3, "finish": 1.0}
    return {
        "steps": steps,
        "photos": [
            {"seconds": 24.0, **photo, "prepare": 3.0, "attack": 19.0},
            {"seconds": 11.0, **photo, "attack": 9.0},
            {"seconds": 13.0, **photo, "attack": 11.0},
        ],
    }


def test_cold_warm_and_the_trace_are_read_from_the_stamps() -> None:
    result = startup.summarise(stamps(), "medium", "barack_01.jpg")
    assert result["cold_seconds"] == 30.5
    assert result["warm_seconds"] == 12.0  # median of the later photos
    assert result["cold_to_warm"] == pytest.approx(30.5 / 12.0)
    steps = {b["step"]: b["seconds"] for b in result["breakdown"]}
    assert steps["first photo: trace of the attack"] == 9.0  # 19 less the warm median 10
    assert steps["first photo: attack"] == 10.0
    assert steps["first photo: prepare"] == 3.0
    assert "first photo" not in steps  # the mark is the cold figure, not a step


def test_it_needs_a_warm_photo_and_an_existing_photo(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="at least 2"):
        startup.run(photos=1)
    with pytest.raises(SystemExit, match="no photo at"):
        startup.run(photo=tmp_path / "missing.jpg")
