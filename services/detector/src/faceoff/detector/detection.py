"""Face detection with MTCNN (the ``mtcnn`` package, TensorFlow), independent of gRPC.

Large photos are detected on a reduced copy (longer side at most ``detect_max_side``; JPEGs are
decoded straight at a reduced DCT scale) and boxes and landmarks are mapped back to the
full-resolution photo in display coordinates (EXIF orientation applied).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from faceoff.common import tracing
from faceoff.common.errors import InvalidOption
from faceoff.common.imaging import DEFAULT_MAX_PIXELS, Photo, decode

log = logging.getLogger(__name__)

#: MTCNN's proposal network looks at 12x12 windows: nothing smaller can be detected.
MTCNN_MIN_WINDOW = 12
_RETRY_SCALE = 0.8
LANDMARK_NAMES: tuple[str, ...] = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@dataclass(frozen=True)
class DetectOptions:
    """Options of one detection.

    Attributes:
        min_face_size: Smallest face to report: the shorter side of its box, in full-resolution
            pixels (>= 1).
        min_confidence: Smallest detector confidence to report, in [0, 1].
        max_faces: Report at most this many faces, largest first (0: all).
    """

    min_face_size: int = 20
    min_confidence: float = 0.9
    max_faces: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.min_face_size, int) or self.min_face_size < 1:
            raise InvalidOption(
                f"min_face_size must be an integer >= 1 pixel, got {self.min_face_size!r}",
                field="options.min_face_size",
            )
        if not (
            isinstance(self.min_confidence, (int, float)) and 0.0 <= self.min_confidence <= 1.0
        ):
            raise InvalidOption(
                f"min_confidence must be in [0, 1], got {self.min_confidence!r}",
                field="options.min_confidence",
            )
        if not isinstance(self.max_faces, int) or self.max_faces < 0:
            raise InvalidOption(
                f"max_faces must be an integer >= 0 (0 means all), got {self.max_faces!r}",
                field="options.max_faces",
            )


@dataclass(frozen=True)
class DetectedFace:
    """One face in full-resolution display coordinates.

    Attributes:
        box: ``(x, y, width, height)`` in pixels.
        confidence: MTCNN's confidence in [0, 1].
        landmarks: The five landmarks by name (:data:`LANDMARK_NAMES`), each ``(x, y)``.
    """

    box: tuple[float, float, float, float]
    confidence: float
    landmarks: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def area(self) -> float:
        """Box area in square pixels."""
        return self.box[2] * self.box[3]


@dataclass(frozen=True)
class DetectionResult:
    """Faces of one photo, largest first, and the photo's display size."""

    width: int
    height: int
    faces: list[DetectedFace]


def _pick_device() -> str:
    import tensorflow as tf

    return "GPU:0" if tf.config.list_physical_devices("GPU") else "CPU:0"


class FaceDetector:
    """MTCNN face detector.

    Args:
        detect_max_side: Longer side, in pixels, of the copy detection runs on. Faces smaller
            than ``12 * long_side / detect_max_side`` full-resolution pixels cannot be found.
        max_pixels: Pixel limit for decoded photos.
        device: TensorFlow device (``"CPU:0"``, ``"GPU:0"``); by default the first GPU when one
            is visible, else the CPU.
    """

    def __init__(
        self,
        detect_max_side: int = 1024,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        device: str | None = None,
    ) -> None:
        if detect_max_side < 64:
            raise ValueError(f"detect_max_side must be >= 64 pixels, got {detect_max_side}")
        from faceoff.detector.mtcnn_weights import build_mtcnn  # heavy: imports TensorFlow

        self.detect_max_side = detect_max_side
        self.max_pixels = max_pixels
        self.device = device or _pick_device()
        self._mtcnn = build_mtcnn(self.device)  # weights verified, read without pickle's code paths
        self._lock = threading.Lock()
        # Warm up so the first request does not pay for graph tracing.
        self.detect_pixels(np.full((160, 160, 3), 128, np.uint8), DetectOptions())
        log.info("MTCNN loaded on %s (detect_max_side=%d)", self.device, detect_max_side)

    def detect(
        self,
        data: bytes,
        options: DetectOptions | None = None,
        should_stop: Callable[[], None] = lambda: None,
    ) -> DetectionResult:
        """Decode ``data`` (reduced for speed) and detect faces; see :meth:`detect_photo`."""
        with tracing.span("decode", bytes=len(data)):
            photo = decode(data, max_pixels=self.max_pixels, max_side=self.detect_max_side)
        with tracing.span("mtcnn", width=photo.full_width, height=photo.full_height):
            return self.detect_photo(photo, options, should_stop)

    def detect_photo(
        self,
        photo: Photo,
        options: DetectOptions | None = None,
        should_stop: Callable[[], None] = lambda: None,
    ) -> DetectionResult:
        """Detect faces in a decoded photo (possibly a reduced copy) in full-resolution coordinates.

        ``should_stop`` is called before each MTCNN pass (after waiting for the detector, which
        runs one photo at a time); it may raise to give up (the caller went away).
        """
        options = options or DetectOptions()
        pixels = photo.pixels
        scale = photo.scale
        if max(pixels.shape[:2]) > self.detect_max_side:
            import cv2

            scale = self.detect_max_side / max(photo.full_width, photo.full_height)
            size = (
                max(1, round(photo.full_width * scale)),
                max(1, round(photo.full_height * scale)),
            )
            pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
        faces = self.detect_pixels(pixels, options, scale=scale, should_stop=should_stop)
        if not faces and min(pixels.shape[:2]) * _RETRY_SCALE >= 2 * MTCNN_MIN_WINDOW:
            # MTCNN's proposal stage sometimes finds nothing at one pyramid alignment and a clear
            # face at a slightly different one (seen on photos of the shared set): look once more
            # at 80% size before answering "no faces".
            import cv2

            retry = cv2.resize(
                pixels, None, fx=_RETRY_SCALE, fy=_RETRY_SCALE, interpolation=cv2.INTER_AREA
            )
            faces = self.detect_pixels(
                retry,
                options,
                scale=scale * retry.shape[1] / pixels.shape[1],
                should_stop=should_stop,
            )
        return DetectionResult(width=photo.full_width, height=photo.full_height, faces=faces)

    def detect_pixels(
        self,
        pixels: np.ndarray,
        options: DetectOptions,
        scale: float = 1.0,
        should_stop: Callable[[], None] = lambda: None,
    ) -> list[DetectedFace]:
        """Detect faces in ``(H, W, 3)`` uint8 RGB ``pixels`` that are ``scale`` times the full photo.

        Returns faces in full-resolution coordinates (divided by ``scale``), largest first.
        ``should_stop`` is called once the detector is free, before MTCNN runs; it may raise.
        """
        h, w = pixels.shape[:2]
        if min(h, w) < MTCNN_MIN_WINDOW:
            return []
        min_size = max(MTCNN_MIN_WINDOW, math.floor(options.min_face_size * scale))
        with self._lock:
            should_stop()  # a caller that went away while waiting costs nothing more
            rows = self._mtcnn.detect_faces(
                np.ascontiguousarray(pixels),
                min_face_size=min_size,
                output_type="numpy",
                box_format="xyxy",
            )
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, 16)
        faces: list[DetectedFace] = []
        for row in rows:
            x1, y1, x2, y2, conf = (float(v) for v in row[1:6])
            if conf < options.min_confidence:
                continue
            box = (x1 / scale, y1 / scale, (x2 - x1) / scale, (y2 - y1) / scale)
            if min(box[2], box[3]) < options.min_face_size:
                continue
            # MTCNN stores the five x coordinates, then the five y coordinates.
            points = np.stack([row[6:11], row[11:16]], axis=1) / scale
            landmarks = {name: (float(x), float(y)) for name, (x, y) in zip(LANDMARK_NAMES, points)}
            faces.append(DetectedFace(box=box, confidence=conf, landmarks=landmarks))
        faces.sort(key=lambda f: f.area, reverse=True)
        if options.max_faces:
            faces = faces[: options.max_faces]
        return faces
