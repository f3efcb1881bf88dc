"""The user's reference set A_y: their own photos, or the probe face and light augmentations of it.

The paper's loss pushes a face away from *every* reference embedding of its owner. When the user
sends reference photos, their faces form A_y. Without them, A_y is the probe crop itself plus a
few light augmentations (a horizontal flip and small shifts and zooms), so that the perturbation
has to move the face away from a small neighbourhood of looks rather than from one point.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Shifts (in pixels of the 160 px crop) and zooms applied to the probe when no references are given.
_SHIFTS = ((4, 0), (-4, 0), (0, 4), (0, -4))
_ZOOMS = (0.95, 1.05)


def _affine(crop: np.ndarray, dx: float, dy: float, zoom: float) -> np.ndarray:
    size = crop.shape[0]
    centre = (size / 2.0, size / 2.0)
    matrix = cv2.getRotationMatrix2D(centre, 0.0, zoom)
    matrix[:, 2] += np.array((dx, dy))
    return cv2.warpAffine(
        crop, matrix, (crop.shape[1], size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
    )


def augment_probe(crop01: np.ndarray) -> np.ndarray:
    """The stand-in reference set for one ``(S, S, 3)`` crop in [0, 1]: ``(K, S, S, 3)``, the crop first."""
    crop = np.ascontiguousarray(crop01, dtype=np.float32)
    out = [crop, crop[:, ::-1, :]]
    out += [_affine(crop, dx, dy, 1.0) for dx, dy in _SHIFTS]
    out += [_affine(crop, 0.0, 0.0, z) for z in _ZOOMS]
    return np.clip(np.stack(out), 0.0, 1.0).astype(np.float32)
