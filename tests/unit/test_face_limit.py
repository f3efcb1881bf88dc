"""A request may have at most ``max_faces`` faces protected; more is refused before any work.

A photo of a crowd used to be attacked face by face whatever the limits said (197 faces: 97 s and
+2.8 GB on the masker): the queue's face limit does not apply to a request that arrives alone.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from faceoff.common.errors import InvalidOption
from faceoff.detector.detection import DetectedFace, DetectionResult, DetectOptions
from faceoff.masker.options import resolve
from faceoff.masker.pipeline import DEFAULT_MAX_FACES, ProtectCall, protect


class Prepared(Exception):
    """Raised by the stand-in protector: the call got past the limits to the real work."""


class StandIn:
    def prepare(self, *args: Any) -> Any:
        raise Prepared()


def _crowd(n: int) -> Any:
    async def detect(data: bytes, options: DetectOptions) -> DetectionResult:
        faces = [DetectedFace(box=(10.0 * i, 0.0, 40.0, 40.0), confidence=0.99) for i in range(n)]
        return DetectionResult(width=4000, height=100, faces=faces)

    return detect


async def _never(job: Any, progress: Any) -> Any:
    raise AssertionError("no attack may start")


def _protect(faces: int, **options: Any) -> None:
    call = ProtectCall(photo=b"photo", options=resolve("low", **options))
    asyncio.run(protect(call, StandIn(), _crowd(faces), _never))  # type: ignore[arg-type]


def test_a_crowd_over_the_limit_is_refused_naming_both_numbers() -> None:
    with pytest.raises(InvalidOption) as info:
        _protect(DEFAULT_MAX_FACES + 1)
    message = info.value.message
    assert (
        f"has {DEFAULT_MAX_FACES + 1} faces" in message
        and f"at most {DEFAULT_MAX_FACES}" in message
    )
    assert "face_indices" in message and "max_faces" in message


def test_at_the_limit_or_choosing_faces_goes_on_to_the_work() -> None:
    with pytest.raises(Prepared):
        _protect(DEFAULT_MAX_FACES)
    with pytest.raises(Prepared):
        _protect(200, face_indices=(0, 1, 2))


def test_the_limit_is_the_masker_setting() -> None:
    from faceoff.common.settings import SettingsError
    from faceoff.masker.server import MaskerSettings, load_settings

    _, settings = load_settings(env={"FACEOFF_MAX_FACES_PER_REQUEST": "8"})
    assert settings.max_faces_per_request == 8
    with pytest.raises(SettingsError, match="FACEOFF_MAX_FACES_PER_REQUEST"):
        dataclasses.replace(settings, max_faces_per_request=0)
    assert MaskerSettings().max_faces_per_request == DEFAULT_MAX_FACES
