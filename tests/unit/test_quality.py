"""Visibility measures: SSIM (scikit-image), PSNR, and Butteraugli as displayed and native."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import structural_similarity

from faceoff.masker import quality
from faceoff.masker.convert import receipt_to_proto
from faceoff.masker.receipts import FaceReceipt
from tests.conftest import PHOTOS

BOX = (300.0, 200.0, 336.0, 484.0)  # barack_01's face, roughly


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.asarray(Image.open(PHOTOS / "barack" / "barack_01.jpg").convert("RGB"))


@pytest.fixture(scope="module")
def tool() -> None:
    if shutil.which("butteraugli") is None:
        pytest.fail("butteraugli is not installed: ./dev setup installs Debian's package")


def noisy(pixels: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, pixels.shape)
    return np.clip(pixels + noise.round(), 0, 255).astype(np.uint8)


def test_ssim_is_scikit_images_with_a_gaussian_window(photo: np.ndarray) -> None:
    a, b = photo[200:600, 300:640], noisy(photo[200:600, 300:640], 4)
    expected = structural_similarity(
        a, b, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        channel_axis=2,
    )  # fmt: skip
    assert quality.ssim(a, b) == pytest.approx(expected)
    assert quality.ssim(a, a) == pytest.approx(1.0)
    assert 0 < quality.ssim(a, b) < 1
    assert quality.ssim(a[:6, :6], b[:6, :6]) < 1  # a region smaller than the window still works


def test_butteraugli_grows_with_the_change(photo: np.ndarray, tool: None) -> None:
    a = photo[200:500, 300:600]
    assert quality.butteraugli_distance(a, a) == 0.0
    light, heavy = (quality.butteraugli_distance(a, noisy(a, s)) for s in (2, 8))
    assert light is not None and heavy is not None
    assert 0.5 < light < heavy  # white noise of 2/255 is about 1.9, of 8/255 about 6 (on a face)


def test_butteraugli_writes_nothing_to_disk(
    photo: np.ndarray, tool: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    monkeypatch.setenv("TMPDIR", "/nonexistent-faceoff-tmp")
    monkeypatch.setattr(tempfile, "tempdir", None)
    a = photo[200:400, 300:500]
    assert quality.butteraugli_distance(a, noisy(a, 3)) > 0  # in-memory files only


def test_face_butteraugli_as_displayed_and_native(photo: np.ndarray, tool: None) -> None:
    assert max(photo.shape[:2]) > quality.DISPLAY_LONGEST_SIDE  # so the two scales differ
    (seen,) = quality.face_butteraugli(photo, noisy(photo, 3), [BOX])
    assert seen.display is not None and seen.native is not None
    assert seen.display > 0 and seen.native > 0 and seen.display != seen.native
    small = photo[::2, ::2]  # already within display size: one measurement
    (seen_small,) = quality.face_butteraugli(small, noisy(small, 3), [tuple(v / 2 for v in BOX)])
    assert seen_small.display == seen_small.native
    # Several faces: one scaling of the photo, one measurement each, in order.
    two = quality.face_butteraugli(photo, noisy(photo, 3), [BOX, (700.0, 300.0, 200.0, 200.0)])
    assert len(two) == 2 and two[0] == seen and two[1] != seen


def test_without_the_tool_the_receipt_says_so(
    photo: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert quality.face_butteraugli(photo, noisy(photo, 3), [BOX]) == [
        quality.Butteraugli(None, None)
    ]
    receipt = FaceReceipt(0, BOX, None, 1.0, 0.1, 40.0, 0.98, 0.2, 1.1)
    doc = receipt.to_json()
    assert doc["butteraugli"] is None and doc["butteraugli_note"] == quality.BUTTERAUGLI_MISSING
    msg = receipt_to_proto(receipt)
    assert not msg.HasField("butteraugli") and not msg.HasField("butteraugli_native")


def test_the_receipt_carries_the_distances_and_blotch_through_contract_and_sdk() -> None:
    from faceoff.sdk._convert import protected_photo
    from faceoff.v1 import common_pb2, masker_pb2
    from tests.conftest import encode

    receipt = FaceReceipt(0, BOX, None, 1.0, 0.1, 40.0, 0.98, 0.2, 1.1, butteraugli=3.25,
                          butteraugli_native=5.5, blotch=2.5)  # fmt: skip
    response = masker_pb2.ProtectResponse(
        image=common_pb2.Image(data=encode(np.zeros((8, 8, 3), np.uint8))),
        faces=[receipt_to_proto(receipt)],
    )
    (face,) = protected_photo(response).faces
    assert (face.butteraugli, face.butteraugli_native) == (3.25, 5.5)
    assert face.to_json()["butteraugli"] == 3.25 and "butteraugli_note" not in face.to_json()
    assert face.blotch == 2.5 and face.to_json()["blotch"] == receipt.to_json()["blotch"] == 2.5


def test_the_blotch_sees_a_soft_patch_and_not_the_texture() -> None:
    """A soft patch of brighter skin shows as its contrast; fine noise of far larger amplitude
    averages away; the blotch grows linearly with the change."""
    rng = np.random.default_rng(0)
    clean = rng.uniform(80, 170, (200, 200, 3)).round().astype(np.uint8)
    yy, xx = np.mgrid[:200, :200]
    patch = 6.0 * np.exp(-((yy - 100) ** 2 + (xx - 90) ** 2) / (2 * 25.0**2))
    patched = np.clip(clean + patch[..., None].round(), 0, 255).astype(np.uint8)
    assert quality.blotch(clean, clean) == 0.0
    once = quality.blotch(clean, patched)
    assert 4.5 < once <= 6.0, "the patch's contrast, a little less at its 99th percentile"
    twice = np.clip(clean + (2 * patch[..., None]).round(), 0, 255).astype(np.uint8)
    assert quality.blotch(clean, twice) == pytest.approx(2 * once, rel=0.05)
    checker = np.where((yy + xx) % 2, 12, -12)[..., None]
    textured = np.clip(clean.astype(int) + checker, 0, 255).astype(np.uint8)
    assert quality.blotch(clean, textured) < 1.0, "a fine texture is no blotch"
    blue = clean.copy()
    blue[..., 2] = np.clip(blue[..., 2] + patch.round(), 0, 255)
    assert quality.blotch(clean, blue) < 0.2 * quality.blotch(clean, patched), "luma only"
    with pytest.raises(ValueError, match="shapes"):
        quality.blotch(clean, clean[:100])
