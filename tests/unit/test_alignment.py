"""Unit tests of per-face alignment: the similarity from a face's landmarks, and aligned windows.

No model is loaded: the windows are read with :class:`WindowCrop` on synthetic crops whose
"landmarks" are small Gaussian dots, so where each lands is measured to a fraction of a pixel.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import tensorflow as tf

from faceoff.faces.alignment import (
    ARCFACE_TEMPLATE,
    CANONICAL,
    IDENTITY,
    LANDMARK_ORDER,
    crop_alignment,
)
from faceoff.faces.models.sface import INPUT_SIZE, NETWORK_SIZE, WINDOW
from faceoff.faces.models.window_crop import WindowCrop
from faceoff.masker.attacks import make_loss
from tests.unit.test_attacks import embeddings, model


def _dots(points: np.ndarray, size: int = INPUT_SIZE, sigma: float = 1.5) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    image = np.zeros((size, size), np.float64)
    for x, y in points:  # pixel-centre coordinates
        image += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return np.repeat(image[:, :, None], 3, axis=2).astype(np.float32)


def _centroids(image: np.ndarray, near: np.ndarray, radius: int = 5) -> np.ndarray:
    found = []
    for x, y in near:
        x0, y0 = int(round(x)), int(round(y))
        window = image[y0 - radius : y0 + radius + 1, x0 - radius : x0 + radius + 1, 0]
        wy, wx = np.mgrid[y0 - radius : y0 + radius + 1, x0 - radius : x0 + radius + 1]
        found.append([(window * wx).sum() / window.sum(), (window * wy).sum() / window.sum()])
    return np.array(found)


def _landmarks(points: np.ndarray) -> dict[str, Any]:
    return {name: tuple(p) for name, p in zip(LANDMARK_ORDER, points)}


def test_canonical_landmarks_give_the_identity() -> None:
    region = (40.0, 30.0, 200.0, 200.0)
    points = CANONICAL * 200 + [40, 30]
    np.testing.assert_allclose(crop_alignment(_landmarks(points), region), IDENTITY, atol=1e-6)


@pytest.mark.parametrize(
    ("degrees", "scale", "shift"), [(0, 1.0, (0, 0)), (12, 1.08, (9, -5)), (-20, 0.9, (-11, 6))]
)
def test_the_aligned_window_puts_the_landmarks_on_the_template(
    degrees: float, scale: float, shift: tuple[float, float]
) -> None:
    """A face moved, turned and scaled in the crop: read through its alignment, its landmarks
    land within half a pixel of ArcFace's template in the 112 px window, and gradients pass."""
    angle = np.deg2rad(degrees)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = np.array([INPUT_SIZE / 2, INPUT_SIZE / 2])
    canonical_px = CANONICAL * INPUT_SIZE
    # the face's landmarks (edge coordinates) and its crop (dots at the pixel-centre positions)
    points = centre + scale * (canonical_px - centre) @ rotation.T + np.array(shift)
    crop = tf.constant(_dots(points - 0.5)[None])
    align = crop_alignment(_landmarks(points), (0.0, 0.0, INPUT_SIZE, INPUT_SIZE))
    cut = WindowCrop(WINDOW, INPUT_SIZE, NETWORK_SIZE)
    with tf.GradientTape() as tape:
        tape.watch(crop)
        window = cut.aligned(crop, tf.constant(align[None]))
        total = tf.reduce_sum(window * window)
    assert float(tf.reduce_max(tf.abs(tape.gradient(total, crop)))) > 0
    target = ARCFACE_TEMPLATE - 0.5  # the template's edge coordinates as pixel centres
    found = _centroids(window.numpy()[0], target)
    assert np.abs(found - target).max() < 0.5, (found, target)


def test_the_identity_alignment_is_the_fixed_window() -> None:
    rng = np.random.default_rng(0)
    crops = tf.constant(rng.uniform(0, 1, (3, INPUT_SIZE, INPUT_SIZE, 3)).astype(np.float32))
    cut = WindowCrop(WINDOW, INPUT_SIZE, NETWORK_SIZE)
    fixed = cut(crops).numpy()
    aligned = cut.aligned(crops, tf.constant(np.tile(IDENTITY, (3, 1)))).numpy()
    np.testing.assert_allclose(aligned, fixed, atol=1e-4)  # the same samples, rounded apart


@pytest.mark.parametrize(
    ("landmarks", "region", "message"),
    [
        ({"left_eye": (1, 2)}, (0, 0, 10, 10), "missing"),
        (_landmarks(np.full((5, 2), np.nan)), (0, 0, 10, 10), "finite"),
        (_landmarks(CANONICAL), (0, 0, 0, 10), "empty"),
    ],
)
def test_bad_landmarks_are_refused(landmarks: Any, region: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        crop_alignment(landmarks, region)


def test_a_loss_checks_its_alignments() -> None:
    e = embeddings()
    with pytest.raises(ValueError, match="align has shape"):
        make_loss("target", model(), list(e[:2]), align=np.zeros((3, 6)))
    loss = make_loss("target", model(), list(e[:2]))
    np.testing.assert_array_equal(loss.inputs.align.numpy(), np.tile(IDENTITY, (2, 1)))
