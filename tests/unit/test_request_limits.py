"""A request's cost is checked at admission: faces, decoded pixels and attack face-steps.

A photo of a crowd used to be attacked face by face whatever the limits said (197 faces: 97 s and
+2.8 GB on the masker): the queue's face limit does not apply to a request that arrives alone.
Sixteen 49-megapixel reference photos in a 2.4 MB request cost +2.7 GB and 38 s before they were
refused; a 64-face request of 10 000 iterations would hold the masker for hours.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from faceoff.common.errors import InvalidImage, InvalidOption
from faceoff.common.imaging import DEFAULT_MAX_PIXELS, decode
from faceoff.detector.detection import DetectedFace, DetectionResult, DetectOptions
from faceoff.masker import cost
from faceoff.masker.options import resolve
from faceoff.masker.pipeline import DEFAULT_MAX_FACES, ProtectCall, RequestLimits, protect


def _image(width: int, height: int, fmt: str = "JPEG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (120, 100, 90)).save(out, fmt)
    return out.getvalue()


PHOTO = _image(64, 48)


class Prepared(Exception):
    """Raised by the stand-in protector: the call got past the limits to the real work."""


class StandIn:
    max_pixels = DEFAULT_MAX_PIXELS

    def resolved(self, options: Any) -> Any:
        return options

    def prepare(self, *args: Any) -> Any:
        raise Prepared()


def _crowd(n: int) -> Any:
    async def detect(data: bytes, options: DetectOptions) -> DetectionResult:
        faces = [DetectedFace(box=(10.0 * i, 0.0, 40.0, 40.0), confidence=0.99) for i in range(n)]
        return DetectionResult(width=4000, height=100, faces=faces)

    return detect


async def _never(job: Any, progress: Any) -> Any:
    raise AssertionError("no attack may start")


def _protect(
    faces: int,
    references: tuple[bytes, ...] = (),
    limits: dict[str, int] | None = None,
    **options: Any,
) -> None:
    call = ProtectCall(photo=PHOTO, options=resolve("low", **options), references=references)
    request_limits = RequestLimits(**(limits or {}))
    asyncio.run(protect(call, StandIn(), _crowd(faces), _never, limits=request_limits))  # type: ignore[arg-type]


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


# -- pixels --------------------------------------------------------------------------------------


def test_jpeg_references_count_at_their_reduced_decode_and_other_formats_whole() -> None:
    big_jpeg, big_png = _image(4032, 3024), _image(4032, 3024, "PNG")
    photo, refs = cost.request_pixels(PHOTO, [big_jpeg, big_png])
    reduced = decode(big_jpeg, max_side=cost.REFERENCE_MAX_SIDE)
    assert max(reduced.width, reduced.height) == cost.REFERENCE_MAX_SIDE
    # a 12 MP JPEG decodes at half scale (2016 x 1512) before it is reduced; a PNG whole
    assert photo == 64 * 48 and refs == 2016 * 1512 + 4032 * 3024


def test_references_over_the_pixel_budget_are_refused_before_detection() -> None:
    refs = (_image(4032, 3024, "PNG"),) * 3  # 36.6 MP decoded
    with pytest.raises(InvalidOption) as info:
        _protect(1, refs, {"max_request_pixels": 30_000_000})
    err = info.value
    assert err.reason == "TOO_MANY_PIXELS" and err.field == "reference_images"
    assert "36.6 megapixels" in err.message and "at most 30 are accepted" in err.message
    assert "FACEOFF_MAX_REQUEST_PIXELS" in err.message
    with pytest.raises(Prepared):  # the same references as JPEGs cost 9.1 MP: on to the work
        _protect(1, (_image(4032, 3024),) * 3, {"max_request_pixels": 30_000_000})


def test_a_bad_reference_header_is_refused_naming_its_index_before_detection() -> None:
    with pytest.raises(InvalidImage) as info:
        _protect(1, (PHOTO, b"not an image"))
    assert info.value.field == "reference_images[1]"
    assert info.value.message.startswith("reference photo 1: ")


def test_a_reduced_reference_keeps_its_face_crop() -> None:
    """The crop of a reference decoded at 1024 px is the full-size crop, reduced."""
    from faceoff.common.crops import crop_region, extract_crop
    from faceoff.masker.jobs import Preparer

    full = np.zeros((3000, 4000, 3), np.uint8)
    full[1000:1600, 1500:2100] = (200, 150, 120)  # the "face"
    out = io.BytesIO()
    Image.fromarray(full).save(out, "JPEG", quality=95)
    box = (1500.0, 1000.0, 600.0, 600.0)
    detection = DetectionResult(
        width=4000, height=3000, faces=[DetectedFace(box=box, confidence=0.99)]
    )

    class Surrogates:
        size = 160

    preparer = Preparer(Surrogates())  # type: ignore[arg-type]
    (photo,) = preparer.decode_references([(out.getvalue(), detection)])
    assert (photo.width, photo.full_width) == (1024, 4000)
    s = photo.scale
    reduced = extract_crop(
        photo.pixels, crop_region(tuple(v * s for v in box), photo.width, photo.height), 160
    )
    whole = extract_crop(full, crop_region(box, 4000, 3000), 160)
    assert np.abs(reduced - whole).mean() < 0.02


# -- work ----------------------------------------------------------------------------------------


def test_work_over_the_budget_is_refused_after_detection_naming_the_figures() -> None:
    options = resolve("medium", iterations=1000, surrogates=("facenet", "sface"))
    assert cost.work(11, options) == 22_000  # 1000 iterations x 2 surrogates per face
    with pytest.raises(InvalidOption) as info:
        _protect(11, iterations=1000, surrogates=("facenet", "sface"))
    err = info.value
    assert err.reason == "TOO_MUCH_WORK" and err.field == "options.iterations"
    assert "22000 face-steps (11 face(s) x 1000 iterations x 2 surrogate(s))" in err.message
    assert f"at most {cost.DEFAULT_MAX_REQUEST_WORK}" in err.message
    with pytest.raises(Prepared):
        _protect(10, iterations=1000, surrogates=("facenet", "sface"))


def test_variance_tuning_neighbours_count_as_work() -> None:
    options = resolve("medium", iterations=500, surrogates=("facenet", "sface"), variance=2)
    assert cost.work(7, options) == 21_000  # 500 iterations x 3 gradients x 2 surrogates per face
    with pytest.raises(InvalidOption) as info:
        _protect(7, iterations=500, surrogates=("facenet", "sface"), variance=2)
    assert "(7 face(s) x 500 iterations x 3 gradients (variance) x 2 surrogate(s))" in (
        info.value.message
    )


def test_the_budgets_are_masker_settings() -> None:
    from faceoff.masker.server import MaskerSettings, load_settings

    _, settings = load_settings(
        env={"FACEOFF_MAX_REQUEST_PIXELS": "1000000", "FACEOFF_MAX_REQUEST_WORK": "500"}
    )
    assert (settings.max_request_pixels, settings.max_request_work) == (1_000_000, 500)
    defaults = MaskerSettings()
    assert defaults.max_request_pixels == cost.DEFAULT_MAX_REQUEST_PIXELS
    assert defaults.max_request_work == cost.DEFAULT_MAX_REQUEST_WORK
