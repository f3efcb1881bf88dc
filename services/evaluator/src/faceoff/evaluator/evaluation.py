"""Evaluation: ask several recognisers, concurrently, whether they still match a photo. No gRPC here.

:class:`Evaluator` decodes the photo, the user's references and the gallery once, runs every
requested backend (local models and cloud APIs) on a thread of its own with a per-backend
timeout, and returns one :class:`Verdict` per backend in request order. A backend that fails
(no face found, a cloud API refusing the credentials, throttled beyond its retries, too slow)
gets a verdict carrying its error; it never fails the whole evaluation. What does fail the
whole evaluation is a bad request: an undecodable photo, an unknown recogniser name, neither
references nor a gallery, or limits exceeded (all :class:`~faceoff.common.errors.InvalidImage`
or :class:`~faceoff.common.errors.InvalidOption`, naming what is accepted).

With reference photos, each local recogniser also ranks the photo's face among the person (the
centroid of the references) and its built-in decoys, public figures
(:mod:`faceoff.evaluator.decoys`): its verdict says whether it still identifies the person
(rank 1) or not.

Photos are decoded to a copy whose longer side is at most ``max_side`` pixels (2048 by
default): recognisers look at faces of at most a few hundred pixels, and this bounds the
memory one request can take. Nothing here writes photos, crops or embeddings anywhere.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field

from faceoff.common import tracing
from faceoff.common.errors import FaceOffError, InvalidImage, InvalidOption, NoFaceFound
from faceoff.common.imaging import DEFAULT_MAX_PIXELS, decode
from faceoff.evaluator import decoys as decoy_galleries
from faceoff.evaluator.cloud import CLOUD_BACKENDS, build_cloud
from faceoff.evaluator.cloud.credentials import CloudConfig
from faceoff.evaluator.cloud.errors import CloudError
from faceoff.evaluator.cloud.retry import RetryPolicy
from faceoff.faces.recognizers import DEFAULT_LOCAL_RECOGNIZERS, LOCAL_RECOGNIZERS, get_local
from faceoff.faces.recognizers.base import (
    Assessment,
    DecoyRank,
    Decoys,
    FacePhoto,
    IdentityScore,
    Recognizer,
    Verification,
    check_top_k,
)
from faceoff.faces.whitebox import is_white_box

log = logging.getLogger(__name__)

#: Every recogniser name a request may use, local first.
ALL_RECOGNIZERS: tuple[str, ...] = LOCAL_RECOGNIZERS + CLOUD_BACKENDS
#: Most reference photos in one request.
MAX_REFERENCES = 10
#: Most gallery photos in one request (over all identities).
MAX_GALLERY_PHOTOS = 100
#: Largest ``top_k``.
MAX_TOP_K = 100

#: Outcomes counted per backend call (the ``outcome`` label of the backend metrics).
OUTCOMES: tuple[str, ...] = (
    "ok",
    "not_configured",
    "no_face",
    "timeout",
    "auth",
    "throttled",
    "unavailable",
    "bad_response",
    "rejected",
    "invalid",
    "internal",
)

#: ``observer(backend, outcome, seconds)``, called once per backend call.
Observer = Callable[[str, str, float], None]


@dataclass(frozen=True)
class EvaluationRequest:
    """What to evaluate.

    Attributes:
        photo: The (usually protected) photo, encoded.
        references: Encoded photos of the user, for verification.
        gallery: Identity name -> encoded photos, for identification (order is kept).
        recognizers: Backends to ask, by name; empty asks every enabled local recogniser and
            every configured cloud backend.
        top_k: Identities to rank (0: 3).
        use_api_threshold: Apply each API's own threshold instead of tau = 0.5.
        attacked_models: The models the protection has seen (its surrogates and loop
            recognisers); empty: the default protection's (:mod:`faceoff.faces.whitebox`).
    """

    photo: bytes
    references: Sequence[bytes] = ()
    gallery: Mapping[str, Sequence[bytes]] = field(default_factory=dict)
    recognizers: Sequence[str] = ()
    top_k: int = 0
    use_api_threshold: bool = False
    attacked_models: Sequence[str] = ()


@dataclass(frozen=True)
class Verdict:
    """One backend's answer.

    Attributes:
        recognizer: Backend name.
        white_box: True when the protection has seen this very model
            (:func:`faceoff.faces.whitebox.is_white_box`).
        configured: False for a cloud backend without credentials or a local recogniser this
            server does not run; nothing else is filled in then.
        verification: Against the references (None without references or on error).
        top_k: Ranked identities (empty without a gallery or on error).
        decoys: The person's rank among this recogniser's built-in decoys (local recognisers
            given references; None otherwise or on error).
        error: What went wrong, or "".
        error_kind: One of :data:`OUTCOMES` other than "ok", or "".
        seconds: Time the backend took (the timeout when it did not answer).
    """

    recognizer: str
    white_box: bool
    configured: bool = True
    verification: Verification | None = None
    top_k: list[IdentityScore] = field(default_factory=list)
    decoys: DecoyRank | None = None
    error: str = ""
    error_kind: str = ""
    seconds: float = 0.0


def error_kind(exc: BaseException) -> str:
    """The outcome label of a backend failure."""
    if isinstance(exc, NoFaceFound):
        return "no_face"
    if isinstance(exc, CloudError):
        return exc.kind
    if isinstance(exc, (InvalidOption, InvalidImage)):
        return "invalid"
    if isinstance(exc, FaceOffError) and exc.status == "DEADLINE_EXCEEDED":
        return "timeout"
    return "internal"


class Evaluator:
    """Runs recognisers concurrently over one photo (see the module docstring).

    Args:
        local: Local recognisers this evaluator runs (loaded by :meth:`load`).
        cloud_config: Cloud credentials (default: none, so no cloud backend is configured).
        retry_policy: Retries and request timeout of the cloud adapters.
        backend_timeout: Seconds each backend gets per evaluation (> 0).
        max_pixels: Largest photo accepted, width x height.
        max_side: Longer side of the decoded copies the recognisers see.
        observer: Called as ``observer(backend, outcome, seconds)`` after each backend call.
        backends: Extra or replacement backends by name (for embedding this class elsewhere).
        decoys: Extra or replacement decoy galleries by backend name (default: each local
            recogniser's built-in one, :func:`faceoff.evaluator.decoys.load`).
    """

    def __init__(
        self,
        local: Sequence[str] = DEFAULT_LOCAL_RECOGNIZERS,
        cloud_config: CloudConfig | None = None,
        retry_policy: RetryPolicy | None = None,
        backend_timeout: float = 60.0,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_side: int = 2048,
        observer: Observer | None = None,
        backends: Mapping[str, Recognizer] | None = None,
        decoys: Mapping[str, Decoys] | None = None,
    ) -> None:
        if backend_timeout <= 0:
            raise ValueError(f"backend_timeout must be > 0 seconds, got {backend_timeout}")
        if max_side < 64:
            raise ValueError(f"max_side must be >= 64 pixels, got {max_side}")
        unknown = [n for n in local if n not in LOCAL_RECOGNIZERS]
        if unknown:
            raise ValueError(
                f"unknown local recognisers {unknown}; known: {', '.join(LOCAL_RECOGNIZERS)}"
            )
        cloud_config = cloud_config or CloudConfig()
        self._backends: dict[str, Recognizer] = {name: get_local(name) for name in local}
        for name in CLOUD_BACKENDS:
            self._backends[name] = build_cloud(name, cloud_config, retry_policy)
        self._backends.update(backends or {})
        # Each local recogniser's public-figure decoys (small files, read once per process).
        self._decoys: dict[str, Decoys] = {
            name: decoy_galleries.load(name).centroids for name in local
        }
        self._decoys.update(decoys or {})
        self.backend_timeout = backend_timeout
        self.max_pixels = max_pixels
        self.max_side = max_side
        self.observer = observer
        self._pool = ThreadPoolExecutor(
            max_workers=2 * len(ALL_RECOGNIZERS), thread_name_prefix="evaluator"
        )

    @property
    def accepted(self) -> tuple[str, ...]:
        """Every name a request may use."""
        return tuple(dict.fromkeys((*ALL_RECOGNIZERS, *self._backends)))

    def enabled(self) -> list[str]:
        """What an empty ``recognizers`` list asks: running local recognisers and configured clouds."""
        return [n for n in self.accepted if n in self._backends and self._backends[n].configured]

    def load(self) -> None:
        """Load every local model now (blocking); the server calls this before turning SERVING."""
        for backend in self._backends.values():
            backend.load()

    def close(self) -> None:
        """Stop the worker threads (running backend calls finish in the background)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- the request ---------------------------------------------------------------------------

    def _names(self, requested: Sequence[str]) -> list[str]:
        if not requested:
            return self.enabled()
        names: list[str] = []
        for raw in requested:
            name = raw.strip().lower()
            if name not in self.accepted:
                raise InvalidOption(
                    f"unknown recogniser {raw!r}; accepted: {', '.join(self.accepted)}",
                    field="recognizers",
                )
            if name in names:
                raise InvalidOption(f"recogniser {name!r} is listed twice", field="recognizers")
            names.append(name)
        return names

    def _decode(self, data: bytes, label: str, field: str) -> FacePhoto:
        try:
            photo = decode(data, max_pixels=self.max_pixels, max_side=self.max_side)
        except InvalidImage as exc:
            raise InvalidImage(f"{label}: {exc.message}", field=field) from None
        return FacePhoto(data=bytes(data), photo=photo, label=label)

    def _inputs(
        self, request: EvaluationRequest
    ) -> tuple[FacePhoto, list[FacePhoto], dict[str, list[FacePhoto]], int]:
        if not request.references and not request.gallery:
            raise InvalidOption(
                "give reference photos to verify against, a gallery to identify in, or both"
            )
        if len(request.references) > MAX_REFERENCES:
            raise InvalidOption(
                f"{len(request.references)} reference photos; at most {MAX_REFERENCES} are accepted",
                field="reference_images",
            )
        count = sum(len(photos) for photos in request.gallery.values())
        if count > MAX_GALLERY_PHOTOS:
            raise InvalidOption(
                f"the gallery has {count} photos; at most {MAX_GALLERY_PHOTOS} are accepted",
                field="gallery",
            )
        top_k = check_top_k(request.top_k)
        if top_k > MAX_TOP_K:
            raise InvalidOption(f"top_k is {top_k}; at most {MAX_TOP_K} is accepted", field="top_k")
        for name, photos in request.gallery.items():
            if not name.strip():
                raise InvalidOption("a gallery identity has an empty name")
            if not photos:
                raise InvalidOption(f"gallery identity {name!r} has no photos")
        probe = self._decode(request.photo, "the photo", "image")
        references = [
            self._decode(d, f"reference photo {i + 1}", f"reference_images[{i}]")
            for i, d in enumerate(request.references)
        ]
        gallery = {
            name: [
                self._decode(d, f"gallery photo {i + 1} of {name!r}", f"gallery[{k}].images[{i}]")
                for i, d in enumerate(photos)
            ]
            for k, (name, photos) in enumerate(request.gallery.items())
        }
        return probe, references, gallery, top_k

    def evaluate(self, request: EvaluationRequest, deadline: float | None = None) -> list[Verdict]:
        """Ask every requested backend; one verdict each, in request order.

        Args:
            request: The photo, references, gallery and backends.
            deadline: ``time.monotonic()`` value by which every verdict must be in (the client's
                deadline); each backend gets ``min(backend_timeout, deadline - now)``.

        Raises:
            InvalidImage: a photo cannot be decoded (the message says which one).
            InvalidOption: an unknown or repeated recogniser name, a bad ``top_k``, neither
                references nor a gallery, or a limit exceeded.
        """
        names = self._names(request.recognizers)
        probe, references, gallery, top_k = self._inputs(request)
        start = time.monotonic()
        backend_deadline = start + self.backend_timeout
        if deadline is not None:
            backend_deadline = min(backend_deadline, deadline)
        futures: dict[str, Future[Assessment]] = {}
        took: dict[str, float] = {}
        verdicts: dict[str, Verdict] = {}

        def run(name: str, backend: Recognizer) -> Assessment:
            began = time.monotonic()
            try:
                with tracing.span(f"recognizer {name}", recognizer=name):
                    return backend.assess(
                        probe,
                        references,
                        gallery,
                        top_k,
                        use_api_threshold=request.use_api_threshold,
                        deadline=backend_deadline,
                        decoys=self._decoys.get(name),
                    )
            finally:
                took[name] = time.monotonic() - began

        for name in names:
            # A local recogniser this server does not run is reported like an unconfigured cloud.
            backend = self._backends.get(name) or get_local(name)
            if name not in self._backends or not backend.configured:
                verdicts[name] = Verdict(
                    recognizer=name,
                    white_box=is_white_box(name, request.attacked_models),
                    configured=False,
                )
                self._observe(name, "not_configured", 0.0)
                continue
            # each backend's thread runs in a copy of this context: its span is the call's child
            futures[name] = self._pool.submit(contextvars.copy_context().run, run, name, backend)
        wait_futures(list(futures.values()), timeout=max(0.0, backend_deadline - time.monotonic()))
        for name, future in futures.items():
            verdicts[name] = self._verdict(
                name,
                future,
                took.get(name, time.monotonic() - start),
                is_white_box(name, request.attacked_models),
            )
        return [verdicts[name] for name in names]

    def _verdict(
        self, name: str, future: Future[Assessment], elapsed: float, white_box: bool
    ) -> Verdict:
        if not future.done():
            future.cancel()
            self._observe(name, "timeout", elapsed)
            return Verdict(
                recognizer=name,
                white_box=white_box,
                error=f"{name}: no answer within {elapsed:.1f} s",
                error_kind="timeout",
                seconds=elapsed,
            )
        exc = future.exception()
        if exc is None:
            assessment = future.result()
            self._observe(name, "ok", elapsed)
            return Verdict(
                recognizer=name,
                white_box=white_box,
                verification=assessment.verification,
                top_k=assessment.ranking,
                decoys=assessment.decoys,
                seconds=elapsed,
            )
        kind = error_kind(exc)
        if isinstance(exc, FaceOffError):
            message = exc.message
        else:  # a bug: the details go to the server log, never to the client
            log.error("backend %s failed", name, exc_info=exc)
            message = f"{name}: internal error; the server log has the details"
        self._observe(name, kind, elapsed)
        return Verdict(
            recognizer=name, white_box=white_box, error=message, error_kind=kind, seconds=elapsed
        )

    def _observe(self, name: str, outcome: str, seconds: float) -> None:
        if self.observer is not None:
            try:
                self.observer(name, outcome, seconds)
            except Exception:
                log.exception("backend observer failed")
