"""The Face-Off protection of one photo, independent of gRPC, split by responsibility.

    photo bytes -> faces (detector) -> crops (box + margin -> 160 px) -> reference sets A_y
      -> [targeted: decoy] -> loss + attack on the surrogate -> amplify by alpha
      -> resize each perturbation to its crop -> add to the full-resolution photo -> encode
      -> receipts (norms, face-region PSNR/SSIM, surrogate distance before/after)

:class:`Protector` puts together the parts: the surrogate models and their traced attack
steps (:mod:`faceoff.masker.surrogates`), preparation (:mod:`faceoff.masker.jobs`), the attack
run over a batch of jobs (here), and amplification, paste-back, encoding and receipts
(:mod:`faceoff.masker.finishing`, :mod:`faceoff.masker.receipts`). The stages are separate so
that the masker service can run the attack of several requests in one batch;
:func:`faceoff.masker.pipeline.protect` runs them in order for every caller.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from faceoff.common.imaging import DEFAULT_MAX_PIXELS
from faceoff.detector.detection import DetectionResult
from faceoff.faces.models import EmbeddingModel
from faceoff.masker.attacks import make_attack, make_loss
from faceoff.masker.decoys import DecoyGallery
from faceoff.masker.devices import resolve_device
from faceoff.masker.finishing import Finisher, Progress
from faceoff.masker.jobs import Job, Preparer
from faceoff.masker.options import ProtectionOptions
from faceoff.masker.receipts import ProtectionResult
from faceoff.masker.surrogates import Surrogates

__all__ = ["Protector"]

#: Most work-crop pixels one attack run takes (16 faces at 512 px, 163 at 160 px): more faces are
#: attacked in chunks, so that a photo of many faces cannot take gigabytes at once.
ATTACK_PIXELS = 16 * 512 * 512


#: What is traced at start (``FACEOFF_WARM_UP``): ``profiles``, the default profile's attack and
#: every other profile whose surrogates are loaded by then (low: FaceNet; the masker service
#: traces the others after it reports SERVING, ``Client.local()`` before it returns);
#: ``default``, the default profile's only; ``off``,
#: nothing: the model is loaded and each kind of attack is traced by its first request, which
#: pays for it. The same seed gives the same pixels in every mode (each attack is traced once,
#: with its batch dimensions open: :mod:`faceoff.masker.attacks._compile`).
WARM_UP_MODES = ("profiles", "default", "off")


class Protector:
    """Prepares, attacks and finishes protections on the surrogates the options name.

    Args:
        model: The default surrogate, used when the options name none (default: FaceNet from
            the verified model cache).
        decoys: The decoy gallery of the default surrogate for targeted mode (default: its
            committed one).
        max_pixels: Pixel limit for photos and reference photos.
        device: The TensorFlow device every op of an attack is placed on (default: a GPU when
            TensorFlow sees one, :func:`faceoff.masker.devices.resolve_device`).
    """

    def __init__(
        self,
        model: EmbeddingModel | None = None,
        decoys: DecoyGallery | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        device: str | None = None,
    ) -> None:
        self.device = device or resolve_device("auto")
        self.surrogates = Surrogates(model, decoys)
        self.preparer = Preparer(self.surrogates, max_pixels)
        self.finisher = Finisher(self.surrogates, max_pixels)
        self.max_pixels = max_pixels

    # -- the models ------------------------------------------------------------------------

    @property
    def model(self) -> EmbeddingModel:
        """The default surrogate."""
        return self.surrogates.model

    def resolved(self, options: ProtectionOptions) -> ProtectionOptions:
        """``options`` naming the surrogates it will run on."""
        return self.surrogates.resolved(options)

    def model_for(self, options: ProtectionOptions) -> EmbeddingModel:
        """The surrogate, or ensemble of surrogates, ``options`` asks for."""
        return self.surrogates.model_for(options)

    def gallery_for(self, model: EmbeddingModel) -> DecoyGallery:
        """The decoy gallery in ``model``'s embedding space."""
        return self.surrogates.gallery_for(model)

    def warm_up(self, options: ProtectionOptions | None = None) -> None:
        """Load the options' surrogates and trace their attack before the first request."""
        self.surrogates.warm_up(options)

    def warm_up_as(self, mode: str) -> None:
        """Warm up as ``FACEOFF_WARM_UP`` says (see :data:`WARM_UP_MODES`)."""
        if mode not in WARM_UP_MODES:
            raise ValueError(
                f"warm-up mode must be one of {', '.join(WARM_UP_MODES)}, got {mode!r}"
            )
        if mode == "profiles":
            self.warm_up()
        elif mode == "default":
            from faceoff.masker.options import resolve

            self.warm_up(resolve())

    # -- preparation -----------------------------------------------------------------------

    def prepare(
        self,
        data: bytes,
        options: ProtectionOptions,
        detection: DetectionResult,
        references: Sequence[tuple[bytes, DetectionResult]] = (),
        started: float | None = None,
    ) -> Job:
        """Decode, crop, and build each face's reference set and target (see :class:`Preparer`)."""
        return self.preparer.prepare(data, options, detection, references, started)

    def crop_job(
        self,
        crops: np.ndarray,
        options: ProtectionOptions,
        references: Sequence[np.ndarray] | None = None,
    ) -> Job:
        """A job of bare face crops, for :meth:`attack` (benchmarks, tests)."""
        return self.preparer.crop_job(crops, options, references)

    # -- the attack ------------------------------------------------------------------------

    def attack(
        self, jobs: Sequence[Job], progress: Callable[[int, int], None] | None = None
    ) -> list[np.ndarray]:
        """Run one attack over every face of ``jobs`` (which must share ``options.batch_key()``).

        Returns each job's ``(n, W, W, 3)`` perturbation before amplification (W: the options'
        work size, or the surrogate's crop side S).
        """
        if not jobs:
            return []
        options = jobs[0].options
        if any(j.options.batch_key() != options.batch_key() for j in jobs):
            raise ValueError("jobs of one attack batch must share their attack options")
        sizes = [j.size for j in jobs]
        side = self.surrogates.work_side(options)
        if sum(sizes) == 0:
            return [np.zeros((0, side, side, 3), np.float32) for _ in jobs]
        crops = np.concatenate([j.attacked for j in jobs])
        anchors = [a for j in jobs for a in j.anchors]
        others = [o for j in jobs for o in j.others]
        aligns = np.concatenate([_aligns(j) for j in jobs])
        loss_params: dict[str, Any] = {"targeted": options.targeted}
        if options.loss == "hinge":
            loss_params["kappa"] = options.kappa
        model = jobs[0].model or self.surrogates.model
        if any((j.model or self.surrogates.model) is not model for j in jobs):
            raise ValueError("jobs of one attack batch must share their surrogate")
        attacked = self.surrogates.attack_model(model, options)
        params = options.attack_params()
        if options.norm == "l2" and side != self.surrogates.size:
            # epsilon and the step keep their meaning on the surrogate's crop: an L2 norm over a
            # crop of side W is W / S times that of the same per-pixel change at side S
            scale = side / self.surrogates.size
            params["epsilon"] *= scale
            params["step_size"] *= scale
        # each face is seeded by its request's seed and its index in its photo, so it gets the
        # same perturbation whichever requests share the batch and however it is chunked
        seeds = [(j.options.seed, index) for j in jobs for index in j.indices]
        # bound the attack's memory: more faces than one run takes go in chunks
        per_run = max(1, ATTACK_PIXELS // (side * side))
        runs = -(-len(crops) // per_run)
        parts = []
        for k, start in enumerate(range(0, len(crops), per_run)):
            end = start + per_run
            loss = make_loss(
                options.loss,
                attacked,
                anchors[start:end],
                others[start:end],
                align=aligns[start:end],
                **loss_params,
            )
            told = None
            if progress is not None:
                told = lambda i, n, k=k: progress(k * n + i, runs * n)  # noqa: E731
            attack = make_attack(options.attack, options.norm, **params)
            with tf.device(self.device):  # the whole attack on one device (devices.py)
                parts.append(
                    attack.attack(
                        crops[start:end], loss, seed=seeds[start:end], progress=told
                    ).delta
                )
        delta = np.concatenate(parts)
        return np.split(delta, np.cumsum(sizes)[:-1])

    # -- amplification, paste-back and receipts --------------------------------------------

    def finish(
        self,
        job: Job,
        delta: np.ndarray,
        progress: Progress | None = None,
        should_stop: Callable[[], None] = lambda: None,
    ) -> ProtectionResult:
        """Amplify, paste back, encode and measure (see :class:`Finisher`)."""
        return self.finisher.finish(job, delta, progress, should_stop)


def _aligns(job: Job) -> np.ndarray:
    """``(n, 6)``: the job's alignments, or the identity for each face."""
    from faceoff.faces.alignment import IDENTITY

    return job.aligns if job.aligns is not None else np.tile(IDENTITY, (job.size, 1))
