"""The ``sface`` recogniser: SFace (OpenCV Zoo, 128-D) aligned with YuNet, a black box to the masker.

OpenCV runs both networks (``cv2.FaceDetectorYN`` and ``cv2.FaceRecognizerSF``, present in
OpenCV 5 as in 4.x):

1. YuNet on a copy of the photo whose longer side is at most 640 px. YuNet misses faces that
   fill much of a large input (six of the 50 shared photos at their native size); on the reduced
   copy it finds all of them. When that copy still shows no face, it looks once more at 320 px
   with a lower score threshold. The box and the five landmarks are scaled back to full size.
2. ``alignCrop`` warps the full-resolution face to SFace's 112x112 input from the landmarks,
   and ``feature`` embeds it.

Features are compared by cosine similarity; OpenCV documents 0.363 as SFace's threshold (same
person at or above it). Here the distance is ``1 - cosine similarity``, so the threshold is a
distance of 0.637, and :func:`~faceoff.faces.recognizers.base.distance_confidence` maps it to
confidence 0.5 with a scale of 0.1. On the shared photos same-person distances have median
0.33 (confidence 0.95) and different people median 0.90 (confidence 0.07).

Weights: ``yunet`` and ``sface`` ONNX files from :mod:`faceoff.common.assets` (SHA-256 verified).
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from faceoff.common.imaging import Photo
from faceoff.faces.recognizers.base import EmbeddingRecognizer

log = logging.getLogger(__name__)

#: OpenCV's documented cosine-similarity threshold for SFace.
COSINE_THRESHOLD = 0.363
#: (longer side of the detection copy, YuNet score threshold), tried in order.
DETECT_PASSES: tuple[tuple[int, float], ...] = ((640, 0.9), (320, 0.7))
_NMS_THRESHOLD = 0.3
_TOP_K = 5000


class SFaceRecognizer(EmbeddingRecognizer):
    """SFace features of YuNet-aligned faces."""

    name = "sface"
    metric = "cosine"
    distance_threshold = 1.0 - COSINE_THRESHOLD
    confidence_scale = 0.1
    detector_name = "YuNet"

    def _load(self) -> None:
        from faceoff.common import assets

        self._yunet = cv2.FaceDetectorYN.create(
            str(assets.path("yunet")), "", (320, 320), DETECT_PASSES[0][1], _NMS_THRESHOLD, _TOP_K
        )
        self._sface = cv2.FaceRecognizerSF.create(str(assets.path("sface")), "")
        log.info("SFace recogniser loaded (OpenCV %s)", cv2.__version__)

    def _detect(self, bgr: np.ndarray) -> np.ndarray | None:
        """YuNet's row for the largest face, in full-resolution coordinates, or None."""
        h, w = bgr.shape[:2]
        for max_side, score in DETECT_PASSES:
            scale = min(1.0, max_side / max(h, w))
            small = bgr
            if scale < 1.0:
                small = cv2.resize(
                    bgr,
                    (max(1, round(w * scale)), max(1, round(h * scale))),
                    interpolation=cv2.INTER_AREA,
                )
            self._yunet.setInputSize((small.shape[1], small.shape[0]))
            self._yunet.setScoreThreshold(score)
            _, faces = self._yunet.detect(small)
            if faces is not None and len(faces):
                face: np.ndarray = (
                    faces[int(np.argmax(faces[:, 2] * faces[:, 3]))].astype(np.float32).copy()
                )
                face[:14] /= scale  # box (4) and five landmarks (10); the score stays
                return face
        return None

    def _embed(self, photo: Photo) -> np.ndarray | None:
        bgr = cv2.cvtColor(photo.pixels, cv2.COLOR_RGB2BGR)
        face = self._detect(bgr)
        if face is None:
            return None
        aligned = self._sface.alignCrop(bgr, face.reshape(1, -1))
        return np.asarray(self._sface.feature(aligned), dtype=np.float32).reshape(-1)
