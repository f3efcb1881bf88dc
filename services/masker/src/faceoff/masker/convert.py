"""Conversions between the masker's domain objects and ``faceoff.v1`` messages."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faceoff.common.errors import InvalidOption
from faceoff.masker.options import ProtectionOptions, resolve
from faceoff.masker.protection import FaceReceipt, ProtectionResult
from faceoff.v1 import common_pb2, masker_pb2

_ATTACKS = {masker_pb2.ATTACK_PGD: "pgd", masker_pb2.ATTACK_CW: "cw"}
_NORMS = {masker_pb2.NORM_L2: "l2", masker_pb2.NORM_LINF: "linf"}
_LOSSES = {masker_pb2.LOSS_TARGET: "target", masker_pb2.LOSS_HINGE: "hinge"}
_MODES = {masker_pb2.MODE_UNTARGETED: False, masker_pb2.MODE_TARGETED: True}
_ATTACK_ENUMS = {name: value for value, name in _ATTACKS.items()}
_NORM_ENUMS = {name: value for value, name in _NORMS.items()}
_LOSS_ENUMS = {name: value for value, name in _LOSSES.items()}
FORMATS = {
    "JPEG": common_pb2.IMAGE_FORMAT_JPEG,
    "PNG": common_pb2.IMAGE_FORMAT_PNG,
    "WEBP": common_pb2.IMAGE_FORMAT_WEBP,
    "BMP": common_pb2.IMAGE_FORMAT_BMP,
    "TIFF": common_pb2.IMAGE_FORMAT_TIFF,
    "GIF": common_pb2.IMAGE_FORMAT_GIF,
}


def _enum(field: str, value: int, table: Mapping[Any, Any], enum: Any) -> Any:
    if value == 0:
        return None  # unspecified: the profile's choice
    if value not in table:
        accepted = ", ".join(enum.Name(k) for k in table)
        raise InvalidOption(f"{field} has unknown value {value}; accepted: {accepted}")
    return table[value]


def options_from_proto(msg: masker_pb2.ProtectOptions) -> ProtectionOptions:
    """Resolve the request's options against its profile (raises InvalidOption naming the field)."""
    optional = (
        "epsilon",
        "iterations",
        "learning_rate",
        "kappa",
        "alpha",
        "initial_const",
        "search_steps",
        "seed",
    )
    overrides: dict[str, Any] = {
        name: getattr(msg, name)
        for name in optional
        if msg.HasField(name)  # type: ignore[arg-type]
    }
    overrides["attack"] = _enum("attack", msg.attack, _ATTACKS, masker_pb2.Attack)
    overrides["norm"] = _enum("norm", msg.norm, _NORMS, masker_pb2.Norm)
    overrides["loss"] = _enum("loss", msg.loss, _LOSSES, masker_pb2.Loss)
    overrides["targeted"] = _enum("mode", msg.mode, _MODES, masker_pb2.Mode)
    if msg.target:
        overrides["target"] = msg.target
    if msg.face_indices:
        overrides["face_indices"] = tuple(msg.face_indices)
    if msg.strip_gps:
        overrides["strip_gps"] = True
    for name in ("momentum", "diversity", "ti_kernel", "eot", "adaptive_alpha", "psnr_floor"):
        if msg.HasField(name):
            overrides[name] = getattr(msg, name)
    for name in ("surrogates", "surrogate_weights", "loop_recognizers"):
        if getattr(msg, name):
            overrides[name] = tuple(getattr(msg, name))
    return resolve(msg.profile or None, **overrides)


def options_to_proto(options: ProtectionOptions) -> masker_pb2.ProtectOptions:
    """Resolved options as a message, every field set (the inverse of :func:`options_from_proto`)."""
    return masker_pb2.ProtectOptions(
        profile=options.profile,
        attack=_ATTACK_ENUMS[options.attack],
        norm=_NORM_ENUMS[options.norm],
        loss=_LOSS_ENUMS[options.loss],
        mode=masker_pb2.MODE_TARGETED if options.targeted else masker_pb2.MODE_UNTARGETED,
        epsilon=options.epsilon,
        iterations=options.iterations,
        learning_rate=options.learning_rate,
        kappa=options.kappa,
        alpha=options.alpha,
        initial_const=options.initial_const,
        search_steps=options.search_steps,
        target=options.target or "",
        face_indices=list(options.face_indices),
        seed=options.seed,
        strip_gps=options.strip_gps,
        momentum=options.momentum,
        diversity=options.diversity,
        ti_kernel=options.ti_kernel,
        eot=options.eot,
        surrogates=list(options.surrogates),
        surrogate_weights=list(options.surrogate_weights),
        adaptive_alpha=options.adaptive_alpha,
        psnr_floor=options.psnr_floor,
        loop_recognizers=list(options.loop_recognizers),
    )


def receipt_to_proto(face: FaceReceipt) -> masker_pb2.FaceReceipt:
    """One face's receipt as a message (an unchanged region's infinite PSNR is sent as 0)."""
    x, y, w, h = face.box
    return masker_pb2.FaceReceipt(
        index=face.index,
        box=common_pb2.BoundingBox(x=x, y=y, width=w, height=h),
        target=face.target or "",
        l2=face.l2,
        linf=face.linf,
        psnr=face.psnr if face.psnr != float("inf") else 0.0,
        ssim=face.ssim,
        distance_before=face.distance_before,
        distance_after=face.distance_after,
        alpha=face.alpha,
        verdicts=[
            masker_pb2.LoopVerdict(recognizer=v.recognizer, matched=v.matched, distance=v.distance)
            for v in face.verdicts
        ],
    )


def result_to_proto(result: ProtectionResult) -> masker_pb2.ProtectResponse:
    """The protected photo and its receipts as the RPC's response."""
    return masker_pb2.ProtectResponse(
        image=common_pb2.Image(
            data=result.data, format=FORMATS.get(result.format, common_pb2.IMAGE_FORMAT_UNSPECIFIED)
        ),
        faces=[receipt_to_proto(f) for f in result.faces],
        profile=result.options.profile,
        faces_found=result.faces_found,
        options=options_to_proto(result.options),
    )
