"""The one order of a protection, whoever runs it.

    decode + detect the photo and each reference photo -> check and prepare (crops, reference
    sets, targets) -> attack -> amplify and paste back -> encode -> receipts

The masker's servicer (detector over gRPC, the attack through the cross-request batcher), the
SDK's embedded pipeline (``Client.local()``) and the benchmarks all call :func:`protect`; what
differs between them is only how a photo is detected and how an attack is scheduled, which they
hand in. So the order, the limits and the progress events cannot drift apart, and a fixed seed
gives the same pixels however the protection was reached.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from faceoff.common import tracing
from faceoff.common.errors import InvalidArgument, InvalidOption
from faceoff.detector.detection import DetectionResult, DetectOptions, FaceDetector
from faceoff.masker import cost
from faceoff.masker.jobs import Job
from faceoff.masker.options import ProtectionOptions
from faceoff.masker.protection import Protector
from faceoff.masker.receipts import ProtectionResult

#: Finds the faces of one encoded photo.
Detect = Callable[[bytes, DetectOptions], Awaitable[DetectionResult]]
#: Runs ``job``'s attack, reporting ``(iteration, iterations)``; returns its perturbation.
Attack = Callable[[Job, Callable[[int, int], None]], Awaitable[np.ndarray]]
#: ``progress(stage, faces, iteration, iterations)``; stages: detect, attack, adapt, paste.
Progress = Callable[[str, int, int, int], None]

#: Reference photos one request may carry unless the caller says otherwise.
DEFAULT_MAX_REFERENCE_PHOTOS = 16
#: Most faces one request may have protected: each is an attack, so a photo of a crowd would
#: hold the masker for minutes and gigabytes (197 faces: 97 s, +2.8 GB) whatever its queue says.
DEFAULT_MAX_FACES = 64

T = TypeVar("T")


@dataclass(frozen=True)
class RequestLimits:
    """What one request may ask of the masker, checked by :func:`protect` before the work.

    Args:
        max_reference_photos: The limit on a call's reference photos.
        max_faces: The limit on the faces to protect (after detection, before any work on
            them): the photo's faces, or those ``face_indices`` selects.
        max_request_pixels: The budget of decoded pixels, photo and references together,
            checked from the headers before any detection (:mod:`faceoff.masker.cost`).
        max_request_work: The budget of attack face-steps, checked after detection.
    """

    max_reference_photos: int = DEFAULT_MAX_REFERENCE_PHOTOS
    max_faces: int = DEFAULT_MAX_FACES
    max_request_pixels: int = cost.DEFAULT_MAX_REQUEST_PIXELS
    max_request_work: int = cost.DEFAULT_MAX_REQUEST_WORK


#: The limits of a caller that sets none.
DEFAULT_LIMITS = RequestLimits()


@dataclass(frozen=True)
class ProtectCall:
    """One protection to run: the photo, the user's reference photos and the settings."""

    photo: bytes
    options: ProtectionOptions
    references: Sequence[bytes] = ()
    detect_options: DetectOptions = field(default_factory=DetectOptions)


async def protect(
    call: ProtectCall,
    protector: Protector,
    detect: Detect,
    attack: Attack,
    *,
    limits: RequestLimits = DEFAULT_LIMITS,
    progress: Progress | None = None,
    before_detect: Callable[[], None] | None = None,
) -> ProtectionResult:
    """Protect every selected face of ``call.photo``.

    Args:
        call: The photo, references and options.
        protector: Prepares the faces and finishes the photo (models, paste-back, receipts).
        detect: How a photo is detected (a gRPC client, or the in-process detector).
        attack: How the attack is scheduled (the batcher, or alone).
        limits: What the request may ask (:class:`RequestLimits`).
        progress: Told of each stage.
        before_detect: Called after the cheap checks and before any detection; it may raise to
            refuse the call early (the masker's full-queue check).

    Raises:
        InvalidOption: too many reference photos, faces, pixels or face-steps, or a bad
            option for this photo.
        InvalidArgument: a photo cannot be used (a reference photo's refusal names its index).
    """

    def tell(stage: str, faces: int = 0, iteration: int = 0, iterations: int = 0) -> None:
        if progress is not None:
            progress(stage, faces, iteration, iterations)

    if len(call.references) > limits.max_reference_photos:
        raise InvalidOption(
            f"reference_images has {len(call.references)} photos; "
            f"at most {limits.max_reference_photos} are accepted",
            field="reference_images",
        )
    cost.check_pixels(call.photo, call.references, limits.max_request_pixels, protector.max_pixels)
    if before_detect is not None:
        before_detect()
    tell("detect")
    photos = [call.photo, *call.references]
    with tracing.span("detect", photos=len(photos)):
        detections = await asyncio.gather(
            *(_detect_named(detect, p, i, call.detect_options) for i, p in enumerate(photos))
        )
    found = len(detections[0].faces)
    wanted = len(set(call.options.faces)) if call.options.faces else found
    if wanted > limits.max_faces:
        raise InvalidOption(
            f"the photo has {wanted} faces to protect; at most {limits.max_faces} are accepted per "
            "request (FACEOFF_MAX_FACES_PER_REQUEST): choose some with faces (face_indices), or "
            "detect.max_faces to take the largest",
            field="options.face_indices" if call.options.faces else "image",
            reason="TOO_MANY_FACES",
        )
    cost.check_work(wanted, protector.resolved(call.options), limits.max_request_work)
    with tracing.span("prepare", faces=wanted):  # decode, crops, reference sets, targets
        job = await asyncio.to_thread(
            protector.prepare,
            photos[0],
            call.options,
            detections[0],
            list(zip(photos[1:], detections[1:])),
        )
    total = call.options.total_iterations
    tell("attack", job.size, 0, total)
    with tracing.span("attack", faces=job.size, iterations=total, attack=job.options.attack):
        delta = await attack(job, lambda i, n: tell("attack", job.size, i, n))
    tell("adapt" if job.options.adaptive_alpha else "paste", job.size, total, total)
    with tracing.span("finish", faces=job.size):  # amplify, paste, encode, measure
        return await asyncio.to_thread(protector.finish, job, delta)


async def _detect_named(
    detect: Detect, data: bytes, index: int, options: DetectOptions
) -> DetectionResult:
    """Faces of the photo (``index`` 0) or of reference photo ``index - 1``, which a refusal names."""
    try:
        return await detect(data, options)
    except InvalidArgument as exc:
        if index == 0:
            raise
        raise exc.again(
            f"reference photo {index - 1}: {exc.message}", field=f"reference_images[{index - 1}]"
        ) from None


# -- in-process stages (the SDK's embedded pipeline, benchmarks, tests) -------------------------


def detect_in_process(detector: FaceDetector) -> Detect:
    """``detect`` for :func:`protect` with an MTCNN detector in this process."""

    async def detect(data: bytes, options: DetectOptions) -> DetectionResult:
        return await asyncio.to_thread(detector.detect, data, options)

    return detect


def attack_alone(protector: Protector, lock: threading.Lock | None = None) -> Attack:
    """``attack`` for :func:`protect` that runs each job's attack by itself (under ``lock``).

    The attack always gets a progress callback, as the masker's batcher gives it, so it runs in
    the same compiled chunks and a fixed seed gives the same bytes as a masker that ran the
    request alone.
    """

    def run(job: Job, on_progress: Callable[[int, int], None]) -> np.ndarray:
        if lock is None:
            (delta,) = protector.attack([job], on_progress)
        else:
            with lock:
                (delta,) = protector.attack([job], on_progress)
        return delta

    async def attack(job: Job, on_progress: Callable[[int, int], None]) -> np.ndarray:
        return await asyncio.to_thread(run, job, on_progress)

    return attack


def run_blocking(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to completion from synchronous code, even inside a running event loop
    (there, on a short-lived thread of its own, as a blocking call would)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="faceoff-pipeline") as pool:
        return pool.submit(asyncio.run, coroutine).result()


def protect_in_process(
    call: ProtectCall,
    protector: Protector,
    detector: FaceDetector,
    *,
    lock: threading.Lock | None = None,
    limits: RequestLimits = DEFAULT_LIMITS,
    progress: Progress | None = None,
) -> ProtectionResult:
    """:func:`protect` with the detector in this process and the attack run alone, blocking."""
    return run_blocking(
        protect(
            call,
            protector,
            detect_in_process(detector),
            attack_alone(protector, lock),
            limits=limits,
            progress=progress,
        )
    )
