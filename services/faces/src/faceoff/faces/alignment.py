"""Face alignment: where each face's five landmarks lie, and the warp that puts them in place.

Recognisers trained on aligned faces (ArcFace's 5-point template at 112 px: SFace, MobileFace,
the ``mobilefacenet`` judge) see each face through a similarity warp computed from *its own*
landmarks. The masker's crop is the MTCNN box plus a margin, so where the face's eyes and mouth
lie in it varies from face to face (head turn, tilt, the box's own jitter); a surrogate that cuts
one fixed window out of every crop sees most faces shifted, scaled and rotated from what the
real recogniser sees, and a perturbation fitted to that view is partly undone by the real one.

An **alignment** here is an affine map of *normalised crop coordinates* (0..1 across the crop,
from its top-left edge), written as six numbers ``(a, b, c, d, e, f)``::

    u' = a * u + b * v + c        v' = d * u + e * v + f

It takes a point of the *canonical* crop, where the landmarks lie at :data:`CANONICAL` (the
ArcFace template placed in the crop through SFace's fitted window), to the point of this face's
crop that shows the same part of the face. :data:`IDENTITY` leaves the crop as it is; a
surrogate that reads its window through the alignment (:func:`window_transforms`) then sees the
face as the template would place it, whatever its position in the crop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

# read by the aligned surrogates, which live below this module (no import back from there)
from faceoff.faces.models.window_crop import window_transforms

__all__ = [
    "ARCFACE_TEMPLATE",
    "CANONICAL",
    "IDENTITY",
    "LANDMARK_ORDER",
    "crop_alignment",
    "similarity_transform",
    "window_transforms",
]

#: insightface's ArcFace landmarks in the 112x112 crop: the eye on the image's left, the other
#: eye, the nose tip, the mouth corner on the image's left, the other (x, y).
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ]
)
#: The detector's landmark names in :data:`ARCFACE_TEMPLATE`'s order.
LANDMARK_ORDER = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
#: The alignment that leaves the crop as it is.
IDENTITY = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], np.float32)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 similarity (rotation, uniform scale, shift) taking ``src`` points onto ``dst``.

    Least squares (Umeyama 1991), as insightface's ``norm_crop`` and OpenCV's ``alignCrop``.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(d.T @ s / len(src))
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rot = u @ sign @ vt
    scale = np.trace(np.diag(sig) @ sign) / s.var(0).sum()
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def _canonical() -> np.ndarray:
    from faceoff.faces.models.sface import INPUT_SIZE, NETWORK_SIZE, WINDOW

    left = WINDOW.center_x - WINDOW.side / 2
    top = WINDOW.center_y - WINDOW.side / 2
    scale = WINDOW.side / NETWORK_SIZE
    points = np.stack(
        [left + ARCFACE_TEMPLATE[:, 0] * scale, top + ARCFACE_TEMPLATE[:, 1] * scale], axis=1
    )
    return points / INPUT_SIZE


#: The landmarks' places in the canonical crop (normalised coordinates): the ArcFace template
#: seen through SFace's window (:data:`faceoff.faces.models.sface.WINDOW`, fitted on the shared
#: photos as where the aligned square lies in the masker's crop on average).
CANONICAL = _canonical()


def crop_alignment(
    landmarks: Mapping[str, Sequence[float]],
    region: tuple[float, float, float, float],
) -> np.ndarray:
    """The alignment ``(6,)`` of a face whose ``landmarks`` (photo pixels, by name) lie in a crop of
    ``region`` ``(left, top, width, height)`` (photo pixels): the similarity, in normalised crop
    coordinates, that takes :data:`CANONICAL` onto the face's landmarks.

    Raises:
        ValueError: a landmark is missing or not finite, or the region is empty.
    """
    left, top, width, height = (float(v) for v in region)
    if not (width > 0 and height > 0):
        raise ValueError(f"region {region} is empty")
    try:
        points = np.array([landmarks[name] for name in LANDMARK_ORDER], np.float64)
    except KeyError as exc:
        raise ValueError(f"landmark {exc.args[0]!r} is missing; need {LANDMARK_ORDER}") from None
    if points.shape != (5, 2) or not np.all(np.isfinite(points)):
        raise ValueError(f"landmarks must be five finite (x, y) points, got {points.tolist()}")
    normalised = (points - [left, top]) / [width, height]
    m = similarity_transform(CANONICAL, normalised)
    return m.reshape(6).astype(np.float32)
