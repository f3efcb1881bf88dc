"""Conversions between the evaluator's domain objects and ``faceoff.v1`` messages."""

from __future__ import annotations

from faceoff.common.errors import InvalidOption
from faceoff.evaluator.evaluation import EvaluationRequest, Verdict
from faceoff.v1 import evaluator_pb2


def request_from_proto(msg: evaluator_pb2.EvaluateRequest) -> EvaluationRequest:
    """A domain request from an RPC request (gallery order kept; repeated names refused)."""
    gallery: dict[str, list[bytes]] = {}
    for identity in msg.gallery:
        if identity.name in gallery:
            raise InvalidOption(
                f"gallery identity {identity.name!r} appears twice; give each identity once"
            )
        gallery[identity.name] = [image.data for image in identity.images]
    return EvaluationRequest(
        photo=msg.image.data,
        references=[image.data for image in msg.reference_images],
        gallery=gallery,
        recognizers=list(msg.recognizers),
        top_k=msg.top_k,
        use_api_threshold=msg.use_api_threshold,
        attacked_models=list(msg.attacked_models),
    )


def verdict_to_proto(verdict: Verdict) -> evaluator_pb2.Verdict:
    """One verdict as a message."""
    msg = evaluator_pb2.Verdict(
        recognizer=verdict.recognizer,
        white_box=verdict.white_box,
        configured=verdict.configured,
        error=verdict.error,
        error_kind=verdict.error_kind,
        top_k=[
            evaluator_pb2.IdentityScore(
                name=s.name, confidence=s.confidence, distance=s.distance or 0.0
            )
            for s in verdict.top_k
        ],
    )
    if verdict.verification is not None:
        v = verdict.verification
        msg.verified = True
        msg.confidence = v.confidence
        msg.threshold = v.threshold
        msg.match = v.match
        msg.distance = v.distance or 0.0
    if verdict.decoys is not None:
        msg.identified = verdict.decoys.identified
        msg.rank = verdict.decoys.rank
        msg.gallery_size = verdict.decoys.gallery_size
    return msg


def verdicts_to_proto(verdicts: list[Verdict]) -> evaluator_pb2.EvaluateResponse:
    """The RPC's response."""
    return evaluator_pb2.EvaluateResponse(verdicts=[verdict_to_proto(v) for v in verdicts])
