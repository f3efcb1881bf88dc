"""The ``mobilefacenet`` recogniser: MobileFaceNet (ArcFace loss, MS1M, 192-D), an independent judge.

Its weights are no surrogate's, so its verdict is always a black-box one
(:mod:`faceoff.faces.whitebox`): it is never a masker surrogate nor consulted by the adaptive
loop. It is independent in its weights and training (sirius-ai's TensorFlow run, ArcFace loss,
MS1M), not in its architecture: the ``sface`` surrogate is a MobileFaceNet-style network too,
so transfer from it may be easier than to an unrelated family.

1. YuNet finds the largest face and its five landmarks exactly as for ``sface``
   (:class:`~faceoff.faces.recognizers.sface.SFaceRecognizer`: a copy of at most 640 px, then
   320 px with a lower threshold).
2. :func:`align` warps the full-resolution RGB photo to 112x112 with the similarity transform
   (Umeyama) taking the landmarks onto insightface's ArcFace template, the alignment of the MS1M
   crops the network was trained on (OpenCV's ``alignCrop`` uses the same template).
3. :class:`~faceoff.faces.models.mobilefacenet.MobileFaceNet` embeds the crop, L2-normalised:
   the network as trained, which differs from what the published TF.js graph computes (that
   one is degenerate; see :mod:`faceoff.faces.models.mobilefacenet`).

Embeddings are compared by cosine, as for ``sface``: the distance is ``1 - cosine similarity``
(on these unit vectors, half the squared Euclidean distance). There is no published threshold
for these weights, so it was chosen on the shared celebrity set (10 identities, 5 photos and 9
aligned crops each) with ``tools/mobilefacenet_threshold.py``, which prints these figures.
Photo against photo, same-person distances have median 0.25 (5th-95th percentile 0.12-0.47,
largest 0.59) and different people median 1.00 (5th-95th percentile 0.77-1.23, smallest 0.48);
equal error is 1% at 0.59. The threshold is 0.6 (cosine similarity 0.4): no same-person photo
pair falls outside it and 1.1% of different-person pairs inside (aligned crops: 0% and 0.9%;
equal error 0.3% at 0.55). As for ``facenet``, it leans to the lenient side of equal error on
purpose: an evaluator that under-reports matches would overstate the protection. The figures
come from the same photos the threshold was chosen on; ten people are a small sample. Leave-one-out
nearest-centroid top-1 is 100% on the photos and on the crops. The confidence map has scale 0.1.

It is not in the default set (:data:`~faceoff.faces.recognizers.DEFAULT_LOCAL_RECOGNIZERS`):
an evaluator loads it when ``FACEOFF_LOCAL_RECOGNIZERS`` (``faceoff evaluate --recognizers``,
``Client.local(recognizers=...)``) names it.

Weights: ``yunet`` (ONNX) and ``mobilefacenet_json`` + ``mobilefacenet_bin`` (TF.js) from
:mod:`faceoff.common.assets`, SHA-256 verified.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from faceoff.common.imaging import Photo
from faceoff.faces.alignment import ARCFACE_TEMPLATE, similarity_transform
from faceoff.faces.recognizers.sface import _NMS_THRESHOLD, _TOP_K, DETECT_PASSES, SFaceRecognizer

__all__ = ["MobileFaceNetRecognizer", "align"]

log = logging.getLogger(__name__)

CROP_SIZE = 112


def align(rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The 112x112 ArcFace-aligned crop (uint8 RGB) of the face with five ``landmarks`` (5, 2)."""
    m = similarity_transform(np.asarray(landmarks).reshape(5, 2), ARCFACE_TEMPLATE)
    crop: np.ndarray = cv2.warpAffine(rgb, m, (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_LINEAR)
    return crop


class MobileFaceNetRecognizer(SFaceRecognizer):
    """MobileFaceNet embeddings of YuNet-aligned faces (an independent judge)."""

    name = "mobilefacenet"
    metric = "cosine"
    distance_threshold = 0.6
    confidence_scale = 0.1
    detector_name = "YuNet"

    def _load(self) -> None:
        import tensorflow as tf

        from faceoff.common import assets
        from faceoff.faces.models.mobilefacenet import INPUT_SIZE, MobileFaceNet

        self._yunet = cv2.FaceDetectorYN.create(
            str(assets.path("yunet")), "", (320, 320), DETECT_PASSES[0][1], _NMS_THRESHOLD, _TOP_K
        )
        self._model = MobileFaceNet.from_assets()
        spec = tf.TensorSpec([None, INPUT_SIZE, INPUT_SIZE, 3], tf.float32)
        self._forward = tf.function(self._model.embed, input_signature=[spec])
        log.info("MobileFaceNet recogniser loaded")

    def aligned_crop(self, photo: Photo) -> np.ndarray | None:
        """The 112x112 aligned RGB crop of the largest face, or None without a face."""
        self.load()
        with self._lock:
            face = self._detect(cv2.cvtColor(photo.pixels, cv2.COLOR_RGB2BGR))
        return None if face is None else align(photo.pixels, face[4:14])

    def embed_crops(self, crops: np.ndarray) -> np.ndarray:
        """``(N, 112, 112, 3)`` aligned RGB crops (0..255) -> ``(N, 192)`` unit embeddings."""
        self.load()
        batch = np.asarray(crops, np.float32).reshape(-1, CROP_SIZE, CROP_SIZE, 3)
        return np.asarray(self._forward(batch), np.float32)

    def _embed(self, photo: Photo) -> np.ndarray | None:
        face = self._detect(cv2.cvtColor(photo.pixels, cv2.COLOR_RGB2BGR))
        if face is None:
            return None
        crop = align(photo.pixels, face[4:14])
        return np.asarray(self._forward(crop[None].astype(np.float32)), np.float32).reshape(-1)
