"""Conversions between the masker's domain objects and ``faceoff.v1`` messages."""

from __future__ import annotations

from typing import Any

from faceoff.common.errors import InvalidOption
from faceoff.detector.convert import options_from_proto as detect_options_from_proto
from faceoff.masker.options import ProtectionOptions, resolve
from faceoff.masker.pipeline import ProtectCall
from faceoff.masker.receipts import FaceReceipt, ProtectionResult
from faceoff.masker.schema import OPTIONS, OptionSpec
from faceoff.v1 import common_pb2, masker_pb2

FORMATS = {
    "JPEG": common_pb2.IMAGE_FORMAT_JPEG,
    "PNG": common_pb2.IMAGE_FORMAT_PNG,
    "WEBP": common_pb2.IMAGE_FORMAT_WEBP,
    "BMP": common_pb2.IMAGE_FORMAT_BMP,
    "TIFF": common_pb2.IMAGE_FORMAT_TIFF,
    "GIF": common_pb2.IMAGE_FORMAT_GIF,
}


def _from_field(msg: masker_pb2.ProtectOptions, spec: OptionSpec) -> Any:
    """The override a request's field asks for, or None when it leaves the profile's value."""
    value = getattr(msg, spec.name)
    if spec.kind == "enum":
        if value == 0:
            return None  # unspecified: the profile's choice
        names = {number: name for name, number in spec.enum_values.items()}
        if value not in names:
            raise InvalidOption(
                f"{spec.name} has unknown value {value}; accepted: {', '.join(spec.enum_values)}"
            )
        # mode arrives as the bool ``targeted`` (its alias)
        return names[value] == "targeted" if spec.keyword != spec.name else names[value]
    if spec.repeated:
        return tuple(value) if value else None
    if spec.optional:
        return value if msg.HasField(spec.name) else None  # type: ignore[arg-type]
    return value or None  # proto3 scalars without presence: the zero value means unset


def options_from_proto(msg: masker_pb2.ProtectOptions) -> ProtectionOptions:
    """Resolve the request's options against its profile (raises InvalidOption naming the field)."""
    overrides = {spec.keyword: _from_field(msg, spec) for spec in OPTIONS.values()}
    return resolve(msg.profile or None, **overrides)


def options_to_proto(options: ProtectionOptions) -> masker_pb2.ProtectOptions:
    """Resolved options as a message, every field set (the inverse of :func:`options_from_proto`)."""
    msg = masker_pb2.ProtectOptions(profile=options.profile)
    for name, spec in OPTIONS.items():
        value = getattr(options, spec.keyword)
        if spec.kind == "enum":
            # mode is the bool ``targeted`` (its alias)
            key = ("targeted" if value else "untargeted") if spec.keyword != name else value
            setattr(msg, name, spec.enum_values[key])
        elif spec.repeated:
            getattr(msg, name).extend(value)
        elif value is not None:
            setattr(msg, name, value)
    return msg


def receipt_to_proto(face: FaceReceipt) -> masker_pb2.FaceReceipt:
    """One face's receipt as a message (an unchanged region's infinite PSNR is sent as 0)."""
    x, y, w, h = face.box
    msg = masker_pb2.FaceReceipt(
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
    msg.blotch = face.blotch
    if face.butteraugli is not None:
        msg.butteraugli = face.butteraugli
    if face.butteraugli_native is not None:
        msg.butteraugli_native = face.butteraugli_native
    return msg


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
        notes=list(result.notes),
        width=result.width,
        height=result.height,
    )


def call_from_proto(request: masker_pb2.ProtectRequest) -> ProtectCall:
    """The protection a Protect request asks for (the masker's servicer and ``Client.local()``
    alike); bad detection options are refused naming them under ``options.detect``."""
    try:
        detect = detect_options_from_proto(request.options.detect)
    except InvalidOption as exc:
        field = exc.field and exc.field.replace("options.", "options.detect.", 1)
        raise exc.again(f"detect.{exc.message}", field=field) from None
    return ProtectCall(
        photo=request.image.data,
        options=options_from_proto(request.options),
        references=[r.data for r in request.reference_images],
        detect_options=detect,
    )
