"""What the SDK returns: typed, immutable results built from the ``faceoff.v1`` messages.

The remote and the embedded client build these from the same messages, so a result looks the
same whichever ran the pipeline.
"""

from __future__ import annotations

import io
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "AppliedOptions",
    "Box",
    "Detection",
    "Face",
    "FaceReceipt",
    "IdentityScore",
    "Progress",
    "ProtectedPhoto",
    "Verdict",
]

#: File suffix of each format the masker writes.
SUFFIXES: dict[str, str] = {
    "JPEG": ".jpg",
    "PNG": ".png",
    "WEBP": ".webp",
    "BMP": ".bmp",
    "TIFF": ".tiff",
}


@dataclass(frozen=True)
class Box:
    """A rectangle in pixels of the photo as displayed (EXIF orientation applied)."""

    x: float
    y: float
    width: float
    height: float

    def as_tuple(self) -> tuple[float, float, float, float]:
        """``(x, y, width, height)``."""
        return (self.x, self.y, self.width, self.height)


@dataclass(frozen=True)
class Face:
    """One detected face.

    Attributes:
        box: Where the face is.
        confidence: The detector's confidence in [0, 1].
        landmarks: ``left_eye``, ``right_eye``, ``nose``, ``mouth_left``, ``mouth_right`` as ``(x, y)``.
    """

    box: Box
    confidence: float
    landmarks: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """``{"box": [x, y, w, h], "confidence": c, "landmarks": {name: [x, y]}}`` (rounded)."""
        return {
            "box": [round(v, 1) for v in self.box.as_tuple()],
            "confidence": round(self.confidence, 4),
            "landmarks": {k: [round(x, 1), round(y, 1)] for k, (x, y) in self.landmarks.items()},
        }


@dataclass(frozen=True)
class Detection:
    """The faces of a photo, largest first, and the photo's display size."""

    width: int
    height: int
    faces: tuple[Face, ...]

    def to_json(self) -> dict[str, Any]:
        """``{"width": W, "height": H, "faces": [...]}`` (the shape ``faceoff detect --json`` prints)."""
        return {
            "width": self.width,
            "height": self.height,
            "faces": [f.to_json() for f in self.faces],
        }


@dataclass(frozen=True)
class FaceReceipt:
    """What was done to one face.

    Attributes:
        index: The face's index in the detector's largest-first list.
        box: The face's box.
        target: The decoy it was pulled towards (targeted mode), else None.
        l2: L2 norm of the applied perturbation at crop scale (160x160, values in [0, 1]).
        linf: Largest change of any pixel channel at crop scale.
        psnr: PSNR of the protected face region against the original, in dB (None when unchanged).
        ssim: SSIM of the protected face region against the original.
        distance_before: The surrogate's mean distance from the face to the person's references.
        distance_after: The same distance measured on the protected photo.
        alpha: The amplification applied to this face (the options' alpha, or the adaptive choice).
        loop_verdicts: With adaptive amplification, each loop recogniser's verdict on the face at
            that alpha: ``(recognizer, still matched, distance or None when it found no face)``.
        butteraugli: Butteraugli distance of the face (box + 25%) as platforms display the photo
            (longer side at most 1080 px); 1.0 is "just noticeable". None when the masker has
            no Butteraugli tool.
        butteraugli_native: The same at the photo's own resolution.
        blotch: The largest low-frequency brightness change of the same window as displayed, in
            0..255 levels: soft darker or paler patches, which Butteraugli does not see.
    """

    index: int
    box: Box
    target: str | None
    l2: float
    linf: float
    psnr: float | None
    ssim: float
    distance_before: float
    distance_after: float
    alpha: float = 0.0
    loop_verdicts: tuple[tuple[str, bool, float | None], ...] = ()
    butteraugli: float | None = None
    butteraugli_native: float | None = None
    blotch: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the shape ``faceoff protect --json`` prints)."""
        out = {
            "index": self.index,
            "box": [round(v, 1) for v in self.box.as_tuple()],
            "target": self.target,
            "l2": round(self.l2, 4),
            "linf": round(self.linf, 4),
            "psnr": None if self.psnr is None else round(self.psnr, 2),
            "ssim": round(self.ssim, 4),
            "distance_before": round(self.distance_before, 4),
            "distance_after": round(self.distance_after, 4),
            "alpha": round(self.alpha, 4),
            "butteraugli": None if self.butteraugli is None else round(self.butteraugli, 3),
            "butteraugli_native": (
                None if self.butteraugli_native is None else round(self.butteraugli_native, 3)
            ),
            "blotch": round(self.blotch, 2),
        }
        if self.butteraugli is None:
            out["butteraugli_note"] = "not measured: the masker has no butteraugli tool"
        if self.loop_verdicts:
            out["verdicts"] = [
                {"recognizer": r, "matched": m, "distance": None if d is None else round(d, 4)}
                for r, m, d in self.loop_verdicts
            ]
        return out


@dataclass(frozen=True)
class AppliedOptions:
    """The settings a photo was protected with: the profile's, with the request's overrides applied."""

    profile: str
    attack: str
    norm: str
    loss: str
    targeted: bool
    epsilon: float
    iterations: int
    learning_rate: float
    kappa: float
    alpha: float
    initial_const: float
    search_steps: int
    seed: int
    strip_gps: bool
    faces: tuple[int, ...] = ()
    target: str | None = None
    momentum: float = 0.0
    diversity: float = 0.0
    ti_kernel: int = 0
    eot: float = 0.0
    surrogates: tuple[str, ...] = ()
    adaptive_alpha: bool = False
    psnr_floor: float = 0.0
    loop_recognizers: tuple[str, ...] = ()
    work_size: int = 0
    feather: float = 0.0
    chroma: float = 1.0
    texture: float = 0.0
    ssim: float = 0.0
    warp: float = 0.0
    balance: bool = False
    align: bool = False
    visibility: float = 0.0
    dropout: float = 0.0
    visibility_map: bool = False
    surrogate_subset: int = 0
    feature_level: float = 0.0
    skip_gradient: float = 0.0
    variance: int = 0
    blotch: float = 0.0
    visibility_min_face: int = 0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (floats rounded to float32 precision)."""
        out = {
            "attack": self.attack,
            "norm": self.norm,
            "loss": self.loss,
            "targeted": self.targeted,
            "epsilon": round(self.epsilon, 6),
            "iterations": self.iterations,
            "alpha": round(self.alpha, 6),
            "kappa": round(self.kappa, 6),
            "seed": self.seed,
            "surrogates": list(self.surrogates),
            "momentum": round(self.momentum, 6),
            "diversity": round(self.diversity, 6),
            "ti_kernel": self.ti_kernel,
            "eot": round(self.eot, 6),
            "adaptive_alpha": self.adaptive_alpha,
            "work_size": self.work_size,
            "feather": round(self.feather, 6),
            "chroma": round(self.chroma, 6),
            "texture": round(self.texture, 6),
            "ssim": round(self.ssim, 6),
            "warp": round(self.warp, 6),
            "balance": self.balance,
            "align": self.align,
            "visibility": round(self.visibility, 6),
            "dropout": round(self.dropout, 6),
            "visibility_map": self.visibility_map,
            "surrogate_subset": self.surrogate_subset,
            "feature_level": round(self.feature_level, 6),
            "skip_gradient": round(self.skip_gradient, 6),
            "variance": self.variance,
            "blotch": round(self.blotch, 6),
            "visibility_min_face": self.visibility_min_face,
        }
        if self.adaptive_alpha:
            out["psnr_floor"] = round(self.psnr_floor, 6)
            out["loop_recognizers"] = list(self.loop_recognizers)
        return out


@dataclass(frozen=True)
class IdentityScore:
    """A gallery identity and the recogniser's confidence that the photo shows it."""

    name: str
    confidence: float
    distance: float | None = None


@dataclass(frozen=True)
class Verdict:
    """One recogniser's answer: would it still match the photo to the person, or pick them out?

    The question that says whether a photo is protected against a recogniser is
    :attr:`identified`: does the recogniser still pick the person out of a gallery of the person
    and public figures? A verdict marked :attr:`white_box` or :attr:`in_loop` says nothing about
    that, whatever it holds: the protection was computed against that very model.

    Attributes:
        recognizer: ``"dlib"``, ``"mobilefacenet"``, ``"sface"``, ``"facenet"``, ``"facenet512"``,
            ``"rekognition"``, ``"azure"`` or ``"facepp"``.
        white_box: True for a model the attack ran on (the masker's surrogate, or a member of
            its ensemble): its answer says nothing about transfer.
        in_loop: True for a recogniser the masker consulted while choosing alpha (adaptive
            amplification): it was tuned against, so it is no independent judge either.
        configured: False when the evaluator does not run this recogniser (a cloud API without
            credentials); nothing else is set then.
        confidence: In [0, 1], against the reference photos (None when verification did not run).
        threshold: The threshold applied to ``confidence``.
        match: ``confidence >= threshold``: the recogniser still says "same person".
        distance: Distance to the references' centroid (local recognisers only).
        top_k: Ranked gallery identities, when a gallery was given.
        identified: True when the recogniser still picks the person out of its built-in decoy
            gallery (the person ranks first): the photo is not protected against it. False when
            it ranks someone else first. None when the identification did not run (cloud APIs,
            which have no built-in gallery; no reference photos; an error).
        rank: The person's rank in that gallery, 1 = nearest (None as for ``identified``).
        gallery_size: Identities ranked: the person plus the public figures kept (a public
            figure who is the person themselves is left out).
        error: What went wrong with this recogniser, or None.
        error_kind: ``"no_face"``, ``"timeout"``, ``"auth"``, ``"throttled"``, ... or None.
    """

    recognizer: str
    white_box: bool
    configured: bool
    confidence: float | None = None
    threshold: float | None = None
    match: bool | None = None
    distance: float | None = None
    top_k: tuple[IdentityScore, ...] = ()
    error: str | None = None
    error_kind: str | None = None
    in_loop: bool = False
    identified: bool | None = None
    rank: int | None = None
    gallery_size: int | None = None

    @property
    def verified(self) -> bool:
        """True when the verification against the references ran (``match`` is then set)."""
        return self.match is not None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the shape ``faceoff evaluate --json`` prints)."""
        out: dict[str, Any] = {
            "recognizer": self.recognizer,
            "white_box": self.white_box,
            "configured": self.configured,
        }
        if self.in_loop:
            out["in_loop"] = True
        if self.confidence is not None and self.threshold is not None:
            out.update(
                confidence=round(self.confidence, 4),
                threshold=round(self.threshold, 4),
                match=self.match,
            )
            if self.distance is not None:
                out["distance"] = round(self.distance, 4)
        if self.top_k:
            out["top_k"] = [
                {
                    "name": s.name,
                    "confidence": round(s.confidence, 4),
                    **({"distance": round(s.distance, 4)} if s.distance is not None else {}),
                }
                for s in self.top_k
            ]
        if self.rank is not None:
            out.update(identified=self.identified, rank=self.rank, gallery_size=self.gallery_size)
        if self.error:
            out.update(error=self.error, error_kind=self.error_kind)
        return out


@dataclass(frozen=True)
class Progress:
    """A progress event of one protection.

    Attributes:
        stage: ``"detect"``, ``"attack"`` or ``"paste"``, in that order.
        faces: Faces being protected (0 until the faces are known).
        iteration: Attack iteration reached (0 outside the attack stage's progress).
        iterations: Total attack iterations (0 before the attack stage).
    """

    stage: str
    faces: int
    iteration: int
    iterations: int

    @property
    def fraction(self) -> float:
        """Attack progress in [0, 1] (0 before the attack, 1 after it)."""
        if self.stage == "paste":
            return 1.0
        return self.iteration / self.iterations if self.iterations else 0.0


@dataclass(frozen=True)
class ProtectedPhoto:
    """A protected photo and its receipts.

    Attributes:
        data: The protected photo, encoded.
        format: ``"JPEG"``, ``"PNG"``, ``"WEBP"``, ``"BMP"`` or ``"TIFF"`` (a GIF comes back as PNG).
        width: Width as displayed, in pixels.
        height: Height as displayed, in pixels.
        faces: One receipt per protected face.
        faces_found: Faces the detector found (protected or not).
        profile: The profile the options started from.
        options: The settings actually applied.
        verdicts: The evaluator's verdicts on the protected photo when ``check`` named recognisers.
        notes: What was changed in the file beyond the faces (metadata that could not be kept),
            in words; empty when nothing was.

    Example::

        protected = client.protect("me.jpg")
        protected.save("me.protected.jpg")
        print(protected.faces[0].psnr, protected.faces[0].distance_after)
    """

    data: bytes = field(repr=False)
    format: str
    width: int
    height: int
    faces: tuple[FaceReceipt, ...]
    faces_found: int
    profile: str
    options: AppliedOptions | None = None
    verdicts: tuple[Verdict, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def suffix(self) -> str:
        """The usual file suffix of :attr:`format`, e.g. ``".jpg"``."""
        return SUFFIXES.get(self.format, "." + self.format.lower())

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the photo to ``path`` atomically and return the path.

        The bytes go to a temporary file in the same folder, are flushed to disk and then
        renamed over ``path``, so ``path`` never holds a partial photo. Missing folders are made.
        """
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        while True:
            tmp = target.parent / f".{target.name}.{secrets.token_hex(4)}.part"
            try:  # created like any new file (mode 0666 less the umask), unlike mkstemp's 0600
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
                break
            except FileExistsError:
                continue
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(self.data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    def to_json(self) -> dict[str, Any]:
        """The receipt as a JSON-ready dict (no image bytes)."""
        out: dict[str, Any] = {
            "format": self.format,
            "width": self.width,
            "height": self.height,
            "bytes": len(self.data),
            "faces_found": self.faces_found,
            "faces_protected": len(self.faces),
            "profile": self.profile,
        }
        if self.options is not None:
            out["options"] = self.options.to_json()
        out["faces"] = [f.to_json() for f in self.faces]
        if self.verdicts:
            out["verdicts"] = [v.to_json() for v in self.verdicts]
        if self.notes:
            out["notes"] = list(self.notes)
        return out

    def image(self) -> Any:
        """The photo as a Pillow image (needs Pillow: ``faceoff-sdk[images]``)."""
        try:
            from PIL import Image
        except ImportError:
            raise ImportError(
                "ProtectedPhoto.image() needs Pillow: install faceoff-sdk[images]"
            ) from None

        return Image.open(io.BytesIO(self.data))
