"""Adaptive amplification: the smallest alpha at which chosen recognisers stop matching a face.

The paper amplifies every perturbation by one alpha. A face that already fools recognisers at
alpha = 1.2 then carries more visible noise than it needs, and one that still matches at the
profile's alpha gets no more. Here, per face, after the attack:

1. the largest alpha in [1, alpha_max] whose face-region PSNR stays >= the floor is found by
   bisection (PSNR falls as alpha grows; no recogniser is asked);
2. each loop recogniser embeds the face in a context crop (the face box plus half its size on
   each side) of the photo protected at a candidate alpha, and verifies it (its own threshold)
   against the user's reference photos — or, when the request has none, against the same
   context of the clean photo (the closest reference there can be); it "matches" when it
   verifies;
3. if the face still matches at that largest alpha, it is used and the receipt says so;
   otherwise the smallest alpha at which no loop recogniser matches is bisected for.

A recogniser that finds no face in the protected context does not match it (it was fooled
earlier, at detection); one that finds no face in the clean context has no say for that face.
The check runs on the pasted pixels before the photo is encoded. Recognisers consulted here are
no longer independent judges of the result: ``faceoff bench transfer`` marks them
``"in_loop": true``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from faceoff.common.crops import CropRegion, crop_region, paste_delta
from faceoff.common.errors import NoFaceFound
from faceoff.common.imaging import Photo
from faceoff.masker.quality import psnr

log = logging.getLogger(__name__)

#: Context around a face the loop recognisers look at: the box plus this fraction of its size per side.
CONTEXT_MARGIN = 0.5
#: Bisection steps of each search (alpha resolution: range / 2**steps).
BISECTION_STEPS = 5


@dataclass(frozen=True)
class Verdict:
    """What one loop recogniser said of a protected face at the chosen alpha."""

    recognizer: str
    matched: bool
    distance: float | None  # None when the recogniser found no face in the protected context

    def to_json(self) -> dict[str, Any]:
        return {
            "recognizer": self.recognizer,
            "matched": self.matched,
            "distance": None if self.distance is None else round(self.distance, 4),
        }


@dataclass(frozen=True)
class Choice:
    """The alpha chosen for one face and the loop recognisers' verdicts there."""

    alpha: float
    verdicts: tuple[Verdict, ...]


class _Face:
    """One face's context crop, clean and at any alpha."""

    def __init__(
        self,
        pixels: np.ndarray,
        box: tuple[float, float, float, float],
        region: CropRegion,
        crop: np.ndarray,
        delta: np.ndarray,
    ) -> None:
        height, width = pixels.shape[:2]
        self.context = crop_region(box, width, height, CONTEXT_MARGIN)
        c = self.context
        self.clean = np.ascontiguousarray(pixels[c.slices])
        self.region = CropRegion(
            region.left - c.left, region.top - c.top, region.right - c.left, region.bottom - c.top
        )
        self.crop = crop
        self.delta = delta

    def protected(self, alpha: float) -> np.ndarray:
        applied = np.clip(self.crop + alpha * self.delta, 0.0, 1.0) - self.crop
        return paste_delta(self.clean, self.region, applied)

    def psnr(self, alpha: float) -> float:
        return psnr(self.clean[self.region.slices], self.protected(alpha)[self.region.slices])


def _photo(pixels: np.ndarray) -> Photo:
    return Photo(
        pixels=pixels, format="PNG", full_width=pixels.shape[1], full_height=pixels.shape[0]
    )


def choose_alphas(
    pixels: np.ndarray,
    boxes: Sequence[tuple[float, float, float, float]],
    regions: Sequence[CropRegion],
    crops: np.ndarray,
    deltas: np.ndarray,
    recognizers: Mapping[str, Any],
    alpha_max: float,
    psnr_floor: float,
    references: Sequence[Photo] = (),
    should_stop: Callable[[], None] = lambda: None,
) -> list[Choice]:
    """Per face, the alpha to amplify its perturbation by (see the module docstring).

    Args:
        pixels: The clean photo, ``(H, W, 3)`` uint8.
        boxes, regions, crops, deltas: Per face: its detector box, crop region, ``(S, S, 3)``
            crop in [0, 1] and unamplified perturbation.
        recognizers: Loop recognisers by name (loaded :class:`EmbeddingRecognizer` objects).
        alpha_max: Largest alpha tried (>= 1).
        psnr_floor: Lowest face-region PSNR in dB.
        references: The user's reference photos (their largest face is the person); empty:
            each face is compared with its own clean context.
        should_stop: Called between recogniser calls; may raise to abort (a cancelled request).
    """
    given: dict[str, np.ndarray] = {}
    for name, rec in recognizers.items():
        embedded = []
        for photo in references:
            should_stop()
            try:
                embedded.append(rec.embed(photo))
            except NoFaceFound:
                log.debug("loop recogniser %s finds no face in a reference photo", name)
        if embedded:
            given[name] = np.stack(embedded)
    choices = []
    for k in range(len(regions)):
        face = _Face(pixels, boxes[k], regions[k], crops[k], deltas[k])
        top = _largest_within_floor(face, alpha_max, psnr_floor)
        refs: dict[str, np.ndarray] = {}
        for name, rec in recognizers.items():
            if name in given:
                refs[name] = given[name]
                continue
            should_stop()
            try:
                refs[name] = rec.embed(_photo(face.clean))[None, :]
            except NoFaceFound:
                log.debug(
                    "loop recogniser %s finds no face in the clean context of face %d", name, k
                )

        def verdicts(alpha: float) -> tuple[Verdict, ...]:
            image = _photo(face.protected(alpha))
            out = []
            for name, ref in refs.items():
                should_stop()
                rec = recognizers[name]
                try:
                    probe = rec.embed(image)
                except NoFaceFound:
                    out.append(Verdict(name, False, None))
                    continue
                check = rec.verify_embeddings(probe, ref)
                out.append(Verdict(name, bool(check.match), float(check.distance)))
            return tuple(out)

        at_top = verdicts(top)
        if not refs or any(v.matched for v in at_top):
            choices.append(Choice(top, at_top))
            continue
        at_one = verdicts(1.0) if top > 1.0 else at_top
        if not any(v.matched for v in at_one):
            choices.append(Choice(1.0 if top > 1.0 else top, at_one))
            continue
        low, high, best = 1.0, top, at_top  # matched at low, not at high
        for _ in range(BISECTION_STEPS):
            mid = (low + high) / 2
            seen = verdicts(mid)
            if any(v.matched for v in seen):
                low = mid
            else:
                high, best = mid, seen
        choices.append(Choice(round(high, 4), best))
    return choices


def _largest_within_floor(face: _Face, alpha_max: float, floor: float) -> float:
    """The largest alpha in [1, alpha_max] whose face PSNR is >= floor (1 if none is)."""
    if face.psnr(alpha_max) >= floor:
        return alpha_max
    low, high = 1.0, alpha_max
    if face.psnr(low) < floor:
        return low
    for _ in range(BISECTION_STEPS + 2):
        mid = (low + high) / 2
        if face.psnr(mid) >= floor:
            low = mid
        else:
            high = mid
    return round(low, 4)
