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


def _alphas(*args: object, **kwargs: object) -> list[float]:
    """The alphas of :func:`budget.visibility_budget` without a map (its fields are None)."""
    chosen = budget.visibility_budget(*args, **kwargs)  # type: ignore[arg-type]
    assert all(field is None for _, field in chosen)
    return [alpha for alpha, _ in chosen]


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
    alphas = _alphas(pixels, boxes, regions, faces, deltas, 4.0, target, distance=_mean_change)
    # the change is linear in alpha (up to rounding): alpha ~ target / change at alpha 1
    assert alphas[0] == pytest.approx(1.5, abs=0.1)
    assert alphas[0] <= 1.5 + 0.05, "the target is kept"
    assert alphas[1] == 4.0, "a face within the target at alpha_max gets alpha_max"
    calls: list[float] = []

    def counting(a: np.ndarray, b: np.ndarray) -> float:
        calls.append(1.0)
        return _mean_change(a, b)

    _alphas(pixels, boxes[:1], regions[:1], faces, deltas, 4.0, target, distance=counting)
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
        _alphas(pixels, boxes, regions, faces, deltas, 2.0, 1.0, distance=lambda a, b: None)
    with pytest.raises(ValueError, match="target"):
        _alphas(pixels, boxes, regions, faces, deltas, 2.0, 0.0)


@pytest.mark.skipif(not budget.available(), reason="the butteraugli tool is not installed")
def test_with_the_real_tool_the_chosen_alpha_keeps_the_target() -> None:
    from faceoff.common.crops import paste_delta
    from faceoff.masker.quality import face_butteraugli

    pixels, boxes, regions, faces, deltas = _setup()
    alphas = _alphas(pixels, boxes[:1], regions[:1], faces, deltas, 3.0, 2.0)
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
    (alpha,) = _alphas(pixels, boxes[:1], regions[:1], faces, deltas, 2.0, target, distance=concave)
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


# -- the visibility map ------------------------------------------------------------------------


def _heat_picture(values: np.ndarray) -> np.ndarray:
    """Butteraugli's CreateHeatMapImage (Debian's 0~20170116), written forward for the test."""
    from faceoff.masker.quality import _BAD, _GOOD

    out = np.zeros((*values.shape, 3), np.uint8)
    for idx, d in np.ndenumerate(values):
        if d < 0.5 * _GOOD:
            rgb = (0, d * (255 - 153) / (0.5 * _GOOD) + 153, 0)
        elif d < _GOOD:
            rgb = ((d - 0.5 * _GOOD) * 255 / (0.5 * _GOOD), 255, 0)
        elif d < _BAD:
            rgb = (255, 255 - (d - _GOOD) * 255 / (_BAD - _GOOD), 0)
        elif d < 5 * _BAD:
            rgb = (255, 0, 255 * (d - _BAD) / (4 * _BAD))
        elif d < 10 * _BAD:
            rgb = (255, 255 * (d - 5 * _BAD) / (5 * _BAD), 255)
        else:
            rgb = (255, 255, 255)
        out[idx] = [int(c) for c in rgb]  # the tool's uint8 cast truncates
    return out


def test_the_heat_map_is_read_back_to_its_values() -> None:
    from faceoff.masker.quality import _BAD, _GOOD, heatmap_values

    # the thresholds of butteraugli 2017: ButteraugliFuzzyInverse(1.5) and (0.5)
    assert _GOOD == pytest.approx(0.8425, abs=1e-3) and _BAD == pytest.approx(1.1068, abs=1e-3)
    values = np.linspace(0.0, 10.5, 400).reshape(20, 20)
    read = heatmap_values(_heat_picture(values))
    # one colour step: 4 * bad / 255 (0.017) in the blue range, 5 * bad / 255 (0.022) above
    assert np.abs(read - values).max() < 0.03
    assert heatmap_values(_heat_picture(np.array([[20.0]])))[0, 0] == pytest.approx(10 * _BAD)


@pytest.mark.skipif(not budget.available(), reason="the butteraugli tool is not installed")
def test_the_real_tools_map_peaks_at_its_distance() -> None:
    from faceoff.masker.quality import butteraugli_map

    pixels = _photo(160, 160)
    rng = np.random.default_rng(1)
    noisy = (
        pixels.astype(float) + rng.normal(0, 6, pixels.shape) * (np.arange(160) > 80)[:, None, None]
    )
    result = butteraugli_map(pixels, np.clip(noisy, 0, 255).astype(np.uint8))
    assert result is not None
    distance, heat = result
    assert heat.shape == (160, 160)
    assert heat.max() == pytest.approx(distance, abs=0.05)
    assert heat[:60].max() < 0.5 * heat[100:].max(), "the map is high where the change is"


def _local_map(a: np.ndarray, b: np.ndarray) -> tuple[float, np.ndarray]:
    """A stand-in map: the absolute change, blurred a little (a visibility that is local)."""
    import cv2

    heat = cv2.GaussianBlur(np.abs(a.astype(np.float32) - b.astype(np.float32)).max(2), (0, 0), 2)
    return float(heat.max()), heat


def _map_max(a: np.ndarray, b: np.ndarray) -> float:
    return _local_map(a, b)[0]


def _mapped(pixels, boxes, regions, faces, deltas, alpha_max, target, **kwargs):  # type: ignore[no-untyped-def]
    """The first face's ``(alpha, field)`` with the stand-in distance and its local map."""
    ((alpha, field),) = budget.visibility_budget(
        pixels, boxes[:1], regions[:1], faces, deltas, alpha_max, target,
        distance=_map_max, distance_map=_local_map, **kwargs,
    )  # fmt: skip
    return alpha, field


def test_the_map_moves_change_from_where_it_shows_and_keeps_the_target() -> None:
    pixels, boxes, regions, faces, deltas = _setup()
    deltas = deltas[:1].copy()
    deltas[0, :, 32:] *= 4.0  # the right half of the face changes four times more
    target = 1.2 * _map_max(*_windows(pixels, boxes[0], regions[0], faces[0], deltas[0] / 4))
    alpha, field = _mapped(pixels, boxes, regions, faces, deltas, 4.0, target)
    (plain,) = _alphas(
        pixels, boxes[:1], regions[:1], faces, deltas, 4.0, target, distance=_map_max
    )
    assert field is not None
    assert (
        field.shape == (64, 64, 1)
        and field.min() >= budget.MAP_FLOOR - 1e-6
        and field.max() <= 1.0 + 1e-6
    )
    assert field[20:44, 44:].mean() < 0.5 * field[20:44, :20].mean(), "less where it showed most"
    assert alpha > 1.5 * plain, "the rest of the face gets more of the budget"
    seen = _map_max(*_windows(pixels, boxes[0], regions[0], faces[0], alpha * field * deltas[0]))
    assert seen <= target + 0.05
    # a face already within the aim at alpha_max keeps its change as it is
    alpha_q, field_q = _mapped(pixels, boxes, regions, faces, deltas * 0.01, 1.0, target)
    assert alpha_q == 1.0 and field_q is not None and np.all(field_q == 1.0)


def test_a_field_on_the_display_window_lands_on_the_same_place_of_the_crop() -> None:
    pixels, boxes, regions, faces, _ = _setup()
    box, region = boxes[0], regions[0]
    from faceoff.masker.quality import _window

    left, top, right, bottom = _window(box, 400, 300, 1.0)
    field = np.ones((bottom - top, right - left), np.float32)
    field[:, : (right - left) // 2] = 0.2  # the window's left half
    on_crop = budget._field_on_crop(field, box, region, 400, 300, 64)
    # the crop's column of the box centre's x: left of it low, right of it 1
    cx = (box[0] + box[2] / 2 - region.left) / region.width * 64
    assert on_crop[32, int(cx) - 4, 0] == pytest.approx(0.2, abs=0.05)
    assert on_crop[32, int(cx) + 4, 0] == pytest.approx(1.0, abs=0.05)


def test_visibility_map_needs_a_visibility_target() -> None:
    assert resolve("medium", visibility=5.0, alpha=2.0, visibility_map=True).visibility_map
    with pytest.raises(InvalidOption, match="visibility") as raised:
        resolve("medium", visibility_map=True)
    assert raised.value.field == "options.visibility_map"


def test_the_blotch_guard_caps_alpha_without_a_butteraugli_call() -> None:
    from faceoff.common.crops import paste_delta
    from faceoff.masker.quality import blotch, display_faces

    pixels, boxes, regions, faces, _ = _setup()
    # a soft brightening of the whole face: what Butteraugli barely sees and people do
    deltas = np.full_like(faces, 8 / 255)

    def no_call(a: np.ndarray, b: np.ndarray) -> float:
        raise AssertionError("the guard alone needs no Butteraugli call")

    alphas = _alphas(pixels, boxes, regions, faces, deltas, 2.0, 0.0, distance=no_call, blotch=3.0)
    for k, alpha in enumerate(alphas):
        assert 0.2 < alpha < 1.0, "8 levels at alpha 1 must come down to 3"
        applied = np.clip(faces[k] + alpha * deltas[k], 0, 1) - faces[k]
        shown = paste_delta(pixels, regions[k], applied)
        ((before, after),) = display_faces(pixels, shown, boxes[k : k + 1])
        assert blotch(before, after) <= 3.0 + 0.5
    # a change with no soft patch keeps its alpha
    _, _, _, _, textured = _setup()
    assert _alphas(pixels, boxes, regions, faces, textured, 2.0, 0.0, blotch=3.0) == [2.0, 2.0]
    # with a target, the tighter of the two wins
    target = 1e6
    assert (
        _alphas(
            pixels, boxes, regions, faces, deltas, 2.0, target, distance=_mean_change, blotch=3.0
        )
        == alphas
    )
    with pytest.raises(ValueError, match="blotch"):
        _alphas(pixels, boxes, regions, faces, deltas, 2.0, 0.0, blotch=0.0)


def test_with_the_map_the_guard_lowers_the_change_where_it_blotches() -> None:
    pixels, boxes, regions, faces, deltas = _setup()
    deltas = deltas[:1].copy()
    deltas[0, :, :32] = 8 / 255  # the left half brightens softly, the right half is a texture
    target = 1e6  # Butteraugli's stand-in never binds: only the guard shapes the field
    alpha, field = _mapped(pixels, boxes, regions, faces, deltas, 2.0, target, blotch=3.0)
    (capped,) = _alphas(
        pixels, boxes[:1], regions[:1], faces, deltas, 2.0, target, distance=_map_max, blotch=3.0
    )
    assert field is not None
    assert field[20:44, 4:24].mean() < 0.7 * field[20:44, 44:60].mean(), "less where it blotched"
    assert alpha > capped, "the rest of the face keeps more of its change"
    shown = _windows(pixels, boxes[0], regions[0], faces[0], alpha * field * deltas[0])
    from faceoff.masker.quality import blotch

    assert blotch(*shown) <= 3.0 + 0.5


def test_blotch_is_checked_by_name() -> None:
    assert resolve("medium", blotch=3.0).blotch == 3.0
    assert resolve("medium", blotch=3.0, visibility=5.0, alpha=2.0).visibility == 5.0
    for bad in (
        {"blotch": 0.1},
        {"blotch": 31.0},
        {"blotch": 3.0, "adaptive_alpha": True, "alpha": 2.0, "loop_recognizers": ("sface",)},
    ):
        with pytest.raises(InvalidOption, match="blotch") as raised:
            resolve("medium", **bad)
        assert raised.value.field == "options.blotch"


def test_faces_displayed_small_keep_alpha_one_and_no_map() -> None:
    pixels, boxes, regions, faces, deltas = _setup()  # face boxes 140 px and 70 px high
    deltas = deltas * 0.25  # both faces within the target up to alpha_max
    target = 1e6
    plain = _alphas(pixels, boxes, regions, faces, deltas, 4.0, target, distance=_mean_change)
    assert plain == [4.0, 4.0]
    kept = _alphas(
        pixels, boxes, regions, faces, deltas, 4.0, target, distance=_mean_change, min_face=100
    )
    assert kept == [4.0, 1.0], "the 70 px face is left at alpha 1, the 140 px face budgeted"
    # with the map, the small face's field is all ones (the large face's is the map's)
    chosen = budget.visibility_budget(
        pixels, boxes, regions, faces, deltas * 8, 4.0, 1.0,
        distance=_map_max, distance_map=_local_map, min_face=100,
    )  # fmt: skip
    (alpha_l, field_l), (alpha_s, field_s) = chosen
    assert field_s is not None and np.all(field_s == 1.0) and alpha_s <= 1.0
    assert field_l is not None and field_l.min() < 1.0
    # a small face over the target at alpha 1 is still lowered
    (low,) = _alphas(
        pixels, boxes[1:], regions[1:], faces[1:], deltas[1:] * 8, 4.0, 0.5 * _mean_change(
            *_windows(pixels, boxes[1], regions[1], faces[1], deltas[1] * 8)
        ), distance=_mean_change, min_face=100,
    )  # fmt: skip
    assert 0.3 < low < 0.7


def test_visibility_min_face_needs_a_target() -> None:
    assert resolve("medium", visibility=5.0, visibility_min_face=200).visibility_min_face == 200
    for bad in ({"visibility_min_face": 200}, {"visibility": 5.0, "visibility_min_face": 4}):
        with pytest.raises(InvalidOption, match="visibility_min_face") as raised:
            resolve("medium", **bad)
        assert raised.value.field == "options.visibility_min_face"
