"""The ``facenet`` recogniser: built on the masker's ``facenet`` surrogate.

The pipeline is the masker's: MTCNN (:class:`faceoff.detector.detection.FaceDetector`) finds the
largest face, :mod:`faceoff.common.crops` cuts the box plus a 10% margin and resizes it to
160x160, and FaceNet (:func:`faceoff.faces.models.load_surrogate`) embeds it, L2-normalised.
A protected photo that fools this recogniser has fooled a model the attack was computed on
whenever ``facenet`` was among its surrogates (every profile's): its verdict is then white-box
(:mod:`faceoff.faces.whitebox`) and says nothing about transfer.

Embeddings are compared by Euclidean distance. FaceNet has no single published threshold for
these weights, so it was chosen on the shared celebrity set (10 identities, 5 photos and 9
aligned crops each). Photo against photo, same-person distances have median 0.66 (5th-95th
percentile 0.43-0.95, largest 1.10) and different people median 1.41 (5th-95th percentile
1.23-1.54, smallest 0.975). The threshold is 1.05 (squared distance 1.10, cosine similarity
0.45): 2% of same-person photo pairs fall outside it and 0.8% of different-person pairs inside
(aligned crops: 0% and 1.4%). Leaning to the lenient side of equal error is deliberate: an
evaluator that under-reports matches would overstate the protection. The confidence map has
scale 0.1.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import OrderedDict
from typing import Any

import numpy as np

from faceoff.common.imaging import Photo
from faceoff.faces.recognizers.base import EmbeddingRecognizer

log = logging.getLogger(__name__)

#: Side of FaceNet's square input.
CROP_SIZE = 160

Box = tuple[float, float, float, float]


class _FaceBoxes:
    """The largest MTCNN face box of the most recent photos, shared by the FaceNet recognisers.

    ``facenet`` and ``facenet512`` cut the same crop from the same detection, so an evaluation
    that asks both detects each photo once. A box is keyed by the photo object (its ``id``,
    confirmed by a weak reference, so a recycled ``id`` never matches) and the detection size;
    only boxes are kept, in memory, for at most ``size`` photos.
    """

    def __init__(self, size: int = 128) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._boxes: OrderedDict[tuple[int, int], tuple[weakref.ref[Photo], Box | None]] = (
            OrderedDict()
        )

    def get(self, photo: Photo, detect_max_side: int) -> tuple[bool, Box | None]:
        """``(True, box or None when there is no face)`` for a known photo, else ``(False, None)``."""
        with self._lock:
            entry = self._boxes.get((id(photo), detect_max_side))
            if entry is None or entry[0]() is not photo:
                return False, None
            return True, entry[1]

    def put(self, photo: Photo, detect_max_side: int, box: Box | None) -> None:
        """Remember ``photo``'s box (None: no face), forgetting the oldest beyond the size."""
        with self._lock:
            key = (id(photo), detect_max_side)
            self._boxes[key] = (weakref.ref(photo), box)
            self._boxes.move_to_end(key)
            while len(self._boxes) > self._size:
                self._boxes.popitem(last=False)


_face_boxes = _FaceBoxes()


class FaceNetRecognizer(EmbeddingRecognizer):
    """FaceNet embeddings of MTCNN crops (the masker's surrogate).

    Args:
        detect_max_side: Longer side of the copy MTCNN runs on.
    """

    name = "facenet"
    #: The masker surrogate (:func:`faceoff.faces.models.load_surrogate` name) that embeds the crops.
    surrogate = "facenet"
    metric = "euclidean"
    distance_threshold = 1.05
    confidence_scale = 0.1
    detector_name = "MTCNN"
    unit_centroids = True

    def __init__(self, detect_max_side: int = 1024) -> None:
        super().__init__()
        self.detect_max_side = detect_max_side

    def _load(self) -> None:
        from faceoff.detector.detection import FaceDetector
        from faceoff.faces.models import load_surrogate

        self._detector = FaceDetector(detect_max_side=self.detect_max_side)
        self._model: Any = load_surrogate(self.surrogate)
        # Warm up: the first call traces the graph.
        self._embed_crops(np.full((1, CROP_SIZE, CROP_SIZE, 3), 0.5, np.float32))
        log.info("%s recogniser loaded", self.name)

    def _embed_crops(self, crops01: np.ndarray) -> np.ndarray:
        if hasattr(self._model, "embed_numpy"):
            return np.asarray(self._model.embed_numpy(crops01), dtype=np.float32)
        import tensorflow as tf

        return np.asarray(self._model.embed(tf.constant(crops01, tf.float32)), dtype=np.float32)

    def embed_crops(self, crops01: np.ndarray) -> np.ndarray:
        """Embed already cut ``(N, 160, 160, 3)`` crops in [0, 1]; returns ``(N, D)`` unit vectors."""
        self.load()
        arr = np.asarray(crops01, dtype=np.float32)
        if arr.ndim != 4 or arr.shape[1:] != (CROP_SIZE, CROP_SIZE, 3):
            raise ValueError(
                f"crops01 has shape {arr.shape}; expected (N, {CROP_SIZE}, {CROP_SIZE}, 3)"
            )
        with self._lock:
            return self._embed_crops(arr)

    def _embed(self, photo: Photo) -> np.ndarray | None:
        from faceoff.common.crops import crop_region, extract_crop
        from faceoff.detector.detection import DetectOptions

        known, box = _face_boxes.get(photo, self.detect_max_side)
        if not known:
            result = self._detector.detect_photo(photo, DetectOptions(max_faces=1))
            if result.faces:
                # Boxes are in full-resolution coordinates; the pixels may be a reduced copy.
                x, y, w, h = (v * photo.scale for v in result.faces[0].box)
                box = (x, y, w, h)
            _face_boxes.put(photo, self.detect_max_side, box)
        if box is None:
            return None
        region = crop_region(box, photo.width, photo.height)
        crop = extract_crop(photo.pixels, region, CROP_SIZE)
        embedding: np.ndarray = self._embed_crops(crop[None])[0]
        return embedding
