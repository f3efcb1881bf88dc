"""The native-resolution, shaped protection on the real surrogates: a large and a small face.

The photo goes in as PNG so that the output can be compared pixel for pixel: nothing outside
each face's soft ellipse changes, the change fades out at its rim (at most 1 grey level there),
the surrogate's distance to the user grows, and the receipt measures the face as displayed.
"""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
from PIL import Image

from faceoff.common.crops import crop_region
from faceoff.detector.detection import FaceDetector
from faceoff.masker.attacks.shape import soft_mask
from faceoff.masker.options import resolve
from faceoff.masker.pipeline import ProtectCall, protect_in_process
from faceoff.masker.protection import Protector
from tests.conftest import PHOTOS

pytestmark = pytest.mark.slow

#: barack_01: a 336 x 483 px face (larger than the work size); barack_02: a 63 x 89 px face.
PHOTOS_BY_FACE = {"large": "barack/barack_01.jpg", "small": "barack/barack_02.jpg"}
SHAPED = {
    "work_size": 320,
    "feather": 0.25,
    "chroma": 0.3,
    "texture": 0.5,
    "iterations": 8,
    "surrogates": ("facenet",),
    "eot": 0.0,
    "seed": 4,
}


@pytest.fixture(scope="module")
def protector() -> Protector:
    return Protector()


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


def _png(path: str) -> tuple[bytes, np.ndarray]:
    with Image.open(PHOTOS / path) as img:
        pixels = np.asarray(img.convert("RGB"))
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue(), pixels


@pytest.mark.parametrize("size", sorted(PHOTOS_BY_FACE))
def test_shaped_native_protection_changes_only_the_soft_face_ellipse(
    protector: Protector, detector: FaceDetector, size: str
) -> None:
    data, original = _png(PHOTOS_BY_FACE[size])
    options = resolve("medium", **SHAPED)
    result = protect_in_process(ProtectCall(data, options, []), protector, detector)
    assert result.format == "PNG" and result.faces
    with Image.open(io.BytesIO(result.data)) as img:
        out = np.asarray(img.convert("RGB"))
    inside = np.zeros(original.shape[:2], bool)
    rim = np.zeros(original.shape[:2], bool)
    for face in result.faces:
        region = crop_region(face.box, original.shape[1], original.shape[0], options.margin)
        mask = soft_mask(region.height, region.width, options.feather)
        inside[region.slices] |= mask > 0
        rim[region.slices] |= (mask > 0) & (mask < 0.05)
    change = np.abs(out.astype(int) - original.astype(int))
    assert change[~inside].max() == 0, "a pixel outside the faces' ellipses changed"
    assert change[inside].max() > 0
    assert change[rim].max() <= 1, "the perturbation has an edge at the mask's rim"
    face = result.faces[0]
    if size == "large":
        assert face.box[2] > SHAPED["work_size"], "the large face is larger than the work size"
    else:
        assert max(face.box[2:]) < 100
    assert face.distance_after > face.distance_before, "the face moved away from the user"
    assert np.isfinite(face.psnr) and 0 < face.ssim < 1
    if shutil.which("butteraugli"):
        assert face.butteraugli is not None and face.butteraugli > 0
    applied = result.receipt()["options"]
    assert applied["work_size"] == 320 and applied["feather"] == 0.25
