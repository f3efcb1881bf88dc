"""A visibility budget per face: the largest amplification whose face still looks like the photo.

One alpha for every face spends the visibility budget unevenly: on the shared photos at the
default's alpha 1, small faces (about 115 px) sit at face Butteraugli 3.2 while large ones reach
7 and more. With a target (the ``visibility`` option), each face's perturbation is amplified by
the largest alpha in ``[0, alpha]`` whose face Butteraugli as displayed (box + 25%, the photo
scaled as a platform shows it, :mod:`faceoff.masker.quality`) stays at or under the target: faces
with room get more protection, the most visible ones less.

The search runs on a linear model of the displayed face: the clean window and the pasted
perturbation at alpha 1 are scaled to display size once (Lanczos), and the window at alpha is
``clip(round(clean + alpha * change))``. After trying ``alpha`` itself, each guess fits a power
law ``B = c * alpha**p`` through the last two alphas tried (a secant in log-log), at most
:data:`MAX_CALLS` Butteraugli calls per face, and the largest alpha found within the target is
kept. The receipt
then measures the encoded photo exactly.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from faceoff.common.crops import CropRegion, resize_delta
from faceoff.masker.quality import _display_size, _window, butteraugli_distance

#: Butteraugli calls per face at most (each about 0.05-0.3 s for a face window on one core).
MAX_CALLS = 5
#: A face this close under the target is close enough (Butteraugli units).
TOLERANCE = 0.15

Box = tuple[float, float, float, float]


def available() -> bool:
    """Whether the Butteraugli tool is installed (without it no target can be kept)."""
    return shutil.which("butteraugli") is not None


def _display_window(
    pixels: np.ndarray, box: Box, region: CropRegion, delta: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The clean face window as displayed and the change alpha 1 makes to it (float32)."""
    height, width = pixels.shape[:2]
    left, top, right, bottom = _window(box, width, height, 1.0)
    window = np.ascontiguousarray(pixels[top:bottom, left:right])
    # the change alpha 1 makes, in 0..255 units and unrounded (paste_delta rounds after adding)
    change: np.ndarray = np.zeros(window.shape, np.float32)
    full = resize_delta(delta, region) * 255.0
    y0, y1 = max(region.top, top), min(region.bottom, bottom)
    x0, x1 = max(region.left, left), min(region.right, right)
    if y1 > y0 and x1 > x0:
        change[y0 - top : y1 - top, x0 - left : x1 - left] = full[
            y0 - region.top : y1 - region.top, x0 - region.left : x1 - region.left
        ]
    scale, _ = _display_size(width, height)
    if scale < 1.0:
        size = (max(1, round(window.shape[1] * scale)), max(1, round(window.shape[0] * scale)))
        window_f = cv2.resize(window.astype(np.float32), size, interpolation=cv2.INTER_LANCZOS4)
        change = cv2.resize(change, size, interpolation=cv2.INTER_LANCZOS4)
    else:
        window_f = window.astype(np.float32)
    return window_f, change


def _largest_within(seen: Callable[[float], float], alpha_max: float, target: float) -> float:
    """The largest alpha in ``[0, alpha_max]`` found with ``seen(alpha) <= target``.

    Butteraugli grows with alpha but not linearly (faster at small alpha), so each guess fits
    ``B = c * alpha**p`` through the last two alphas tried (p = 1 through the first and the
    origin) and aims a little under the target; the largest alpha seen within the target wins.
    """
    tried = [(alpha_max, seen(alpha_max))]
    if tried[0][1] <= target:
        return alpha_max
    best = 0.0
    aim = target - TOLERANCE / 2
    for _ in range(MAX_CALLS - 1):
        (a1, b1), (a2, b2) = (tried[-2] if len(tried) > 1 else (0.0, 0.0)), tried[-1]
        if a1 > 0 and b1 > 0 and b2 > 0 and a1 != a2 and b1 != b2:
            power = np.log(b2 / b1) / np.log(a2 / a1)
            power = float(np.clip(power, 0.2, 3.0))
        else:
            power = 1.0
        guess = a2 * (aim / max(b2, 1e-9)) ** (1 / power)
        guess = float(np.clip(guess, 0.02 * alpha_max, alpha_max))
        value = seen(guess)
        tried.append((guess, value))
        if value <= target:
            best = max(best, guess)
            if target - value <= TOLERANCE:
                break
    return best


def visibility_alphas(
    pixels: np.ndarray,
    boxes: Sequence[Box],
    regions: Sequence[CropRegion],
    faces: np.ndarray,
    deltas: np.ndarray,
    alpha_max: float,
    target: float,
    should_stop: Callable[[], None] = lambda: None,
    distance: Callable[[np.ndarray, np.ndarray], float | None] = butteraugli_distance,
) -> list[float]:
    """Per face, the largest alpha in ``[0, alpha_max]`` whose face Butteraugli as displayed is at
    most ``target`` (see the module docstring).

    Args:
        pixels: The clean photo, ``(H, W, 3)`` uint8.
        boxes, regions: Each face's box and crop region in the photo.
        faces: ``(n, W, W, 3)`` the faces the perturbations were computed on, in [0, 1].
        deltas: ``(n, W, W, 3)`` their perturbations before amplification.
        alpha_max: The largest amplification (the options' alpha).
        target: The face Butteraugli not to exceed, > 0.
        should_stop: Called between Butteraugli calls; may raise to abort a cancelled request.
        distance: The Butteraugli distance of two uint8 windows (None: not measured).

    Raises:
        RuntimeError: the Butteraugli tool is not installed, or failed.
    """
    if target <= 0 or alpha_max <= 0:
        raise ValueError(f"target and alpha_max must be > 0, got {target} and {alpha_max}")
    alphas = []
    for k, (box, region) in enumerate(zip(boxes, regions)):
        applied = np.clip(faces[k] + deltas[k], 0.0, 1.0) - faces[k]
        clean, change = _display_window(pixels, box, region, applied)
        shown = np.clip(np.rint(clean), 0, 255).astype(np.uint8)

        def seen(alpha: float, clean: np.ndarray = clean, change: np.ndarray = change) -> float:
            should_stop()
            protected = np.clip(np.rint(clean + alpha * change), 0, 255).astype(np.uint8)
            d = distance(shown, protected)
            if d is None:
                raise RuntimeError(
                    "a visibility target needs the butteraugli tool (apt-get install butteraugli)"
                )
            return d

        alphas.append(_largest_within(seen, float(alpha_max), target))
    return alphas
