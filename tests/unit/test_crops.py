"""Crop geometry: box + margin -> surrogate crop, and pasting a perturbation back."""

from __future__ import annotations

import numpy as np
import pytest

from faceoff.common.crops import CropRegion, crop_region, extract_crop, paste_delta, resize_delta

RNG = np.random.default_rng(1)


def test_region_adds_margin_and_clips_to_the_photo() -> None:
    region = crop_region((100, 50, 200, 300), 1000, 800, margin=0.1)
    assert region == CropRegion(80, 20, 320, 380)
    clipped = crop_region((-10, 700, 100, 200), 1000, 800, margin=0.1)
    assert clipped.left == 0 and clipped.bottom == 800


def test_region_outside_photo_is_an_error() -> None:
    with pytest.raises(ValueError, match="outside"):
        crop_region((2000, 2000, 10, 10), 100, 100)
    with pytest.raises(ValueError, match="margin"):
        crop_region((0, 0, 10, 10), 100, 100, margin=-0.5)


def test_extract_crop_shape_and_range() -> None:
    pixels = RNG.integers(0, 256, (500, 400, 3), dtype=np.uint8)
    crop = extract_crop(pixels, CropRegion(10, 20, 310, 420), size=160)
    assert crop.shape == (160, 160, 3) and crop.dtype == np.float32
    assert crop.min() >= 0.0 and crop.max() <= 1.0


def test_paste_changes_only_the_region_and_round_trips() -> None:
    pixels = RNG.integers(40, 216, (500, 400, 3), dtype=np.uint8)
    region = CropRegion(50, 60, 290, 360)
    delta = RNG.uniform(-0.05, 0.05, (160, 160, 3)).astype(np.float32)
    out = paste_delta(pixels, region, delta)
    mask = np.zeros(pixels.shape[:2], bool)
    mask[region.slices] = True
    assert np.array_equal(out[~mask], pixels[~mask]), "pixels outside the crop changed"
    assert not np.array_equal(out[mask], pixels[mask])
    # Re-cropping the pasted photo recovers the crop-scale perturbation up to resampling/rounding.
    recovered = extract_crop(out, region) - extract_crop(pixels, region)
    assert np.corrcoef(recovered.ravel(), delta.ravel())[0, 1] > 0.5


def test_resize_delta_matches_region() -> None:
    d = resize_delta(np.ones((160, 160, 3), np.float32), CropRegion(0, 0, 33, 77))
    assert d.shape == (77, 33, 3) and np.allclose(d, 1.0)
