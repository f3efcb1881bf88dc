"""Crop geometry shared by the masker and the evaluator: face box -> surrogate-sized crop, and back.

The crop follows the convention of the FaceNet pipeline the paper used (and of the shared
``aligned160`` crops): the detector's box, widened by a margin on every side, clipped to the
photo and resized to the surrogate's square input without rotation. :func:`paste_delta` is the
inverse for a perturbation: it resizes a crop-sized array to the crop region and adds it to the
full-resolution photo, leaving every pixel outside the region untouched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

#: Margin added on each side of the detector box, as a fraction of the box's width/height.
DEFAULT_MARGIN = 0.1


@dataclass(frozen=True)
class CropRegion:
    """A pixel-aligned rectangle of the full photo: columns ``left:right``, rows ``top:bottom``."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        """Width in pixels."""
        return self.right - self.left

    @property
    def height(self) -> int:
        """Height in pixels."""
        return self.bottom - self.top

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(rows, columns)`` slices for NumPy indexing."""
        return slice(self.top, self.bottom), slice(self.left, self.right)


def crop_region(
    box: tuple[float, float, float, float],
    image_width: int,
    image_height: int,
    margin: float = DEFAULT_MARGIN,
) -> CropRegion:
    """The region to crop for a face box ``(x, y, w, h)``: the box plus ``margin`` on each side, clipped.

    Raises:
        ValueError: if the box lies outside the photo or the margin is negative.
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    x, y, w, h = box
    left = max(0, math.floor(x - margin * w))
    top = max(0, math.floor(y - margin * h))
    right = min(image_width, math.ceil(x + w + margin * w))
    bottom = min(image_height, math.ceil(y + h + margin * h))
    if right - left < 1 or bottom - top < 1:
        raise ValueError(f"face box {box} lies outside the {image_width}x{image_height} photo")
    return CropRegion(left, top, right, bottom)


def _resize(array: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize; area averaging when shrinking, so that downscaling does not alias."""
    shrinking = width < array.shape[1] or height < array.shape[0]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(array, (width, height), interpolation=interpolation)


def extract_crop(pixels: np.ndarray, region: CropRegion, size: int = 160) -> np.ndarray:
    """Cut ``region`` out of ``(H, W, 3)`` uint8 ``pixels`` as a ``(size, size, 3)`` float32 array in [0, 1]."""
    crop = np.ascontiguousarray(pixels[region.slices])
    resized = _resize(crop, size, size)
    return resized.astype(np.float32) / 255.0


def resize_delta(delta: np.ndarray, region: CropRegion) -> np.ndarray:
    """Resize a crop-sized perturbation ``(S, S, 3)`` (units: [0, 1] pixels) to the region's size."""
    return _resize(np.ascontiguousarray(delta, dtype=np.float32), region.width, region.height)


def paste_delta(pixels: np.ndarray, region: CropRegion, delta: np.ndarray) -> np.ndarray:
    """Return a copy of uint8 ``pixels`` with the crop-sized ``delta`` added inside ``region``.

    ``delta`` is in [0, 1] pixel units at crop scale; it is resized to the region, scaled to
    0..255, added, rounded and clipped. Pixels outside ``region`` are returned unchanged.
    """
    out = pixels.copy()
    full = resize_delta(delta, region) * 255.0
    rows, cols = region.slices
    patch = out[rows, cols].astype(np.float32) + full
    out[rows, cols] = np.clip(np.rint(patch), 0, 255).astype(np.uint8)
    return out
