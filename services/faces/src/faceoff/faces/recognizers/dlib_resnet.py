"""The ``dlib`` recogniser: dlib's ResNet face descriptor (128-D), a black box to the masker.

The pipeline is dlib's own, as the ``face_recognition`` package runs it:

1. dlib's frontal face detector (HOG + linear SVM) on a copy of the photo whose longer side is at
   most ``detect_max_side`` pixels, upsampled once (so faces down to about 40 px of that copy
   are found). When it finds nothing, it looks once more on that copy with a 15% black border
   around it and a lower score threshold (-0.5 instead of 0): faces cut by the photo's edge or
   tilted (one shared photo is both) then score just under dlib's default threshold. For an
   evaluator, missing a face would overstate the protection, so the lenient second look is
   the conservative choice.
2. The 5-point shape predictor on the full-resolution photo, inside the largest detection.
3. ``compute_face_descriptor(photo, shape)``: dlib aligns the face chip (150 px, padding 0.25)
   from the five points and runs the ResNet.

Descriptors are compared by Euclidean distance; dlib's documented verification threshold is
0.6 (same person below it), and :func:`~faceoff.faces.recognizers.base.distance_confidence`
maps distance 0.6 to confidence 0.5 with a scale of 0.1. On the shared photos same-person
distances have median 0.45 (confidence 0.82) and different people median 0.91 (confidence 0.04).

Weights: ``dlib_resnet`` and ``dlib_shape5`` from :mod:`faceoff.common.assets` (SHA-256 verified); the
library is the ``dlib-bin`` package (a prebuilt dlib).
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from faceoff.common.imaging import Photo
from faceoff.faces.recognizers.base import EmbeddingRecognizer

log = logging.getLogger(__name__)

#: Upsampling of the first look: faces of ~40 px in the detection copy are found.
UPSAMPLE = 1
#: Border added on each side for the second look, as a fraction of the longer side.
RETRY_PAD = 0.15
#: dlib's SVM score threshold for the second look (dlib's default is 0).
RETRY_THRESHOLD = -0.5


class DlibRecognizer(EmbeddingRecognizer):
    """dlib ResNet descriptors with dlib's detector and 5-point alignment.

    Args:
        detect_max_side: Longer side of the copy the face detector runs on (>= 64 px).
    """

    name = "dlib"
    metric = "euclidean"
    distance_threshold = 0.6
    confidence_scale = 0.1
    detector_name = "dlib's frontal face detector"

    def __init__(self, detect_max_side: int = 1024) -> None:
        super().__init__()
        if detect_max_side < 64:
            raise ValueError(f"detect_max_side must be >= 64 pixels, got {detect_max_side}")
        self.detect_max_side = detect_max_side

    def _load(self) -> None:
        import dlib

        from faceoff.common import assets

        self._detector = dlib.get_frontal_face_detector()
        self._shape = dlib.shape_predictor(str(assets.path("dlib_shape5")))
        self._resnet = dlib.face_recognition_model_v1(str(assets.path("dlib_resnet")))
        self._dlib = dlib
        log.info("dlib recogniser loaded (dlib %s)", dlib.__version__)

    def _detect(self, pixels: np.ndarray) -> tuple[float, float, float, float] | None:
        """The largest face as ``(left, top, right, bottom)`` in ``pixels`` coordinates, or None."""
        h, w = pixels.shape[:2]
        scale = min(1.0, self.detect_max_side / max(h, w))
        small = pixels
        if scale < 1.0:
            small = cv2.resize(
                pixels,
                (max(1, round(w * scale)), max(1, round(h * scale))),
                interpolation=cv2.INTER_AREA,
            )
        rects, _scores, _ = self._detector.run(small, UPSAMPLE, 0.0)
        pad = 0
        if not rects:
            pad = round(RETRY_PAD * max(small.shape[:2]))
            padded = cv2.copyMakeBorder(
                small, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0)
            )
            found, scores, _ = self._detector.run(padded, UPSAMPLE, RETRY_THRESHOLD)
            if not found:
                return None
            rects = [found[int(np.argmax(scores))]]
        best = max(rects, key=lambda r: r.width() * r.height())
        return tuple(
            (v - pad) / scale for v in (best.left(), best.top(), best.right(), best.bottom())
        )

    def _embed(self, photo: Photo) -> np.ndarray | None:
        pixels = np.ascontiguousarray(photo.pixels)
        box = self._detect(pixels)
        if box is None:
            return None
        rect = self._dlib.rectangle(*(int(round(v)) for v in box))
        shape = self._shape(pixels, rect)
        return np.asarray(self._resnet.compute_face_descriptor(pixels, shape), dtype=np.float32)
