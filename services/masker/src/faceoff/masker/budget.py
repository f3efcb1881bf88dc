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

With ``visibility_map`` the budget is also spent unevenly *within* a face. Butteraugli's
distance is the maximum of its difference map, so one smooth patch of skin where the change
shows most decides the alpha of the whole face while hair, brows and the eyes' edges, which
hide a change, stay far under the target. The map (read back from the tool's heat map,
:func:`~faceoff.masker.quality.butteraugli_map`) at the largest alpha gives each pixel the
fraction ``(aim / map) ** MAP_POWER`` of its change where the map exceeds the aim (the target
less :data:`MAP_MARGIN`), blurred so the field itself leaves no edge; :data:`MAP_ROUNDS` such
rounds, then the same alpha search runs on the reshaped change. The face keeps the same
Butteraugli target; more of its change sits where the eye does not see it.

With ``blotch`` a second guard caps each face's alpha: Butteraugli does not see soft patches of
darker or paler skin, and a per-pixel budget moves the change exactly there. The blotch
(:func:`faceoff.masker.quality.blotch`: the change's luma blurred, its 99th percentile, in
0..255 levels as displayed) grows linearly with alpha, so the cap is ``limit / blotch(alpha=1)``
without a Butteraugli call; with the map, each round also lowers the change where its blur
exceeds the limit less :data:`BLOTCH_MARGIN`, so the cap costs the face as little as it can. A
guard without a visibility target caps the options' alpha alone.

With ``min_face`` (the ``visibility_min_face`` option) a face whose box as displayed is smaller
than that on its longer side is left out of the amplification and the map: its alpha is searched
in ``[0, min(1, alpha)]`` on its change as the attack bounded it. On faces of about 115 px,
Butteraugli as displayed counts a worm-like texture anyone sees as 4-5, so a target that suits a
large face disfigures a small one (docs/results.md).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from typing import TypeVar

import cv2
import numpy as np

from faceoff.common.crops import CropRegion, resize_delta
from faceoff.masker.quality import (
    BLOTCH_QUANTILE,
    _window,
    butteraugli_distance,
    display_size,
    lowpass_luma,
)

#: Butteraugli calls per face at most (each about 0.05-0.3 s for a face window on one core).
MAX_CALLS = 5
#: A face this close under the target is close enough (Butteraugli units).
TOLERANCE = 0.15

#: Rounds of reshaping by the difference map (``visibility_map``): one map call each.
MAP_ROUNDS = 2
#: The reshaping aims this far under the target (Butteraugli units), so that the map's peaks
#: come down to the level the alpha search then fills.
MAP_MARGIN = 0.5
#: How strongly a pixel over the aim loses change: ``(aim / map) ** MAP_POWER``.
MAP_POWER = 1.0
#: No pixel keeps less than this fraction of its change.
MAP_FLOOR = 0.1
#: The field is blurred with a Gaussian of this fraction of the window's shorter side.
MAP_BLUR = 0.02
#: With the map, its rounds aim the blotch this fraction under its limit.
BLOTCH_MARGIN = 0.1

Box = tuple[float, float, float, float]
_T = TypeVar("_T")
DistanceMap = Callable[[np.ndarray, np.ndarray], "tuple[float, np.ndarray] | None"]


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
    scale, _ = display_size(width, height)
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


def _blotch_cap(change: np.ndarray, alpha_max: float, limit: float) -> float:
    """The largest alpha in ``[0, alpha_max]`` at which ``alpha * change`` (a displayed window's
    change at alpha 1) keeps its blotch within ``limit`` (0: no limit)."""
    if limit <= 0:
        return alpha_max
    level = float(np.quantile(np.abs(lowpass_luma(change)), BLOTCH_QUANTILE))
    return alpha_max if level * alpha_max <= limit else limit / level


def _measured(value: _T | None) -> _T:
    """``value``, a Butteraugli measurement; None (the tool is not installed) is an error here."""
    if value is None:
        raise RuntimeError(
            "a visibility target needs the butteraugli tool (apt-get install butteraugli)"
        )
    return value


def _alpha_within(
    clean: np.ndarray,
    change: np.ndarray,
    alpha_max: float,
    target: float,
    should_stop: Callable[[], None],
    distance: Callable[[np.ndarray, np.ndarray], float | None],
) -> float:
    """The largest alpha in ``[0, alpha_max]`` at which ``clean + alpha * change`` (a displayed
    window and the change alpha 1 makes to it) stays within ``target``."""
    shown = np.clip(np.rint(clean), 0, 255).astype(np.uint8)

    def seen(alpha: float) -> float:
        should_stop()
        protected = np.clip(np.rint(clean + alpha * change), 0, 255).astype(np.uint8)
        return _measured(distance(shown, protected))

    return _largest_within(seen, float(alpha_max), target)


def _reshaped(
    clean: np.ndarray,
    change: np.ndarray,
    alpha_max: float,
    target: float,
    distance_map: DistanceMap,
    should_stop: Callable[[], None],
    blotch: float = 0.0,
) -> np.ndarray:
    """The field ``(h, w)`` in ``[MAP_FLOOR, 1]`` that lowers ``change`` where the map at
    ``alpha_max`` exceeds the aim, and where its blotch exceeds ``blotch`` less the margin when
    that is > 0 (see the module docstring)."""
    shown = np.clip(np.rint(clean), 0, 255).astype(np.uint8)
    field = np.ones(clean.shape[:2], np.float32)
    aim = max(target - MAP_MARGIN, 0.5 * target)
    sigma = max(0.5, MAP_BLUR * min(clean.shape[:2]))
    blotch_aim = (1 - BLOTCH_MARGIN) * blotch
    for _ in range(MAP_ROUNDS):
        should_stop()
        scaled = alpha_max * field[..., None] * change
        protected = np.clip(np.rint(clean + scaled), 0, 255)
        score, heat = _measured(distance_map(shown, protected.astype(np.uint8)))
        low = np.abs(lowpass_luma(scaled)) if blotch > 0 else None
        if score <= aim and (low is None or np.quantile(low, BLOTCH_QUANTILE) <= blotch_aim):
            break
        ratio = np.minimum(1.0, (aim / np.maximum(heat, 1e-3)) ** MAP_POWER).astype(np.float32)
        if low is not None:
            ratio = np.minimum(ratio, blotch_aim / np.maximum(low, 1e-3)).astype(np.float32)
        field = np.clip(field * ratio, MAP_FLOOR, 1.0)
        field = cv2.GaussianBlur(field, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    return field


def _field_on_crop(
    field: np.ndarray, box: Box, region: CropRegion, width: int, height: int, size: int
) -> np.ndarray:
    """A display-window field ``(h, w)`` as a ``(size, size, 1)`` field over the face's crop
    (the window scaled back to the photo, extended past its border by its edge values)."""
    left, top, right, bottom = _window(box, width, height, 1.0)
    full = cv2.resize(field, (right - left, bottom - top), interpolation=cv2.INTER_LINEAR)
    pad = (
        max(0, top - region.top),
        max(0, region.bottom - bottom),
        max(0, left - region.left),
        max(0, region.right - right),
    )
    full = cv2.copyMakeBorder(full, *pad, borderType=cv2.BORDER_REPLICATE)
    y0, x0 = region.top - (top - pad[0]), region.left - (left - pad[2])
    over = full[y0 : y0 + region.height, x0 : x0 + region.width]
    crop = cv2.resize(np.ascontiguousarray(over), (size, size), interpolation=cv2.INTER_LINEAR)
    return crop.astype(np.float32)[..., None]


def visibility_budget(
    pixels: np.ndarray,
    boxes: Sequence[Box],
    regions: Sequence[CropRegion],
    faces: np.ndarray,
    deltas: np.ndarray,
    alpha_max: float,
    target: float,
    should_stop: Callable[[], None] = lambda: None,
    distance: Callable[[np.ndarray, np.ndarray], float | None] = butteraugli_distance,
    distance_map: DistanceMap | None = None,
    blotch: float = 0.0,
    min_face: int = 0,
) -> list[tuple[float, np.ndarray | None]]:
    """Per face, ``(alpha, field)``: the largest alpha in ``[0, alpha_max]`` whose face
    Butteraugli as displayed is at most ``target`` and whose blotch is at most ``blotch`` (see
    the module docstring), the face's change first reshaped by ``distance_map`` when one is
    given (the ``visibility_map`` option: ``field`` is then a ``(S, S, 1)`` multiplier in
    ``[MAP_FLOOR, 1]`` over the crop, else None).

    Args:
        pixels: The clean photo, ``(H, W, 3)`` uint8.
        boxes, regions: Each face's box and crop region in the photo.
        faces: ``(n, S, S, 3)`` the faces the perturbations were computed on, in [0, 1].
        deltas: ``(n, S, S, 3)`` their perturbations before amplification.
        alpha_max: The largest amplification (the options' alpha).
        target: The face Butteraugli not to exceed; 0: none (then ``blotch`` must be > 0, and
            no Butteraugli call is made).
        should_stop: Called between Butteraugli calls; may raise to abort a cancelled request.
        distance: The Butteraugli distance of two uint8 windows (None: not measured).
        distance_map: The distance and its difference map (:func:`butteraugli_map`), or None.
        blotch: The largest blotch, in 0..255 levels as displayed; 0: no limit.
        min_face: Faces whose box as displayed is smaller than this on its longer side (px)
            keep alpha <= 1 and no reshaping (their field is all ones); 0: none.

    Raises:
        RuntimeError: the Butteraugli tool is not installed, or failed.
    """
    if target < 0 or blotch < 0 or alpha_max <= 0 or not (target or blotch):
        raise ValueError(
            f"target or blotch, both >= 0, and alpha_max must be > 0, got {target}, {blotch} "
            f"and {alpha_max}"
        )
    if distance_map is not None and not target:
        raise ValueError("a distance map reshapes the change within a target, and target is 0")
    height, width = pixels.shape[:2]
    scale, _ = display_size(width, height)
    chosen: list[tuple[float, np.ndarray | None]] = []
    for k, (box, region) in enumerate(zip(boxes, regions)):
        applied = np.clip(faces[k] + deltas[k], 0.0, 1.0) - faces[k]
        clean, change = _display_window(pixels, box, region, applied)
        on_crop = None
        small = min_face > 0 and max(box[2], box[3]) * scale < min_face
        top = min(alpha_max, 1.0) if small else alpha_max
        if distance_map is not None and small:
            on_crop = np.ones((*faces.shape[1:3], 1), np.float32)
        elif distance_map is not None:
            field = _reshaped(clean, change, alpha_max, target, distance_map, should_stop, blotch)
            on_crop = _field_on_crop(field, box, region, width, height, faces.shape[1])
            # the search runs on the field as it reaches the display: pasted, then scaled
            clean, change = _display_window(pixels, box, region, on_crop * applied)
        alpha = _blotch_cap(change, top, blotch)
        if target and alpha > 0:
            alpha = _alpha_within(clean, change, alpha, target, should_stop, distance)
        chosen.append((alpha, on_crop))
    return chosen
