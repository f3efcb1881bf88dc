"""What the cloud adapters share: their errors, pairwise verification and identification, uploads.

A cloud face API compares two photos at a time. :class:`CloudRecognizer` builds the recogniser
interface on that one operation:

- **verify** compares the photo with each reference and keeps the best comparison: the photo
  matches the user when any reference matches it (what a platform holding several photos of the
  user would find). Its confidence is the API's own score normalised to [0, 1]; the threshold is
  the paper's tau = 0.5 unless ``use_api_threshold`` asks for the API's own.
- **identify** compares the photo with every gallery photo (at most
  :data:`MAX_GALLERY_PHOTOS` per call, since each is a billed API call), scores each identity by
  its best photo and ranks them.

Errors (:mod:`faceoff.evaluator.cloud.errors`) name the backend and what went wrong, and never
carry credentials: an API that refuses the credentials raises ``CloudAuthError``; throttling
raises ``CloudThrottled`` (retried with backoff by :mod:`faceoff.evaluator.cloud.retry`); an
answer that does not have the documented shape raises ``CloudBadResponse``.
"""

from __future__ import annotations

import abc
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from PIL import Image

from faceoff.common.errors import InvalidOption
from faceoff.evaluator.cloud.errors import CloudBadResponse
from faceoff.evaluator.cloud.retry import RetryPolicy, call_with_retries
from faceoff.faces.recognizers.base import (
    DEFAULT_TOP_K,
    PAPER_TAU,
    Assessment,
    Decoys,
    FacePhoto,
    Gallery,
    IdentityScore,
    Recognizer,
    Verification,
    check_gallery,
    check_references,
    check_top_k,
)

T = TypeVar("T")

#: Most gallery photos one identification may send to a cloud API (each is one billed call).
MAX_GALLERY_PHOTOS = 50


@dataclass(frozen=True)
class Comparison:
    """One pairwise comparison.

    Attributes:
        confidence: The API's score normalised to [0, 1].
        api_threshold: The API's own threshold on that normalised score.
    """

    confidence: float
    api_threshold: float


@dataclass(frozen=True)
class UploadLimits:
    """What an API accepts as an image upload."""

    formats: tuple[str, ...] = ("JPEG", "PNG")
    max_bytes: int = 5 * 1024 * 1024
    max_side: int = 4096


def _orientation(data: bytes) -> int:
    try:
        with Image.open(io.BytesIO(data)) as img:
            return int(img.getexif().get(0x0112, 1) or 1)
    except Exception:  # noqa: BLE001 - the photo was decoded before; a bad EXIF block means "re-encode"
        return 0


def upload_bytes(photo: FacePhoto, limits: UploadLimits) -> bytes:
    """The bytes to upload for ``photo``: the file as received when the API takes it as is.

    Otherwise (another format, EXIF-rotated, too large) the upright pixels are re-encoded: PNG
    when that fits (lossless, so a perturbation survives), else JPEG quality 95, halving the
    size until it fits. Nothing is written to disk.
    """
    p = photo.photo
    if (
        p.format in limits.formats
        and len(photo.data) <= limits.max_bytes
        and max(p.full_width, p.full_height) <= limits.max_side
        and _orientation(photo.data) == 1
    ):
        return photo.data
    img = Image.fromarray(p.pixels, "RGB")
    if max(img.size) > limits.max_side:
        scale = limits.max_side / max(img.size)
        img = img.resize(
            (max(1, int(img.width * scale)), max(1, int(img.height * scale))),
            Image.Resampling.LANCZOS,
        )
    if "PNG" in limits.formats:
        buf = io.BytesIO()
        img.save(buf, "PNG")
        if buf.tell() <= limits.max_bytes:
            return buf.getvalue()
    while True:
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=95)
        if buf.tell() <= limits.max_bytes or max(img.size) <= 64:
            return buf.getvalue()
        img = img.resize(
            (max(1, img.width // 2), max(1, img.height // 2)), Image.Resampling.LANCZOS
        )


class CloudRecognizer(Recognizer):
    """A recogniser backed by a cloud API's pairwise comparison.

    Subclasses set ``name``, ``limits`` and implement :meth:`_prepare` (turn the probe into
    what :meth:`_compare` needs, e.g. a detected face id) and :meth:`_compare`. They make each
    HTTP request through :meth:`_call`, which retries throttling and transient failures with
    backoff within the deadline, and raise :mod:`~faceoff.evaluator.cloud.errors` or
    :class:`~faceoff.common.errors.NoFaceFound`.

    Args:
        policy: Retries, backoff and per-request timeout.
    """

    limits = UploadLimits()
    #: The API's own threshold on the normalised confidence (see each adapter).
    api_threshold: float = PAPER_TAU

    def __init__(self, policy: RetryPolicy | None = None) -> None:
        self.policy = policy or RetryPolicy()

    def threshold(self, use_api_threshold: bool = False) -> float:
        """tau = 0.5, or the API's own threshold."""
        return self.api_threshold if use_api_threshold else PAPER_TAU

    def _call(self, request: Callable[[float], T], deadline: float | None) -> T:
        """Run one HTTP request ``request(timeout)`` with retries (see :mod:`~faceoff.evaluator.cloud.retry`)."""
        return call_with_retries(request, policy=self.policy, deadline=deadline, backend=self.name)

    @abc.abstractmethod
    def _prepare(self, probe: FacePhoto, deadline: float | None) -> Any:
        """Whatever :meth:`_compare` needs of the probe, made once per verification."""

    @abc.abstractmethod
    def _compare(
        self, prepared: Any, probe: FacePhoto, other: FacePhoto, deadline: float | None
    ) -> Comparison:
        """Compare the probe's largest face with ``other``'s."""

    def verify(
        self,
        probe: FacePhoto,
        references: Sequence[FacePhoto],
        *,
        use_api_threshold: bool = False,
        deadline: float | None = None,
    ) -> Verification:
        """See the module docstring: the best comparison over the references."""
        check_references(references)
        return self._verify(
            self._prepare(probe, deadline), probe, references, use_api_threshold, deadline
        )

    def identify(
        self,
        probe: FacePhoto,
        gallery: Gallery,
        top_k: int = DEFAULT_TOP_K,
        *,
        deadline: float | None = None,
    ) -> list[IdentityScore]:
        """See the module docstring: each identity scored by its best photo."""
        top_k = check_top_k(top_k)
        self._check_gallery(gallery)
        return self._identify(self._prepare(probe, deadline), probe, gallery, top_k, deadline)

    def assess(
        self,
        probe: FacePhoto,
        references: Sequence[FacePhoto],
        gallery: Gallery,
        top_k: int = DEFAULT_TOP_K,
        *,
        use_api_threshold: bool = False,
        deadline: float | None = None,
        decoys: Decoys | None = None,
    ) -> Assessment:
        """As :meth:`Recognizer.assess`, preparing the probe (e.g. detecting it) once.

        ``decoys`` are ignored: they are embeddings in a local model's space, and a cloud API
        has no gallery of its own to rank against.
        """
        top_k = check_top_k(top_k)
        if gallery:
            self._check_gallery(gallery)
        prepared = self._prepare(probe, deadline)
        verification = (
            self._verify(prepared, probe, references, use_api_threshold, deadline)
            if references
            else None
        )
        ranking = self._identify(prepared, probe, gallery, top_k, deadline) if gallery else []
        return Assessment(verification=verification, ranking=ranking)

    def _check_gallery(self, gallery: Gallery) -> None:
        check_gallery(gallery)
        count = sum(len(photos) for photos in gallery.values())
        if count > MAX_GALLERY_PHOTOS:
            raise InvalidOption(
                f"{self.name}: the gallery has {count} photos; a cloud API identifies against at most "
                f"{MAX_GALLERY_PHOTOS} (one billed call each)"
            )

    def _verify(
        self,
        prepared: Any,
        probe: FacePhoto,
        references: Sequence[FacePhoto],
        use_api_threshold: bool,
        deadline: float | None,
    ) -> Verification:
        best = max(
            (self._compare(prepared, probe, r, deadline) for r in references),
            key=lambda c: c.confidence,
        )
        threshold = best.api_threshold if use_api_threshold else PAPER_TAU
        return Verification(
            confidence=best.confidence, threshold=threshold, match=best.confidence >= threshold
        )

    def _identify(
        self, prepared: Any, probe: FacePhoto, gallery: Gallery, top_k: int, deadline: float | None
    ) -> list[IdentityScore]:
        scores = [
            IdentityScore(
                name=name,
                confidence=max(
                    self._compare(prepared, probe, p, deadline).confidence for p in photos
                ),
            )
            for name, photos in gallery.items()
        ]
        scores.sort(key=lambda s: (-s.confidence, s.name))
        return scores[:top_k]


def clamp01(value: float) -> float:
    """``value`` clipped to [0, 1]."""
    return min(1.0, max(0.0, float(value)))


def number(value: Any, what: str, backend: str) -> float:
    """A JSON number from a response, or :class:`CloudBadResponse` naming the field."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CloudBadResponse(
            f"{backend}: the response's {what} is {type(value).__name__}, not a number"
        )
    return float(value)
