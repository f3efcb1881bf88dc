"""Unit tests of the visibility budget: per face, the largest alpha within a Butteraugli target.

The distance is a stand-in that grows linearly with the change (the mean absolute difference of
the displayed windows), so the alpha the bisection must find is known in closed form; one test
runs the real tool when it is installed.
"""

from __future__ import annotations

import numpy as np
import pytest

from faceoff.common.crops import crop_region, extract_crop
from faceoff.common.errors import InvalidOption
from faceoff.masker import budget
from faceoff.masker.options import resolve


def _photo(width: int = 400, height: int = 300) -> np.ndarray:
    rng = np.random.default_rng(0)
    low = rng.uniform(60, 200, (height // 20, width // 20, 3))
    return np.clip(np.kron(low, np.ones((20, 20, 1))), 0, 255).astype(np.uint8)


def _setup(width: int = 400, height: int = 300) -> tuple:
    pixels = _photo(width, height)
    boxes = [(50.0, 40.0, 120.0, 140.0), (250.0, 60.0, 60.0, 70.0)]
    regions = [crop_region(b, width, height) for b in boxes]
    faces = np.stack([extract_crop(pixels, r, 64) for r in regions])
    deltas = np.full_like(faces, 4 / 255) * np.where(np.arange(64) % 2, 1, -1)[None, :, None, None]
    return pixels, boxes, regions, faces, deltas


def _mean_change(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(float) - b.astype(float)).mean())


def test_each_face_gets_the_largest_alpha_within_the_target() -> None:
    pixels, boxes, regions, faces, deltas = _setup()
    deltas[1] *= 0.25  # the second face changes four times less at the same alpha
    at_one = [
        _mean_change(*_windows(pixels, b, r, f, d))
        for b, r, f, d in zip(boxes, regions, faces, deltas)
    ]
    target = 1.5 * at_one[0]
    alphas = budget.visibility_alphas(
        pixels, boxes, regions, faces, deltas, 4.0, target, distance=_mean_change
    )
    # the change is linear in alpha (up to rounding): alpha ~ target / change at alpha 1
    assert alphas[0] == pytest.approx(1.5, abs=0.1)
    assert alphas[0] <= 1.5 + 0.05, "the target is kept"
    assert alphas[1] == 4.0, "a face within the target at alpha_max gets alpha_max"
    calls: list[float] = []

    def counting(a: np.ndarray, b: np.ndarray) -> float:
        calls.append(1.0)
        return _mean_change(a, b)

    budget.visibility_alphas(
        pixels, boxes[:1], regions[:1], faces, deltas, 4.0, target, distance=counting
    )
    assert len(calls) <= budget.MAX_CALLS


def _windows(pixels, box, region, face, delta):  # type: ignore[no-untyped-def]
    clean, change = budget._display_window(pixels, box, region, np.clip(face + delta, 0, 1) - face)
    shown = np.clip(np.rint(clean), 0, 255).astype(np.uint8)
    return shown, np.clip(np.rint(clean + change), 0, 255).astype(np.uint8)


def test_a_large_photo_is_judged_at_display_size() -> None:
    pixels, boxes, regions, faces, deltas = _setup(2400, 1800)
    clean, change = budget._display_window(pixels, boxes[0], regions[0], deltas[0])
    assert max(clean.shape[:2]) < 0.5 * 1.5 * 140, "the window was not scaled for display"
    assert clean.shape == change.shape


def test_the_target_needs_the_tool_and_positive_settings() -> None:
    pixels, boxes, regions, faces, deltas = _setup()
    with pytest.raises(RuntimeError, match="butteraugli"):
        budget.visibility_alphas(
            pixels, boxes, regions, faces, deltas, 2.0, 1.0, distance=lambda a, b: None
        )
    with pytest.raises(ValueError, match="target"):
        budget.visibility_alphas(pixels, boxes, regions, faces, deltas, 2.0, 0.0)


@pytest.mark.skipif(not budget.available(), reason="the butteraugli tool is not installed")
def test_with_the_real_tool_the_chosen_alpha_keeps_the_target() -> None:
    from faceoff.common.crops import paste_delta
    from faceoff.masker.quality import face_butteraugli

    pixels, boxes, regions, faces, deltas = _setup()
    alphas = budget.visibility_alphas(pixels, boxes[:1], regions[:1], faces, deltas, 3.0, 2.0)
    applied = np.clip(faces[0] + alphas[0] * deltas[0], 0, 1) - faces[0]
    seen = face_butteraugli(pixels, paste_delta(pixels, regions[0], applied), boxes[:1])[0]
    assert seen.display is not None and seen.display <= 2.0 + 0.3


def test_visibility_and_adaptive_alpha_are_not_combined() -> None:
    assert resolve("medium", visibility=5.0, alpha=2.0).visibility == 5.0
    with pytest.raises(InvalidOption, match="visibility"):
        resolve("medium", visibility=5.0, adaptive_alpha=True, alpha=2.0)
    with pytest.raises(InvalidOption, match="visibility"):
        resolve("medium", visibility=0.1)


def test_a_distance_that_grows_fastest_at_small_alpha_still_gets_its_alpha() -> None:
    """Butteraugli rises faster than linearly at small alpha: a search that interpolates linearly
    from alpha 0 overshoots every time and ends at 0. B = c * sqrt(change) must get its alpha."""
    pixels, boxes, regions, faces, deltas = _setup()

    def concave(a: np.ndarray, b: np.ndarray) -> float:
        return 3.0 * float(np.sqrt(_mean_change(a, b)))

    at_one = concave(*_windows(pixels, boxes[0], regions[0], faces[0], deltas[0]))
    target = at_one * np.sqrt(0.3)  # reached at alpha 0.3
    (alpha,) = budget.visibility_alphas(
        pixels, boxes[:1], regions[:1], faces, deltas, 2.0, target, distance=concave
    )
    assert 0.3 * 0.8 <= alpha <= 0.3 + 0.03, alpha


def test_a_masker_without_the_tool_refuses_a_target_before_the_attack(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from faceoff.masker.jobs import Preparer

    monkeypatch.setattr(budget, "available", lambda: False)

    class _Surrogates:
        def resolved(self, options: object) -> object:
            return options

    with pytest.raises(InvalidOption, match="butteraugli tool"):
        Preparer(_Surrogates()).prepare(  # type: ignore[arg-type]
            b"",
            resolve("medium", visibility=5.0),
            None,  # type: ignore[arg-type]
        )
