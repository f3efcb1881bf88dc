"""Finishing a protection: amplify each face's perturbation, paste it back, encode, measure.

The perturbation is amplified by the options' alpha (or, with adaptive amplification, by the
smallest alpha at which the loop recognisers stop matching), added to each face crop and
resized back onto the full-resolution photo, which is encoded in its own format with its
metadata; the receipts then measure the encoded output.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from faceoff.common import tracing
from faceoff.common.crops import paste_delta
from faceoff.common.imaging import DEFAULT_MAX_PIXELS, decode, encode, output_format
from faceoff.masker.adaptive import Choice, choose_alphas
from faceoff.masker.budget import visibility_budget
from faceoff.masker.jobs import Job
from faceoff.masker.quality import butteraugli_map
from faceoff.masker.receipts import FaceReceipt, ProtectionResult, face_receipts
from faceoff.masker.surrogates import Surrogates

#: ``progress(stage, iteration, iterations)``; stages: "adapt", "paste", "encode".
Progress = Callable[[str, int, int], None]


class Finisher:
    """Finishes jobs on ``surrogates`` (receipts decode the output up to ``max_pixels``)."""

    def __init__(self, surrogates: Surrogates, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.surrogates = surrogates
        self.max_pixels = max_pixels

    def finish(
        self,
        job: Job,
        delta: np.ndarray,
        progress: Progress | None = None,
        should_stop: Callable[[], None] = lambda: None,
    ) -> ProtectionResult:
        """Amplify (by the options' alpha, or adaptively), paste back into the full photo, encode, and measure.

        ``should_stop`` is called between the adaptive search's recogniser calls; it may raise
        to abort a cancelled request.
        """
        if job.photo is None:
            raise ValueError("a job made with crop_job has no photo to finish")
        o = job.options
        model = job.model or self.surrogates.model
        fields: list[np.ndarray] = []
        if o.adaptive_alpha and job.size:
            if progress:
                progress("adapt", 0, 0)
            choices = choose_alphas(
                job.photo.pixels,
                job.boxes,
                job.regions,
                job.attacked,
                delta,
                self.surrogates.recognizers_for(o),
                o.alpha,
                o.psnr_floor,
                job.references,
                should_stop,
            )
        elif (o.visibility or o.blotch) and job.size:
            if progress:
                progress("adapt", 0, 0)
            budgeted = visibility_budget(
                job.photo.pixels,
                job.boxes,
                job.regions,
                job.attacked,
                delta,
                o.alpha,
                o.visibility,
                should_stop,
                distance_map=butteraugli_map if o.visibility_map else None,
                blotch=o.blotch,
                min_face=o.visibility_min_face,
            )
            choices = [Choice(a, ()) for a, _ in budgeted]
            fields = [f for _, f in budgeted if f is not None]
        else:
            choices = [Choice(o.alpha, ()) for _ in range(job.size)]
        if progress:
            progress("paste", 0, 0)
        # one alpha per face, times the face's visibility field when the map shaped it
        alphas = np.asarray([c.alpha for c in choices], np.float32).reshape(-1, 1, 1, 1)
        if fields:
            alphas = alphas * np.stack(fields)
        faces = job.attacked
        applied = np.clip(faces + alphas * delta, 0.0, 1.0) - faces if job.size else delta
        pixels = job.photo.pixels
        with tracing.span("paste", faces=len(job.regions)):
            for k, region in enumerate(job.regions):
                pixels = paste_delta(pixels, region, applied[k])
        if progress:
            progress("encode", 0, 0)
        with tracing.span("encode", format=job.photo.format):
            out = encode(job.photo, pixels, remove_gps=o.strip_gps)
        receipts: list[FaceReceipt] = []
        if job.size:
            # Measure what the user actually gets: the encoded output, decoded and re-cropped.
            receipts = face_receipts(
                indices=job.indices,
                boxes=job.boxes,
                targets=job.targets,
                regions=job.regions,
                crops=job.crops,
                user_refs=job.user_refs,
                original=job.photo.pixels,
                shown=decode(out, max_pixels=self.max_pixels).pixels,
                applied=applied,
                choices=choices,
                model=model,
                size=self.surrogates.size,
                aligns=job.aligns,
            )
        return ProtectionResult(
            data=out,
            format=output_format(job.photo.format),
            width=job.photo.width,
            height=job.photo.height,
            faces=receipts,
            faces_found=job.faces_found,
            options=o,
            seconds=time.perf_counter() - job.started,
            notes=job.photo.notes,
        )
