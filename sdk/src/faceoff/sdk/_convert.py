"""Keyword arguments to ``faceoff.v1`` requests, and responses to the SDK's result types.

Both clients (remote and embedded, sync and async) build their requests and read their answers
here, so a result does not depend on which one ran it.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, TypedDict

from faceoff.sdk.errors import InvalidArgumentError
from faceoff.sdk.photos import PhotoInput, read_photo, read_photos
from faceoff.sdk.types import (
    AppliedOptions,
    Box,
    Detection,
    Face,
    FaceReceipt,
    IdentityScore,
    Progress,
    ProtectedPhoto,
    Verdict,
)
from faceoff.v1 import common_pb2, detector_pb2, evaluator_pb2, masker_pb2, schema_pb2


class ProtectOptions(TypedDict, total=False):
    """Options of :meth:`faceoff.sdk.Client.protect` beyond the profile; each overrides the profile's value.

    Out-of-range values are refused by the masker with :class:`~faceoff.sdk.InvalidArgumentError`
    naming the field and the accepted range.
    """

    #: Optimiser: ``"pgd"`` (projected gradient descent) or ``"cw"`` (Carlini & Wagner).
    attack: Literal["pgd", "cw"]
    #: Norm of the perturbation: ``"l2"`` or ``"linf"``.
    norm: Literal["l2", "linf"]
    #: Adversarial loss: ``"target"`` or ``"hinge"``.
    loss: Literal["target", "hinge"]
    #: Pull the face towards a decoy identity as well as away from the person (``target=`` implies it).
    targeted: bool
    #: Perturbation bound before amplification, > 0.
    epsilon: float
    #: Optimiser iterations per face, 1..10000.
    iterations: int
    #: PGD step size or CW learning rate, > 0.
    learning_rate: float
    #: Hinge margin, >= 0.
    kappa: float
    #: Amplification after the attack, in (0, 20].
    alpha: float
    #: CW's initial loss constant, > 0.
    initial_const: float
    #: CW's binary-search steps, 1..50.
    search_steps: int
    #: Indices of the faces to protect (largest first); default all.
    faces: Sequence[int]
    #: Remove GPS tags from the output's EXIF.
    strip_gps: bool
    #: Transfer technique (PGD): momentum decay in [0, 1] (0: off).
    momentum: float
    #: Transfer technique (PGD): input-diversity probability in [0, 1] (0: off).
    diversity: float
    #: Transfer technique (PGD): translation-invariance kernel side, 0 or odd 3..15.
    ti_kernel: int
    #: Transfer technique (PGD): probability of a platform transform (resize + JPEG) per step.
    eot: float
    #: Surrogates the attack runs on: "facenet", "facenet512", "sface", "faceres", "mobileface"
    #: (two or more: an ensemble).
    surrogates: Sequence[str]
    #: One weight > 0 per surrogate.
    surrogate_weights: Sequence[float]
    #: Per face, the smallest alpha in [1, alpha] at which the loop recognisers stop matching.
    adaptive_alpha: bool
    #: Lowest face PSNR (dB) adaptive amplification may go to.
    psnr_floor: float
    #: Local recognisers the adaptive search consults, e.g. ``["dlib"]``.
    loop_recognizers: Sequence[str]
    #: Side (px) the face region is attacked at: 0 (the surrogate's 160 px crop) or 160..640.
    work_size: int
    #: Shaping (PGD): soft elliptical mask's fade, as a fraction of its radius (0: rectangle).
    feather: float
    #: Shaping (PGD): chroma budget relative to luminance, in [0, 1] (1: unshaped).
    chroma: float
    #: Shaping (PGD): texture-masking strength, in [0, 1] (0: a uniform budget).
    texture: float
    #: Shaping (PGD): weight of the 1 - SSIM penalty in the loss, in [0, 1000] (0: none).
    ssim: float
    #: Transfer technique (PGD): probability of a random alignment warp per step (0: off).
    warp: float
    #: Ensemble (PGD): normalise each surrogate's gradient so that none dominates.
    balance: bool
    #: Aligned surrogates (sface) see each face aligned by its own landmarks.
    align: bool
    #: Per face, the largest alpha up to ``alpha`` within this face Butteraugli (0: off).
    visibility: float
    #: Transfer technique (PGD): dropout rate on the surrogates' feature maps (0: off).
    dropout: float
    #: With visibility: the change reshaped by Butteraugli's difference map first.
    visibility_map: bool
    #: Ensemble (PGD): surrogates attacked per iteration, a random subset per face (0: all).
    surrogate_subset: int
    #: PGD: fraction of each surrogate's step pushing its mid-level features (needs balance).
    feature_level: float
    #: Transfer technique (PGD): SGM's gradient fraction on residual branches (0: off).
    skip_gradient: float
    #: Transfer technique (PGD): variance-tuning neighbours per iteration (VMI; 0: off).
    variance: int
    #: Per face, the largest low-frequency brightness change as displayed, 0..255 (0: off).
    blotch: float
    #: With visibility: faces displayed smaller than this (px) keep alpha <= 1, unmapped (0: none).
    visibility_min_face: int
    #: Smallest face to protect, in pixels (default 20).
    min_face_size: int
    #: Smallest detector confidence (default 0.9).
    min_confidence: float
    #: Protect at most this many faces, largest first (0: all).
    max_faces: int


def _declared_options() -> tuple[
    dict[str, tuple[Any, str, tuple[str, ...]]], tuple[str, ...], tuple[tuple[str, str], ...]
]:
    """The enum, scalar and list options of ``ProtectOptions``, read from the contract.

    Each field declares what it accepts (``[(faceoff.v1.accepts)]``); ``protect()`` takes its
    ``alias`` where it declares one (``face_indices``: ``faces``), else its name, as the
    keyword. ``profile``, ``target`` and ``seed`` are named parameters of ``protect()``;
    ``mode``'s alias ``targeted`` is a bool keyword; ``detect``'s fields are keywords of their
    own. Lists come as ``(keyword, field name)``.
    """
    enums: dict[str, tuple[Any, str, tuple[str, ...]]] = {}
    scalars: list[str] = []
    lists: list[tuple[str, str]] = []
    for field in masker_pb2.ProtectOptions.DESCRIPTOR.fields:
        alias = field.GetOptions().Extensions[schema_pb2.accepts].alias
        if field.name in ("profile", "detect", "target", "seed") or (
            field.enum_type is not None and alias  # mode: the bool keyword ``targeted``
        ):
            continue
        if field.enum_type is not None:
            enum = masker_pb2.DESCRIPTOR.enum_types_by_name[field.enum_type.name]
            prefix = f"{field.enum_type.name.upper()}_"
            names = tuple(v.name.removeprefix(prefix).lower() for v in enum.values if v.number)
            enums[field.name] = (getattr(masker_pb2, field.enum_type.name), prefix, names)
        elif field.is_repeated:
            lists.append((alias or field.name, field.name))
        else:
            scalars.append(field.name)
    return enums, tuple(scalars), tuple(lists)


_ENUMS, _SCALARS, _LISTS = _declared_options()
_PROFILES = masker_pb2.ProtectOptions.DESCRIPTOR.GetOptions().Extensions[schema_pb2.profiles]
#: The protection profiles, weakest first, as the contract declares them.
PROFILES: tuple[str, ...] = tuple(_PROFILES.names)
#: The profile a request that names none takes (the contract's default).
DEFAULT_PROFILE: str = _PROFILES.default
_DETECT = tuple(f.name for f in detector_pb2.DetectOptions.DESCRIPTOR.fields)
#: Every keyword :func:`protect_request` accepts beyond the named ones.
OPTION_NAMES: tuple[str, ...] = (
    *_ENUMS,
    "targeted",
    *_SCALARS,
    *(keyword for keyword, _ in _LISTS),
    *_DETECT,
)

_FORMATS: dict[int, str] = {
    common_pb2.IMAGE_FORMAT_JPEG: "JPEG",
    common_pb2.IMAGE_FORMAT_PNG: "PNG",
    common_pb2.IMAGE_FORMAT_WEBP: "WEBP",
    common_pb2.IMAGE_FORMAT_BMP: "BMP",
    common_pb2.IMAGE_FORMAT_TIFF: "TIFF",
    common_pb2.IMAGE_FORMAT_GIF: "GIF",
}


def _set(msg: Any, name: str, value: Any) -> None:
    try:
        setattr(msg, name, value)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"{name} has an invalid value {value!r} ({exc})") from None


def recognizer_names(recognizers: str | Iterable[str] | None) -> list[str]:
    """``"dlib,sface"`` or ``["dlib", "sface"]`` as a list of names."""
    if recognizers is None:
        return []
    items = recognizers.split(",") if isinstance(recognizers, str) else list(recognizers)
    return [n.strip() for n in items if n.strip()]


def protect_request(
    photo: PhotoInput,
    *,
    profile: str | None,
    reference_photos: Iterable[PhotoInput] | PhotoInput,
    target: str | None,
    seed: int | None,
    options: Mapping[str, Any],
) -> masker_pb2.ProtectRequest:
    """The ``ProtectRequest`` for :meth:`Client.protect`'s arguments.

    Raises:
        TypeError: an unknown keyword (the message lists the accepted ones).
        InvalidArgumentError: a value that cannot be sent (an unknown attack name, a negative count).
    """
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        raise TypeError(
            f"protect() got unexpected keyword argument(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(OPTION_NAMES)}"
        )
    msg = masker_pb2.ProtectOptions(profile=profile or "")
    for name, (enum, prefix, choices) in _ENUMS.items():
        value = options.get(name)
        if value is None:
            continue
        if value not in choices:
            raise InvalidArgumentError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        _set(msg, name, enum.Value(prefix + str(value).upper()))
    targeted = options.get("targeted")
    if targeted is None and target:
        targeted = True
    if targeted is not None:
        msg.mode = masker_pb2.MODE_TARGETED if targeted else masker_pb2.MODE_UNTARGETED
    if target:
        _set(msg, "target", target)
    for name in _SCALARS:
        if options.get(name) is not None:
            _set(msg, name, options[name])
    for keyword, name in _LISTS:
        value = options.get(keyword)
        if value is None:
            continue
        items = (
            [v.strip() for v in value.split(",") if v.strip()]
            if isinstance(value, str)
            else list(value)
        )
        try:
            getattr(msg, name).extend(items)
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(
                f"{keyword} has an invalid value {value!r} ({exc})"
            ) from None
    if seed is not None:
        _set(msg, "seed", seed)
    for name in _DETECT:
        if options.get(name) is not None:
            _set(msg.detect, name, options[name])
    return masker_pb2.ProtectRequest(
        image=common_pb2.Image(data=read_photo(photo)),
        options=msg,
        reference_images=[common_pb2.Image(data=d) for d in read_photos(reference_photos)],
    )


def detect_request(
    photo: PhotoInput, min_face_size: int | None = None, min_confidence: float | None = None
) -> detector_pb2.DetectRequest:
    """The ``DetectRequest`` for a photo (None: the detector's default for that option)."""
    request = detector_pb2.DetectRequest(image=common_pb2.Image(data=read_photo(photo)))
    if min_face_size is not None:
        request.options.min_face_size = min_face_size
    if min_confidence is not None:
        request.options.min_confidence = min_confidence
    return request


def evaluate_request(
    photo: PhotoInput | bytes,
    reference_photos: Iterable[PhotoInput] | PhotoInput,
    recognizers: str | Iterable[str] | None,
    *,
    gallery: Mapping[str, Iterable[PhotoInput]] | None = None,
    top_k: int = 0,
    use_api_threshold: bool = False,
    attacked_models: str | Iterable[str] = (),
) -> evaluator_pb2.EvaluateRequest:
    """The ``EvaluateRequest`` for :meth:`Client.evaluate`'s arguments."""
    msg = evaluator_pb2.EvaluateRequest(
        image=common_pb2.Image(data=read_photo(photo)),
        reference_images=[common_pb2.Image(data=d) for d in read_photos(reference_photos)],
        recognizers=recognizer_names(recognizers),
        use_api_threshold=use_api_threshold,
        attacked_models=recognizer_names(attacked_models),
    )
    _set(msg, "top_k", top_k)
    for name, photos in (gallery or {}).items():
        msg.gallery.add(name=name, images=[common_pb2.Image(data=d) for d in read_photos(photos)])
    return msg


# -- responses ---------------------------------------------------------------------------------


def _box(b: common_pb2.BoundingBox) -> Box:
    return Box(x=b.x, y=b.y, width=b.width, height=b.height)


def _size_and_format(msg: masker_pb2.ProtectResponse) -> tuple[int, int, str]:
    """Display size and format of the protected photo: as the masker reports them, or read from
    the image's header (with Pillow, ``faceoff-sdk[images]``) from a masker that does not."""
    fmt = _FORMATS.get(msg.image.format)
    if msg.width and msg.height and fmt:
        return msg.width, msg.height, fmt
    data, hint = msg.image.data, msg.image.format
    try:
        from PIL import Image
    except ImportError:
        raise ImportError(
            "this masker does not report the photo's size; install faceoff-sdk[images] "
            "(Pillow) to read it from the image"
        ) from None

    with Image.open(io.BytesIO(data)) as img:
        width, height = img.size
        orientation = img.getexif().get(0x0112, 1)
        fmt = _FORMATS.get(hint) or str(img.format)
    if orientation in (5, 6, 7, 8):  # the services store pixels upright, but be exact for any input
        width, height = height, width
    return width, height, fmt


def applied_options(msg: masker_pb2.ProtectOptions) -> AppliedOptions:
    """The resolved options a masker reports back."""
    return AppliedOptions(
        profile=msg.profile,
        attack=masker_pb2.Attack.Name(msg.attack).removeprefix("ATTACK_").lower(),
        norm=masker_pb2.Norm.Name(msg.norm).removeprefix("NORM_").lower(),
        loss=masker_pb2.Loss.Name(msg.loss).removeprefix("LOSS_").lower(),
        targeted=msg.mode == masker_pb2.MODE_TARGETED,
        epsilon=msg.epsilon,
        iterations=msg.iterations,
        learning_rate=msg.learning_rate,
        kappa=msg.kappa,
        alpha=msg.alpha,
        initial_const=msg.initial_const,
        search_steps=msg.search_steps,
        seed=msg.seed,
        strip_gps=msg.strip_gps,
        faces=tuple(msg.face_indices),
        target=msg.target or None,
        momentum=msg.momentum,
        diversity=msg.diversity,
        ti_kernel=msg.ti_kernel,
        eot=msg.eot,
        surrogates=tuple(msg.surrogates),
        adaptive_alpha=msg.adaptive_alpha,
        psnr_floor=msg.psnr_floor,
        loop_recognizers=tuple(msg.loop_recognizers),
        work_size=msg.work_size,
        feather=msg.feather,
        chroma=msg.chroma,
        texture=msg.texture,
        ssim=msg.ssim,
        warp=msg.warp,
        balance=msg.balance,
        align=msg.align,
        visibility=msg.visibility,
        dropout=msg.dropout,
        visibility_map=msg.visibility_map,
        surrogate_subset=msg.surrogate_subset,
        feature_level=msg.feature_level,
        skip_gradient=msg.skip_gradient,
        variance=msg.variance,
        blotch=msg.blotch,
        visibility_min_face=msg.visibility_min_face,
    )


def protected_photo(
    msg: masker_pb2.ProtectResponse, verdicts: Sequence[Verdict] = ()
) -> ProtectedPhoto:
    """A :class:`ProtectedPhoto` from the masker's response (and the evaluator's verdicts)."""
    data = msg.image.data
    width, height, fmt = _size_and_format(msg)
    if msg.HasField("options"):  # the evaluator marked white-box verdicts; mark the adaptive loop's
        loop = set(msg.options.loop_recognizers) if msg.options.adaptive_alpha else set()
        verdicts = [dataclasses.replace(v, in_loop=v.recognizer in loop) for v in verdicts]
    return ProtectedPhoto(
        data=data,
        format=fmt,
        width=width,
        height=height,
        faces=tuple(
            FaceReceipt(
                index=f.index,
                box=_box(f.box),
                target=f.target or None,
                l2=f.l2,
                linf=f.linf,
                psnr=f.psnr or None,  # the contract sends an unchanged region's infinite PSNR as 0
                ssim=f.ssim,
                distance_before=f.distance_before,
                distance_after=f.distance_after,
                alpha=f.alpha,
                butteraugli=f.butteraugli if f.HasField("butteraugli") else None,
                butteraugli_native=(
                    f.butteraugli_native if f.HasField("butteraugli_native") else None
                ),
                blotch=f.blotch,
                loop_verdicts=tuple(
                    (v.recognizer, v.matched, v.distance if v.HasField("distance") else None)
                    for v in f.verdicts
                ),
            )
            for f in msg.faces
        ),
        faces_found=msg.faces_found,
        profile=msg.profile,
        options=applied_options(msg.options) if msg.HasField("options") else None,
        verdicts=tuple(verdicts),
        notes=tuple(msg.notes),
    )


def detection(msg: detector_pb2.DetectResponse) -> Detection:
    """A :class:`Detection` from the detector's response."""
    names = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
    return Detection(
        width=msg.width,
        height=msg.height,
        faces=tuple(
            Face(
                box=_box(f.box),
                confidence=f.confidence,
                landmarks={
                    n: (getattr(f.landmarks, n).x, getattr(f.landmarks, n).y) for n in names
                },
            )
            for f in msg.faces
        ),
    )


def verdicts(msg: evaluator_pb2.EvaluateResponse) -> list[Verdict]:
    """The evaluator's verdicts, in request order."""
    out = []
    for v in msg.verdicts:
        local = v.distance != 0.0
        out.append(
            Verdict(
                recognizer=v.recognizer,
                white_box=v.white_box,
                configured=v.configured,
                confidence=v.confidence if v.verified else None,
                threshold=v.threshold if v.verified else None,
                match=v.match if v.verified else None,
                distance=v.distance if v.verified and local else None,
                top_k=tuple(
                    IdentityScore(name=s.name, confidence=s.confidence, distance=s.distance or None)
                    for s in v.top_k
                ),
                error=v.error or None,
                error_kind=v.error_kind or None,
                identified=v.identified if v.HasField("identified") else None,
                rank=v.rank if v.HasField("rank") else None,
                gallery_size=v.gallery_size if v.HasField("gallery_size") else None,
            )
        )
    return out


def progress(msg: masker_pb2.ProtectProgress) -> Progress:
    """A :class:`Progress` from a progress event."""
    return Progress(
        stage=msg.stage, faces=msg.faces, iteration=msg.iteration, iterations=msg.iterations
    )
