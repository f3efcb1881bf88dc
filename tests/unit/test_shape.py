"""Unit tests of perceptual shaping: the soft mask, the luminance and chroma budgets, texture
masking, and the native-resolution paste-back, on the tiny model of :mod:`tests.unit.test_attacks`."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from faceoff.common.crops import CropRegion, paste_delta
from faceoff.faces.models.resized import Resized
from faceoff.masker.attacks import Transfer, make_attack, make_loss
from faceoff.masker.attacks.shape import Shape, budget, penalty, soft_mask, to_rgb
from faceoff.masker.options import resolve
from tests.unit.test_attacks import SIZE, embeddings, faces, loss_for, model

LUMA = np.array([0.299, 0.587, 0.114])
CB = np.array([-0.168736, -0.331264, 0.5])
CR = np.array([0.5, -0.418688, -0.081312])


def _shaped(shape: Shape, norm: str = "linf", epsilon: float = 0.03, seed: int = 1) -> np.ndarray:
    probes, _ = faces()
    attack = make_attack(
        "pgd",
        norm,
        epsilon=epsilon,
        step_size=epsilon / 4,
        iterations=12,
        transfer=Transfer(momentum=1.0),
        shape=shape,
    )
    return attack.attack(probes, loss_for("target", False), seed=seed).delta


def test_soft_mask_is_one_inside_zero_outside_and_smooth() -> None:
    mask = soft_mask(101, 81, 0.2)
    assert mask[50, 40] == pytest.approx(1.0) and mask[0, 0] == 0.0 and mask[50, 0] < 0.02
    assert mask.min() >= 0 and mask.max() <= 1
    # no jump: across the 81 px side the raised cosine fades over 8 px, pi / 16 per pixel at most
    assert max(np.abs(np.diff(mask, axis=a)).max() for a in (0, 1)) < 0.21
    assert np.array_equal(soft_mask(7, 9, 0.0), np.ones((7, 9), np.float32))


def test_shaped_perturbation_has_no_seam_at_the_mask_border() -> None:
    delta = _shaped(Shape(feather=0.25, chroma=0.5))
    grey = np.abs(delta) * 255
    mask = soft_mask(SIZE, SIZE, 0.25)
    outside = mask == 0
    assert outside.any() and grey[:, outside].max() == 0.0, "change outside the ellipse"
    rim = (mask > 0) & (mask < 0.05)
    assert rim.any() and grey[:, rim].max() <= 1.0, "the change at the border exceeds 1 grey level"


def test_perturbation_stays_within_its_luminance_and_chroma_budgets() -> None:
    eps, chroma = 0.03, 0.25
    delta = _shaped(Shape(chroma=chroma), epsilon=eps).astype(np.float64)
    assert np.all(np.isfinite(delta)) and np.all(np.any(delta != 0, axis=(1, 2, 3)))
    probes, _ = faces()
    moved = probes + delta
    free = np.all((moved > 1e-6) & (moved < 1 - 1e-6), axis=-1)  # the [0, 1] clip bends colour
    assert free.mean() > 0.9
    y, cb, cr = (np.abs(delta @ v)[free] for v in (LUMA, CB, CR))
    assert y.max() <= eps * (1 + 1e-4) and y.max() > 0.5 * eps
    assert max(cb.max(), cr.max()) <= chroma * eps * (1 + 1e-4)
    grey = _shaped(Shape(chroma=0.0), epsilon=eps).astype(np.float64)
    free = np.all((probes + grey > 1e-6) & (probes + grey < 1 - 1e-6), axis=-1)
    assert np.abs(grey @ CB)[free].max() < 1e-6 and np.abs(grey @ CR)[free].max() < 1e-6
    assert np.abs(grey @ LUMA).max() > 0.5 * eps


def test_texture_masking_moves_the_budget_to_textured_pixels() -> None:
    x = np.full((1, 64, 64, 3), 0.5, np.float32)
    x[0, :, 32:] += np.random.default_rng(0).uniform(-0.3, 0.3, (64, 32, 1)).astype(np.float32)
    s = Shape(texture=1.0).inputs()
    room = budget(tf.constant(x), s).numpy()[0, :, :, 0]
    assert room[:, 40:].mean() > 2 * room[:, :24].mean(), "textured half gets more room"
    assert room.mean() == pytest.approx(1.0, rel=1e-3), "normalised to mean 1"
    flat = budget(tf.constant(x), Shape(texture=0.0).inputs()).numpy()
    assert np.allclose(flat, 1.0, atol=1e-4)


def test_to_rgb_with_full_chroma_is_an_invertible_colour_map() -> None:
    z = tf.constant(np.random.default_rng(1).normal(size=(2, 8, 8, 3)), tf.float32)
    rgb = to_rgb(z, tf.ones([2, 8, 8, 1]), Shape(chroma=1.0, texture=0.5).inputs()).numpy()
    back = np.stack([rgb @ v for v in (LUMA, CB, CR)], axis=-1)
    assert np.allclose(back, z.numpy(), atol=1e-4)


def test_shaped_attack_is_deterministic_and_still_moves_faces() -> None:
    shape = Shape(feather=0.2, chroma=0.3, texture=0.5)
    a, b = _shaped(shape), _shaped(shape)
    assert np.array_equal(a, b)
    probes, _ = faces()
    loss = loss_for("target", False)
    before = loss.compiled_evaluate()(tf.constant(probes), loss.inputs)[0].numpy()
    after = loss.compiled_evaluate()(tf.constant(probes + a), loss.inputs)[0].numpy()
    assert np.all(after < before), "every face moved away from its references"


def test_ssim_penalty_is_zero_for_the_photo_and_keeps_structure() -> None:
    from skimage.metrics import structural_similarity

    probes, _ = faces()
    x = tf.constant(probes)
    inputs = Shape(ssim=10.0).inputs()
    assert np.allclose(penalty(x, x, inputs).numpy(), 0.0, atol=1e-6)
    noisy = tf.clip_by_value(x + 0.05 * tf.sign(tf.sin(40.0 * x)), 0.0, 1.0)
    assert np.all(penalty(x, noisy, inputs).numpy() > 0)

    def luma_ssim(delta: np.ndarray) -> float:
        luma = (probes * LUMA).sum(-1)
        moved = (np.clip(probes + delta, 0, 1) * LUMA).sum(-1)
        return float(
            np.mean(
                [
                    structural_similarity(a, b, data_range=1.0)
                    for a, b in zip(luma, moved, strict=True)
                ]
            )
        )

    plain = _shaped(Shape(feather=0.2, chroma=0.3))
    penalised = _shaped(Shape(feather=0.2, chroma=0.3, ssim=50.0))
    assert luma_ssim(penalised) > luma_ssim(plain)
    loss = loss_for("target", False)
    before = loss.compiled_evaluate()(x, loss.inputs)[0].numpy()
    after = loss.compiled_evaluate()(tf.constant(probes + penalised), loss.inputs)[0].numpy()
    assert np.all(after < before), "the penalised attack still moves every face"


def test_resized_model_attacks_a_larger_crop_through_an_antialiased_resize() -> None:
    probes, _ = faces()
    refs = embeddings()
    big = tf.image.resize(probes, [2 * SIZE, 2 * SIZE], method="bilinear").numpy()
    wrapped = Resized(model(), 2 * SIZE)
    assert wrapped.input_size == 2 * SIZE and wrapped.embedding_dim == model().embedding_dim
    close = np.abs(wrapped.embed_numpy(big) - model().embed_numpy(probes)).max()
    assert close < 0.1, "the wrapper sees the big crop as the model sees the small one"
    loss = make_loss("target", wrapped, [refs[i] for i in range(len(big))], None)
    result = make_attack(
        "pgd", "linf", epsilon=0.03, step_size=0.01, iterations=6, shape=Shape(feather=0.2)
    ).attack(big, loss, seed=0)
    assert result.delta.shape == big.shape and np.all(np.isfinite(result.delta))
    with pytest.raises(ValueError, match="at least"):
        Resized(model(), SIZE - 1)


def test_native_paste_back_leaves_pixels_outside_the_mask_byte_exact_in_png() -> None:
    rng = np.random.default_rng(2)
    photo = rng.integers(0, 256, (300, 260, 3), dtype=np.uint8)
    region = CropRegion(40, 50, 240, 290)  # 200 x 240, attacked at 128 x 128
    z = rng.uniform(-1, 1, (1, 128, 128, 3)).astype(np.float32) * 0.03
    room = budget(
        tf.constant(np.full((1, 128, 128, 3), 0.5, np.float32)), Shape(feather=0.2).inputs()
    )
    delta = to_rgb(tf.constant(z), room, Shape(feather=0.2).inputs()).numpy()[0]
    out = paste_delta(photo, region, delta)
    buf = io.BytesIO()
    Image.fromarray(out).save(buf, "PNG")
    back = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
    inside = np.zeros(photo.shape[:2], bool)
    inside[region.slices] = soft_mask(region.height, region.width, 0.2) > 0
    assert np.array_equal(back[~inside], photo[~inside]), "a pixel outside the mask changed"
    assert np.any(back[inside] != photo[inside])
    rim = np.zeros(photo.shape[:2], bool)
    rim[region.slices] = (soft_mask(region.height, region.width, 0.2) > 0) & (
        soft_mask(region.height, region.width, 0.2) < 0.05
    )
    assert np.abs(back[rim].astype(int) - photo[rim].astype(int)).max() <= 1, "seam over 1 level"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"feather": 0.6}, "feather"),
        ({"feather": -0.1}, "feather"),
        ({"chroma": 1.5}, "chroma"),
        ({"texture": -1}, "texture"),
        ({"work_size": 100}, "work_size"),
        ({"work_size": 700}, "work_size"),
        ({"attack": "cw", "feather": 0.2}, "feather"),
        ({"ssim": -1.0}, "ssim"),
        ({"ssim": 2000.0}, "ssim"),
        ({"attack": "cw", "ssim": 1.0}, "ssim"),
    ],
)
def test_shaping_options_out_of_range_are_refused_by_name(
    overrides: dict[str, Any], field: str
) -> None:
    from faceoff.common.errors import InvalidOption

    with pytest.raises(InvalidOption, match=field):
        resolve("medium", **overrides)


def test_shape_rejects_bad_settings() -> None:
    for kwargs in ({"feather": 0.7}, {"chroma": -0.1}, {"texture": 2}, {"ssim": -1}, {"ssim": 1e4}):
        with pytest.raises(ValueError):
            Shape(**kwargs)
    assert not Shape().active and Shape(chroma=0.5).active


def test_work_sizes_are_rounded_to_a_few_sides() -> None:
    from faceoff.masker.surrogates import WORK_SIZE_STEP, Surrogates

    class _Sized:
        size = 160

    sides = {
        Surrogates.work_side(_Sized(), resolve("medium", work_size=w))  # type: ignore[arg-type]
        for w in range(160, 641)
    }
    assert len(sides) <= 16 and all(s % WORK_SIZE_STEP == 0 for s in sides)
    assert Surrogates.work_side(_Sized(), resolve("medium", work_size=0)) == 160  # type: ignore[arg-type]
    assert Surrogates.work_side(_Sized(), resolve("medium", work_size=500)) == 512  # type: ignore[arg-type]
