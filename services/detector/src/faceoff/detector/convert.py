"""Conversions between the detector's domain objects and ``faceoff.v1`` messages.

Used by the detector's servicer and by the masker's detector client, so both ends read and
write faces the same way.
"""

from __future__ import annotations

from faceoff.detector.detection import LANDMARK_NAMES, DetectedFace, DetectionResult, DetectOptions
from faceoff.v1 import common_pb2, detector_pb2


def options_from_proto(msg: detector_pb2.DetectOptions) -> DetectOptions:
    """Domain options from a request; unset fields take the defaults (raises InvalidOption)."""
    defaults = DetectOptions()
    return DetectOptions(
        min_face_size=msg.min_face_size
        if msg.HasField("min_face_size")
        else defaults.min_face_size,
        min_confidence=msg.min_confidence
        if msg.HasField("min_confidence")
        else defaults.min_confidence,
        max_faces=msg.max_faces,
    )


def options_to_proto(options: DetectOptions) -> detector_pb2.DetectOptions:
    """A request's options from domain options."""
    return detector_pb2.DetectOptions(
        min_face_size=options.min_face_size,
        min_confidence=options.min_confidence,
        max_faces=options.max_faces,
    )


def face_to_proto(face: DetectedFace) -> common_pb2.Face:
    """One face as a message."""
    x, y, w, h = face.box
    landmarks = common_pb2.Landmarks(
        **{name: common_pb2.Point(x=px, y=py) for name, (px, py) in face.landmarks.items()}
    )
    return common_pb2.Face(
        box=common_pb2.BoundingBox(x=x, y=y, width=w, height=h),
        landmarks=landmarks,
        confidence=face.confidence,
    )


def face_from_proto(msg: common_pb2.Face) -> DetectedFace:
    """One face from a message."""
    b = msg.box
    landmarks = {
        name: (getattr(msg.landmarks, name).x, getattr(msg.landmarks, name).y)
        for name in LANDMARK_NAMES
    }
    return DetectedFace(
        box=(b.x, b.y, b.width, b.height), confidence=msg.confidence, landmarks=landmarks
    )


def result_to_proto(result: DetectionResult) -> detector_pb2.DetectResponse:
    """A detection result as the RPC's response."""
    return detector_pb2.DetectResponse(
        width=result.width, height=result.height, faces=[face_to_proto(f) for f in result.faces]
    )


def result_from_proto(msg: detector_pb2.DetectResponse) -> DetectionResult:
    """A detection result from the RPC's response."""
    return DetectionResult(
        width=msg.width, height=msg.height, faces=[face_from_proto(f) for f in msg.faces]
    )
