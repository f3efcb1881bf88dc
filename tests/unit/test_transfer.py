"""Unit tests of the transfer techniques, the surrogate ensemble and adaptive amplification.

Attacks run on the tiny deterministic model of :mod:`tests.unit.test_attacks`; adaptive
amplification runs against a fake recogniser whose embedding is the context crop's pixels, so
where it stops matching is known exactly.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

from faceoff.common.crops import crop_region, extract_crop
from faceoff.common.errors import InvalidOption
from faceoff.common.imaging import Photo
from faceoff.faces.models import augment
from faceoff.faces.models.augment import drop, feature_dropout, feature_taps, skip_gradient
from faceoff.faces.models.ensemble import Ensemble
from faceoff.faces.models.resized import Resized
from faceoff.faces.recognizers.base import EmbeddingRecognizer
from faceoff.masker import adaptive
from faceoff.masker.attacks import Transfer, make_attack, make_loss
from faceoff.masker.attacks.losses import HingeLoss, set_distances
from faceoff.masker.attacks.pgd import feature_disruption, step_gradient
from faceoff.masker.attacks.transfer import (
    MAX_VARIANCE,
    TransferInputs,
    gaussian_kernel,
    member_mask,
    neighbour,
    neighbour_step,
    process_gradient,
    transform_input,
    warp_matrix,
)
from faceoff.masker.options import resolve
from tests.unit.test_attacks import IDENTITIES, ToyEmbedding, faces, loss_for

PGD_FAST = {"epsilon": 2.0, "step_size": 0.3, "iterations": 10}
TECHNIQUES = {
    "momentum": Transfer(momentum=1.0),
    "diversity": Transfer(diversity=1.0),
    "ti_kernel": Transfer(ti_kernel=5),
    "eot": Transfer(eot=1.0),
    "warp": Transfer(warp=1.0),
    "dropout": Transfer(dropout=0.2),
    "variance": Transfer(variance=2),
}


def _attack(transfer: Transfer, seed: int = 3, norm: str = "l2") -> np.ndarray:
    probes, _ = faces()
    params = PGD_FAST if norm == "l2" else {"epsilon": 0.05, "step_size": 0.01, "iterations": 10}
    return (
        make_attack("pgd", norm, **params, transfer=transfer)
        .attack(probes, loss_for("target", False), seed=seed)
        .delta
    )


# -- each technique runs, changes the perturbation, and keeps its guarantees --------------------


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("name", sorted(TECHNIQUES))
def test_each_technique_runs_and_changes_the_perturbation(name: str, norm: str) -> None:
    plain = _attack(Transfer(), norm=norm)
    delta = _attack(TECHNIQUES[name], norm=norm)
    probes, _ = faces()
    assert np.all(np.isfinite(delta))
    assert np.all(np.any(delta != 0, axis=(1, 2, 3))), "a face got an all-zero perturbation"
    assert np.abs(delta - plain).max() > 1e-3, f"{name} did not change the perturbation"
    assert probes.min() >= 0 and np.all(probes + delta >= 0) and np.all(probes + delta <= 1)
    if norm == "l2":
        assert (
            np.sqrt((delta.astype(np.float64) ** 2).sum(axis=(1, 2, 3))).max()
            <= PGD_FAST["epsilon"] + 1e-5
        )
    else:
        assert np.abs(delta).max() <= 0.05 + 1e-7


@pytest.mark.parametrize("name", sorted(TECHNIQUES))
def test_techniques_are_deterministic_for_a_seed(name: str) -> None:
    a = _attack(TECHNIQUES[name], seed=5)
    b = _attack(TECHNIQUES[name], seed=5)
    c = _attack(TECHNIQUES[name], seed=6)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0


def test_all_techniques_together_still_move_faces_away() -> None:
    probes, _ = faces()
    loss = loss_for("target", False)
    result = make_attack("pgd", "l2", **PGD_FAST, transfer=Transfer(1.0, 0.5, 5, 0.5)).attack(
        probes, loss, seed=3
    )
    before, _ = loss.evaluate(probes)
    assert np.all(result.loss < before), "the attack with every technique on did not lower the loss"


def _inputs(faces: int = 2, **kwargs: Any) -> TransferInputs:
    return Transfer(**kwargs).inputs(np.arange(11, 11 + faces))


def test_gradient_processing_is_the_identity_when_off() -> None:
    grad = tf.random.stateless_normal([2, 16, 16, 3], [1, 2])
    out, velocity = process_gradient(grad, tf.zeros_like(grad), _inputs())
    np.testing.assert_allclose(out.numpy(), grad.numpy(), rtol=1e-6)
    assert not np.any(velocity.numpy())


def test_momentum_accumulates_l1_normalised_gradients() -> None:
    grad = tf.random.stateless_normal([2, 16, 16, 3], [1, 2])
    t = _inputs(momentum=0.5)
    first, v1 = process_gradient(grad, tf.zeros_like(grad), t)
    second, _ = process_gradient(grad, v1, t)
    unit = grad / tf.reduce_mean(tf.abs(grad), axis=[1, 2, 3], keepdims=True)
    np.testing.assert_allclose(first.numpy(), unit.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(second.numpy(), 1.5 * unit.numpy(), rtol=1e-4, atol=1e-5)


def test_translation_invariance_smooths_the_gradient() -> None:
    kernel = gaussian_kernel(7)
    assert kernel.shape == (7, 7, 3, 1)
    np.testing.assert_allclose(kernel.sum(axis=(0, 1)), 1.0, rtol=1e-6)
    grad = tf.random.stateless_normal([1, 32, 32, 3], [3, 4])
    out, _ = process_gradient(grad, tf.zeros_like(grad), _inputs(ti_kernel=7))
    rough = lambda g: float(np.abs(np.diff(g, axis=1)).mean())  # noqa: E731
    assert rough(out.numpy()) < 0.5 * rough(grad.numpy())


def test_input_transforms_keep_the_shape_and_range_and_pass_gradients() -> None:
    x = tf.constant(faces()[0])
    for kwargs in ({"diversity": 1.0}, {"eot": 1.0}, {"warp": 1.0}):
        t = _inputs(len(x), **kwargs)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = transform_input(x, t, tf.constant(0))
            total = tf.reduce_sum(y * tf.random.stateless_normal(tf.shape(y), [5, 6]))
        grad = tape.gradient(total, x)
        assert y.shape == x.shape
        assert float(tf.reduce_min(y)) >= 0.0 and float(tf.reduce_max(y)) <= 1.0
        assert float(tf.reduce_max(tf.abs(y - x))) > 1e-3, f"{kwargs} left the input unchanged"
        assert np.all(np.isfinite(grad.numpy())) and float(tf.reduce_max(tf.abs(grad))) > 0


@pytest.mark.parametrize(
    ("degrees", "scale", "shift"),
    [(0.0, 1.0, (0.0, 0.0)), (8.0, 1.1, (3.0, -2.0)), (-30.0, 0.8, (-5.0, 4.5))],
)
def test_warp_moves_landmarks_where_the_similarity_says(
    degrees: float, scale: float, shift: tuple[float, float]
) -> None:
    """Five landmark dots (eyes, nose, mouth corners, as in the 5-point template) land within
    half a pixel of ``c + scale * R (p - c) + shift``, and the warp passes gradients."""
    size = 64
    landmarks = np.array([[22.0, 26.0], [42.0, 26.0], [32.0, 36.0], [24.0, 46.0], [40.0, 46.0]])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    image = np.zeros((1, size, size, 1), np.float32)
    for x, y in landmarks:  # a small Gaussian dot per landmark, so bilinear resampling keeps it
        image[0, :, :, 0] += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.5**2)).astype(
            np.float32
        )
    angle = np.deg2rad(degrees)
    matrix = warp_matrix(tf.constant(angle, tf.float32), tf.constant(scale, tf.float32),
                         tf.constant(shift, tf.float32), size)  # fmt: skip
    source = tf.constant(image)
    with tf.GradientTape() as tape:
        tape.watch(source)
        warped = tf.raw_ops.ImageProjectiveTransformV3(
            images=source, transforms=matrix, output_shape=[size, size], fill_value=0.0,
            interpolation="BILINEAR", fill_mode="CONSTANT",
        )  # fmt: skip
        total = tf.reduce_sum(warped * warped)
    assert float(tf.reduce_max(tf.abs(tape.gradient(total, source)))) > 0
    out = warped.numpy()[0, :, :, 0]
    c = (size - 1) / 2
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    for point in landmarks:
        expected = c + scale * rotation @ (point - c) + np.array(shift)
        x0, y0 = np.round(expected).astype(int)
        window = out[y0 - 4 : y0 + 5, x0 - 4 : x0 + 5]
        wy, wx = np.mgrid[y0 - 4 : y0 + 5, x0 - 4 : x0 + 5]
        found = np.array([(window * wx).sum(), (window * wy).sum()]) / window.sum()
        assert np.linalg.norm(found - expected) < 0.5, (point, expected, found)


def test_warp_draws_differ_per_face_and_iteration_and_repeat_for_a_seed() -> None:
    x = tf.constant(np.repeat(faces()[0][:1], 2, axis=0))  # the same face twice
    t = _inputs(2, warp=1.0)
    a = transform_input(x, t, tf.constant(0)).numpy()
    assert np.abs(a[0] - a[1]).max() > 1e-3, "two faces drew the same warp"
    b = transform_input(x, t, tf.constant(1)).numpy()
    assert np.abs(a - b).max() > 1e-3, "two iterations drew the same warp"
    np.testing.assert_array_equal(a, transform_input(x, t, tf.constant(0)).numpy())


def _dropped(rate: float, seeds: list[int], step: int) -> np.ndarray:
    x = tf.ones([len(seeds), 6, 6, 4])
    with feature_dropout(tf.constant(rate), tf.constant(seeds, tf.int64), tf.constant(step)):
        return drop(x, "toy/site").numpy()


def test_dropout_draws_differ_per_face_and_iteration_and_repeat_for_a_seed() -> None:
    a = _dropped(0.3, [7, 8], 0)
    assert np.abs(a[0] - a[1]).max() > 0, "two faces drew the same mask"
    b = _dropped(0.3, [7, 8], 1)
    assert np.abs(a - b).max() > 0, "two iterations drew the same mask"
    np.testing.assert_array_equal(a, _dropped(0.3, [7, 8], 0))
    # a face's draw is its own: the same seed gives the same mask whichever face is beside it
    np.testing.assert_array_equal(a[0], _dropped(0.3, [7, 99], 0)[0])
    # inverted dropout: kept units scaled by 1 / (1 - rate), the rest zero, about rate dropped
    kept = _dropped(0.3, list(range(40)), 2)
    np.testing.assert_allclose(np.unique(kept), [0.0, 1 / 0.7], rtol=1e-6)
    assert abs(float(np.mean(kept == 0)) - 0.3) < 0.03


def test_dropout_sites_are_the_identity_outside_an_attack_and_at_rate_0() -> None:
    x = tf.constant(np.random.default_rng(0).normal(size=(2, 5, 5, 3)).astype(np.float32))
    assert drop(x, "toy/site") is x  # nothing added to the graph
    with feature_dropout(tf.constant(0.0), tf.constant([1, 2], tf.int64), tf.constant(0)):
        np.testing.assert_array_equal(drop(x, "toy/site").numpy(), x.numpy())


def test_skip_gradient_keeps_a_residual_branch_value_and_scales_only_its_gradient() -> None:
    x = tf.constant(np.random.default_rng(2).normal(size=(2, 4, 4, 3)), tf.float32)

    def through(site: str, gamma: float | None) -> tuple[np.ndarray, np.ndarray]:
        with tf.GradientTape() as tape:
            tape.watch(x)
            if gamma is None:
                y = drop(x, site)
            else:
                with skip_gradient(tf.constant(gamma)):
                    y = drop(x, site)
            total = tf.reduce_sum(y * y)
        return y.numpy(), tape.gradient(total, x).numpy()

    plain_value, plain_grad = through("facenet/Block35_1_ScaleResidual", None)
    value, grad = through("facenet/Block35_1_ScaleResidual", 0.25)
    np.testing.assert_array_equal(value, plain_value)  # forward: unchanged
    np.testing.assert_allclose(grad, 0.25 * plain_grad, rtol=1e-6)  # backward: gamma of it
    _, mobile = through("mobileface/stage_1", 0.5)
    np.testing.assert_allclose(mobile, 0.5 * plain_grad, rtol=1e-6)
    _, sface = through("sface/conv_7_relu", 0.25)  # not a residual branch: untouched
    np.testing.assert_array_equal(sface, plain_grad)


class Residual(ToyEmbedding):
    """The toy model with a residual unit whose branch is a FaceNet-named site."""

    def embed(self, images01: tf.Tensor, training: bool = False) -> tf.Tensor:
        h = tf.tanh(tf.nn.conv2d(self.preprocess(images01), self.k1, 2, "SAME"))
        h = h + drop(tf.tanh(h * 1.5), "facenet/toy_branch")
        h = tf.tanh(tf.nn.conv2d(h, self.k2, 2, "SAME"))
        h = tf.reshape(h, [tf.shape(h)[0], -1]) @ self.w
        return tf.math.l2_normalize(h, axis=1)


def test_an_attack_with_skip_gradient_repeats_and_differs_from_the_plain_one() -> None:
    model = Residual(seed=0)
    probes, references = faces()
    refs = [model.embed(r).numpy() for r in references]

    def run(gamma: float) -> np.ndarray:
        attack = make_attack(
            "pgd", "linf", epsilon=0.03, iterations=4, transfer=Transfer(skip_gradient=gamma)
        )
        return attack.attack(probes, make_loss("target", model, refs), seed=5).delta

    first = run(0.3)
    np.testing.assert_array_equal(first, run(0.3))
    assert np.abs(first - run(0.0)).max() > 0


def test_variance_neighbours_lie_within_the_radius_and_differ_per_face_and_draw() -> None:
    v = tf.zeros([2, 8, 8, 3])
    t = _inputs(2, variance=2)
    first = neighbour(v, t, neighbour_step(tf.constant(4), 0), tf.constant(0.1)).numpy()
    assert np.abs(first).max() <= 0.1 and np.abs(first).max() > 0.09  # uniform over the cube
    assert np.abs(first[0] - first[1]).max() > 0  # each face its own draw
    again = neighbour(v, t, neighbour_step(tf.constant(4), 0), tf.constant(0.1)).numpy()
    np.testing.assert_array_equal(first, again)  # the same seed, the same neighbour
    other = neighbour(v, t, neighbour_step(tf.constant(4), 1), tf.constant(0.1)).numpy()
    assert np.abs(first - other).max() > 0  # the next neighbour of the same iteration differs


def test_a_neighbours_draws_never_meet_an_iterations() -> None:
    # each iteration draws its transforms and dropout at its own (non-negative) number
    numbers = {
        int(neighbour_step(tf.constant(s), k)) for s in range(50) for k in range(MAX_VARIANCE)
    }
    assert len(numbers) == 50 * MAX_VARIANCE and max(numbers) < 0


def test_an_attack_with_variance_tuning_repeats_and_differs_per_seed() -> None:
    tuned = Transfer(variance=1)
    first = _attack(tuned, seed=3, norm="linf")
    np.testing.assert_array_equal(first, _attack(tuned, seed=3, norm="linf"))
    assert np.abs(first - _attack(tuned, seed=4, norm="linf")).max() > 0


def test_dropout_passes_gradients_through_the_kept_units() -> None:
    x = tf.ones([1, 6, 6, 4])
    with tf.GradientTape() as tape:
        tape.watch(x)
        with feature_dropout(tf.constant(0.5), tf.constant([3], tf.int64), tf.constant(0)):
            y = tf.reduce_sum(drop(x, "toy/site"))
    grad = tape.gradient(y, x).numpy()
    np.testing.assert_array_equal(grad, np.where(_dropped(0.5, [3], 0) > 0, 2, 0))


def test_eot_forward_pass_is_a_real_jpeg() -> None:
    """The forward pass sees 8-bit JPEG output: values on the 1/255 grid, unlike the resize alone."""
    x = tf.constant(faces()[0])
    y = transform_input(x, _inputs(len(x), eot=1.0), tf.constant(3)).numpy()
    np.testing.assert_allclose(y * 255, np.round(y * 255), atol=1e-3)


def test_transforms_off_return_the_input_exactly() -> None:
    x = tf.constant(faces()[0])
    np.testing.assert_array_equal(
        transform_input(x, _inputs(len(x)), tf.constant(0)).numpy(), x.numpy()
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"momentum": -0.1}, "momentum"),
        ({"momentum": 1.5}, "momentum"),
        ({"diversity": 2}, "diversity"),
        ({"eot": float("nan")}, "eot"),
        ({"ti_kernel": 4}, "ti_kernel"),
        ({"ti_kernel": 17}, "ti_kernel"),
        ({"ti_kernel": 1}, "ti_kernel"),
        ({"ti_kernel": True}, "ti_kernel"),
        ({"warp": -0.5}, "warp"),
        ({"warp": 1.01}, "warp"),
        ({"dropout": -0.1}, "dropout"),
        ({"dropout": 0.6}, "dropout"),
        ({"subset": -1}, "subset"),
        ({"subset": 8}, "subset"),
        ({"subset": 1.5}, "subset"),
        ({"subset": True}, "subset"),
        ({"feature_level": 1.5}, "feature_level"),
        ({"skip_gradient": 1.0}, "skip_gradient"),
        ({"skip_gradient": -0.2}, "skip_gradient"),
        ({"feature_level": -0.1}, "feature_level"),
        ({"variance": -1}, "variance"),
        ({"variance": 9}, "variance"),
        ({"variance": 1.5}, "variance"),
        ({"variance": True}, "variance"),
    ],
)
def test_bad_technique_settings_are_rejected_by_name(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Transfer(**kwargs)


# -- the ensemble ---------------------------------------------------------------------------------


def _toy_ensemble(*members: ToyEmbedding) -> tuple[Ensemble, np.ndarray, list[np.ndarray]]:
    """An ensemble of toy members, the probes and each probe's reference embeddings on it."""
    ens = Ensemble(list(members))
    probes, references = faces()
    return ens, probes, [ens.embed(r).numpy() for r in references]


def test_ensemble_distance_is_the_weighted_mean_of_member_distances() -> None:
    a, b = ToyEmbedding(seed=0), ToyEmbedding(seed=1)
    ens = Ensemble([a, b], weights=[3.0, 1.0])
    probes, references = faces()
    x, r = tf.constant(probes), tf.constant(references[:, 0])
    e = ens.embed(x).numpy()
    assert e.shape == (len(probes), 32)
    np.testing.assert_allclose(e[:, :16], a.embed(x).numpy(), atol=1e-6)
    u = ens.embed(x) - ens.embed(r)
    da = np.linalg.norm(a.embed(x).numpy() - a.embed(r).numpy(), axis=1)
    db = np.linalg.norm(b.embed(x).numpy() - b.embed(r).numpy(), axis=1)
    np.testing.assert_allclose(ens.distance(u).numpy(), 0.75 * da + 0.25 * db, rtol=1e-5)
    np.testing.assert_allclose(ens.distance_numpy(u.numpy()), 0.75 * da + 0.25 * db, rtol=1e-5)
    v = ens.normalise_numpy(np.arange(1, 33, dtype=np.float32))
    np.testing.assert_allclose([np.linalg.norm(p) for p in ens.split(v)], [1.0, 1.0], rtol=1e-6)


def test_ensemble_target_loss_is_the_weighted_sum_of_member_losses() -> None:
    a, b = ToyEmbedding(seed=0), ToyEmbedding(seed=1)
    ens = Ensemble([a, b], weights=[1.0, 2.0])
    probes, references = faces()
    refs = [np.concatenate([a.embed(r).numpy(), b.embed(r).numpy()], axis=1) for r in references]
    loss_ens, _ = make_loss("target", ens, refs).evaluate(probes)
    loss_a, _ = make_loss("target", a, [r[:, :16] for r in refs]).evaluate(probes)
    loss_b, _ = make_loss("target", b, [r[:, 16:] for r in refs]).evaluate(probes)
    np.testing.assert_allclose(loss_ens, (loss_a + 2 * loss_b) / 3, rtol=1e-5)


def test_attack_on_an_ensemble_moves_every_member() -> None:
    a, b = ToyEmbedding(seed=0), ToyEmbedding(seed=1)
    ens, probes, refs = _toy_ensemble(a, b)
    result = make_attack("pgd", "l2", **PGD_FAST).attack(
        probes, make_loss("target", ens, refs), seed=2
    )
    for member, part in ((a, slice(0, 16)), (b, slice(16, 32))):
        before, _ = make_loss("target", member, [r[:, part] for r in refs]).evaluate(probes)
        after, _ = make_loss("target", member, [r[:, part] for r in refs]).evaluate(
            probes + result.delta
        )
        assert np.all(after < before), f"the ensemble attack did not move member {member} away"


class Steep(ToyEmbedding):
    """The toy model with its input contrast raised: its gradients are much larger."""

    def preprocess(self, images01: tf.Tensor) -> tf.Tensor:
        return (images01 - 0.5) * 40.0


def _member_gradients(balance: bool) -> list[np.ndarray]:
    """The step's gradient, and its cosine with each member's own gradient, on (steep, toy)."""
    steep, toy = Steep(seed=0), ToyEmbedding(seed=1)
    ens, probes, refs = _toy_ensemble(steep, toy)
    loss = make_loss("target", ens, refs)
    x = tf.constant(probes)
    grad, _, _ = step_gradient(
        type(loss),
        ens,
        loss.inputs,
        balance,
        x,
        lambda v, step: (v, tf.constant(0.0)),
        tf.constant(0),
    )
    out = []
    for member, part in ((steep, slice(0, 16)), (toy, slice(16, 32))):
        own = make_loss("target", member, [r[:, part] for r in refs])
        g, _, _ = step_gradient(
            type(own),
            member,
            own.inputs,
            False,
            x,
            lambda v, step: (v, tf.constant(0.0)),
            tf.constant(0),
        )
        a, b = grad.numpy().reshape(len(probes), -1), g.numpy().reshape(len(probes), -1)
        out.append((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1))
    return out


def test_balance_gives_a_member_with_small_gradients_its_say() -> None:
    """Unbalanced, the steep member's gradient drowns the other's; balanced, both count."""
    steep_plain, toy_plain = _member_gradients(balance=False)
    steep_bal, toy_bal = _member_gradients(balance=True)
    gap_plain, gap_bal = (
        float(np.mean(steep_plain - toy_plain)),
        float(np.mean(steep_bal - toy_bal)),
    )
    assert gap_plain > 0.3, (steep_plain, toy_plain)
    assert float(np.mean(toy_bal)) > float(np.mean(toy_plain)) + 0.1, (toy_plain, toy_bal)
    assert gap_bal < 0.6 * gap_plain, (gap_plain, gap_bal)


def _chosen(subset: int, seeds: list[int], step: int, members: int = 4) -> np.ndarray:
    t = Transfer(subset=subset).inputs(np.array(seeds))
    return member_mask(t, tf.constant(step), members).numpy()


def test_subset_draws_k_members_per_face_fresh_each_iteration_and_repeats_for_a_seed() -> None:
    seeds = list(range(30))
    a = _chosen(2, seeds, 0)
    assert a.shape == (30, 4) and set(np.unique(a)) == {0.0, 1.0}
    np.testing.assert_array_equal(a.sum(1), 2)
    assert len({tuple(row) for row in a}) > 3, "faces drew the same members"
    b = _chosen(2, seeds, 1)
    assert np.any(a != b), "two iterations drew the same members"
    np.testing.assert_array_equal(a, _chosen(2, seeds, 0))
    # a face's draw is its own, whichever faces share the batch
    np.testing.assert_array_equal(a[5], _chosen(2, [5, 123], 0)[0])
    # over many iterations every member is drawn about as often
    counts = sum(_chosen(1, [7], step)[0] for step in range(200))
    assert counts.min() > 30, counts
    np.testing.assert_array_equal(_chosen(0, seeds, 0), 1.0)  # 0: all of them


def test_subset_takes_each_chosen_members_own_gradient_and_nothing_from_the_others() -> None:
    a, b = ToyEmbedding(seed=0), ToyEmbedding(seed=1)
    ens, probes, refs = _toy_ensemble(a, b)
    loss = make_loss("target", ens, refs)
    x = tf.constant(probes)
    view = lambda v, step: (v, tf.constant(0.0))  # noqa: E731
    n = len(probes)
    only_a = tf.constant(np.tile([[1.0, 0.0]], (n, 1)), tf.float32)
    both = tf.ones([n, 2])
    for balance in (False, True):
        grad_a, loss_a, _ = step_gradient(
            type(loss), ens, loss.inputs, balance, x, view, tf.constant(0), only_a
        )
        own = make_loss("target", a, [r[:, :16] for r in refs])
        g, _, _ = step_gradient(type(own), a, own.inputs, balance, x, view, tf.constant(0))
        # member a alone, at its share of the ensemble (a half)
        np.testing.assert_allclose(grad_a.numpy(), 0.5 * g.numpy(), rtol=1e-4, atol=1e-7)
        # the loss that picks the best iterate is still the whole ensemble's
        full, _, _ = step_gradient(
            type(loss), ens, loss.inputs, balance, x, view, tf.constant(0), both
        )
        np.testing.assert_allclose(loss_a.numpy(), loss.evaluate(probes)[0], rtol=1e-5)
        assert np.abs(full.numpy() - grad_a.numpy()).max() > 1e-6


def test_a_subset_attack_repeats_and_refuses_a_subset_as_large_as_the_ensemble() -> None:
    ens, probes, refs = _toy_ensemble(
        ToyEmbedding(seed=0), ToyEmbedding(seed=1), ToyEmbedding(seed=2)
    )
    attack = make_attack("pgd", "linf", epsilon=0.03, iterations=4, transfer=Transfer(subset=1))
    first = attack.attack(probes, make_loss("target", ens, refs), seed=5).delta
    again = attack.attack(probes, make_loss("target", ens, refs), seed=5).delta
    np.testing.assert_array_equal(first, again)
    whole = (
        make_attack("pgd", "linf", epsilon=0.03, iterations=4)
        .attack(probes, make_loss("target", ens, refs), seed=5)
        .delta
    )
    assert np.abs(first - whole).max() > 0
    too_many = make_attack("pgd", "linf", epsilon=0.03, iterations=4, transfer=Transfer(subset=3))
    with pytest.raises(ValueError, match="subset must be below the number of surrogates \\(3\\)"):
        too_many.attack(probes, make_loss("target", ens, refs), seed=5)


class Tapped(ToyEmbedding):
    """The toy model with its first feature map as a site named after the model."""

    def __init__(self, name: str, seed: int) -> None:
        super().__init__(seed)
        self.name = name

    def embed(self, images01: tf.Tensor, training: bool = False) -> tf.Tensor:
        h = tf.tanh(tf.nn.conv2d(self.preprocess(images01), self.k1, 2, "SAME"))
        h = tf.tanh(tf.nn.conv2d(drop(h, f"{self.name}/conv1"), self.k2, 2, "SAME"))
        h = tf.reshape(h, [tf.shape(h)[0], -1]) @ self.w
        return tf.math.l2_normalize(h, axis=1)


def _unit(g: np.ndarray) -> np.ndarray:
    return g / np.abs(g).mean(axis=(1, 2, 3), keepdims=True)


def test_feature_level_gives_that_share_of_a_surrogates_step_to_its_features(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(augment, "_TAPPED_SITES", frozenset({"toya/conv1"}))  # b has no site
    a, b = Tapped("toya", 0), Tapped("toyb", 1)
    ens, probes, refs = _toy_ensemble(a, b)
    loss = make_loss("target", ens, refs)
    x = tf.constant(probes)
    change = tf.constant(np.random.default_rng(0).normal(0, 0.02, probes.shape), tf.float32)
    view = lambda v, step: (x + v, tf.constant(0.0))  # noqa: E731
    n = len(probes)

    def step(feature: float | None, chosen: np.ndarray | None = None) -> np.ndarray:
        g, _, _ = step_gradient(
            type(loss),
            ens,
            loss.inputs,
            True,
            change,
            view,
            tf.constant(0),
            None if chosen is None else tf.constant(chosen, tf.float32),
            None if feature is None else tf.constant(feature),
        )
        return g.numpy()

    np.testing.assert_allclose(step(0.0), step(None), rtol=1e-5, atol=1e-7)  # 0: balance alone
    with tf.GradientTape() as tape:
        tape.watch(change)
        with feature_taps() as clean:
            a.embed(x)
        with feature_taps() as moved:
            a.embed(x + change)
        disruption = feature_disruption(moved["toya"], clean["toya"])
        total = -tf.reduce_sum(disruption)
    assert disruption.shape == (n,) and np.all(disruption.numpy() > 0)
    own_features = _unit(tape.gradient(total, change).numpy())
    b_alone = step(None, np.tile([[0.0, 1.0]], (n, 1)))  # b's normalised step, at its share
    # all of a's say goes to its features; b, without a site, keeps its embedding step
    np.testing.assert_allclose(step(1.0), 0.5 * own_features + b_alone, rtol=1e-3, atol=1e-5)
    half = step(0.5)
    a_alone = step(None, np.tile([[1.0, 0.0]], (n, 1)))
    np.testing.assert_allclose(
        half, 0.5 * a_alone + 0.25 * own_features + b_alone, rtol=1e-3, atol=1e-5
    )


def test_feature_disruption_is_zero_without_change_and_its_gradient_finite() -> None:
    clean = tf.constant(np.random.default_rng(1).normal(size=(2, 4, 4, 3)), tf.float32)
    with tf.GradientTape() as tape:
        moved = tf.identity(clean)
        tape.watch(moved)
        d = feature_disruption(moved, clean)
    np.testing.assert_allclose(d.numpy(), 0.0, atol=1e-6)
    assert np.all(np.isfinite(tape.gradient(d, moved).numpy()))
    double = feature_disruption(clean * 2.0, clean).numpy()
    np.testing.assert_allclose(double, 1.0, rtol=1e-5)  # relative to the clean map's size


def test_a_feature_level_attack_repeats_and_needs_balance(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(augment, "_TAPPED_SITES", frozenset({"toya/conv1", "toyb/conv1"}))
    ens, probes, refs = _toy_ensemble(Tapped("toya", 0), Tapped("toyb", 1))

    def run(feature: float, balance: bool = True) -> np.ndarray:
        attack = make_attack(
            "pgd",
            "linf",
            epsilon=0.03,
            iterations=4,
            balance=balance,
            transfer=Transfer(feature_level=feature),
        )
        return attack.attack(probes, make_loss("target", ens, refs), seed=5).delta

    first = run(0.5)
    np.testing.assert_array_equal(first, run(0.5))
    assert np.abs(first - run(0.0)).max() > 0
    with pytest.raises(ValueError, match="feature_level needs balance"):
        run(0.5, balance=False)


def test_balance_off_is_the_plain_gradient_and_on_a_single_model_its_direction() -> None:
    probes, _ = faces()
    loss = loss_for("target", False)
    x = tf.constant(probes)
    view = lambda v, step: (v, tf.constant(0.0))  # noqa: E731
    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(loss.evaluate_graph(loss.model, x, loss.inputs)[0])
    plain = tape.gradient(total, x).numpy()
    off, _, _ = step_gradient(type(loss), loss.model, loss.inputs, False, x, view, tf.constant(0))
    on, _, _ = step_gradient(type(loss), loss.model, loss.inputs, True, x, view, tf.constant(0))
    np.testing.assert_allclose(off.numpy(), plain, rtol=1e-5, atol=1e-8)
    scale = np.abs(plain).mean(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(on.numpy(), plain / scale, rtol=1e-4, atol=1e-6)


def test_a_member_past_its_hinge_margin_stops_pulling() -> None:
    """Balanced, the hinge is per member: once one member ranks another identity nearer by
    kappa, its objective is 0 and its gradient is 0, while the other member still pulls."""
    a, b = ToyEmbedding(seed=0), ToyEmbedding(seed=1)
    ens = Ensemble([a, b])
    probes, references = faces()
    e = np.stack([ens.embed(r).numpy() for r in references])  # (I, R, 32)
    # For member a, probe 0's own identity is swapped with identity 1's: a already ranks
    # another identity (its true one, now "other") far nearer than its "own" references.
    own = e[0].copy()
    own[:, :16] = e[1][:, :16]
    others = [[e[j] for j in range(1, IDENTITIES)]]
    loss = HingeLoss(ens, [own], others, kappa=0.05)
    x = tf.constant(probes[:1])
    objectives, _, _ = HingeLoss.member_objectives(ens, x, loss.inputs)
    assert float(objectives[0][0]) == 0.0 and float(objectives[1][0]) > 0.0
    with tf.GradientTape() as tape:
        tape.watch(x)
        objectives, _, _ = HingeLoss.member_objectives(ens, x, loss.inputs)
        first = tf.reduce_sum(objectives[0])
    assert not np.any(tape.gradient(first, x, unconnected_gradients="zero").numpy())
    grad, _, _ = step_gradient(
        HingeLoss, ens, loss.inputs, True, x, lambda v, step: (v, tf.constant(0.0)), tf.constant(0)
    )
    assert float(tf.reduce_max(tf.abs(grad))) > 0, "the member still inside its margin pulls"


def test_each_member_objective_runs_back_through_its_own_member_only() -> None:
    """Balanced steps differentiate each member's objective on its own: through the work-size
    wrapper, objective k is connected to member k's weights only (a slice of the concatenated
    embedding would carry zeros back through every other member, doubling the step's time),
    and the objectives are those of the concatenated embedding's segments."""
    a, b = ToyEmbedding(seed=0), ToyEmbedding(seed=1)
    wrapped = Resized(Ensemble([a, b]), 2 * a.input_size)
    probes, references = faces()
    big = tf.image.resize(tf.constant(probes), [wrapped.input_size] * 2)
    e = np.stack(
        [wrapped.embed(tf.image.resize(r, [wrapped.input_size] * 2)).numpy() for r in references]
    )
    loss = HingeLoss(wrapped, [e[0]], [[e[j] for j in range(1, IDENTITIES)]], kappa=0.05)
    x = big[:1]
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([a.w, b.w])
        objectives, _, _ = HingeLoss.member_objectives(wrapped, x, loss.inputs)
        totals = [tf.reduce_sum(o) for o in objectives]
    assert len(objectives) == 2
    assert tape.gradient(totals[0], b.w) is None and tape.gradient(totals[1], a.w) is None
    assert tape.gradient(totals[0], a.w) is not None and tape.gradient(totals[1], b.w) is not None
    joined = wrapped.embed_aligned(x, loss.inputs.align)
    for (lo, hi), objective in zip(wrapped.segments, objectives):
        mean, _, present = set_distances(
            joined[:, lo:hi], loss.inputs.references[..., lo:hi], loss.inputs.mask
        )
        np.testing.assert_allclose(
            objective.numpy(), HingeLoss._objective(mean, present, loss.inputs).numpy(), rtol=1e-6
        )


@pytest.mark.parametrize(
    ("members", "weights", "message"),
    [
        (1, None, "at least two"),
        (2, [1.0], "one finite number"),
        (2, [1.0, 0.0], "one finite number"),
    ],
)
def test_bad_ensembles_are_rejected(
    members: int, weights: list[float] | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Ensemble([ToyEmbedding(seed=i) for i in range(members)], weights)


# -- adaptive amplification -------------------------------------------------------------------------


class PixelRecognizer(EmbeddingRecognizer):
    """Embeds the context crop's pixels: the distance to the clean crop grows with alpha."""

    name = "pixels"
    metric = "euclidean"
    confidence_scale = 1.0
    detector_name = "none"

    def __init__(self, threshold: float, blind_above: float | None = None) -> None:
        super().__init__()
        self.distance_threshold = threshold
        self.blind_above = (
            blind_above  # finds no face once pixels change by more than this (mean abs)
        )
        self.clean: np.ndarray | None = None

    def _load(self) -> None:
        pass

    def _embed(self, photo: Photo) -> np.ndarray | None:
        pixels = photo.pixels.astype(np.float32) / 255.0
        if self.clean is None:
            self.clean = pixels
        if self.blind_above is not None and np.abs(pixels - self.clean).mean() > self.blind_above:
            return None
        return pixels.ravel()


def _scene() -> tuple[np.ndarray, tuple[float, float, float, float], Any, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    pixels = (rng.uniform(0.3, 0.7, (120, 120, 3)) * 255).astype(np.uint8)
    box = (40.0, 40.0, 40.0, 40.0)
    region = crop_region(box, 120, 120, 0.1)
    crop = extract_crop(pixels, region, 32)
    delta = rng.uniform(-0.03, 0.03, crop.shape).astype(np.float32)
    return pixels, box, region, crop, delta


def _distance_at(alpha: float) -> float:
    pixels, box, region, crop, delta = _scene()
    face = adaptive._Face(pixels, box, region, crop, delta)
    return float(
        np.linalg.norm(
            face.protected(alpha).astype(np.float64) / 255 - face.clean.astype(np.float64) / 255
        )
    )


def _choose(
    rec: EmbeddingRecognizer, alpha_max: float = 6.0, floor: float = 20.0
) -> adaptive.Choice:
    pixels, box, region, crop, delta = _scene()
    (choice,) = adaptive.choose_alphas(
        pixels, [box], [region], crop[None], delta[None], {"pixels": rec}, alpha_max, floor
    )
    return choice


def test_adaptive_alpha_is_the_smallest_that_stops_the_match() -> None:
    threshold = _distance_at(2.5)
    choice = _choose(PixelRecognizer(threshold))
    assert 1.0 < choice.alpha < 6.0
    assert _distance_at(choice.alpha) > threshold, "the chosen alpha still matches"
    step = 5.0 / 2**adaptive.BISECTION_STEPS
    assert _distance_at(choice.alpha - step) <= threshold + 1e-9 or choice.alpha - step < 1, (
        "not the smallest"
    )
    assert choice.verdicts[0].recognizer == "pixels" and not choice.verdicts[0].matched


def test_adaptive_alpha_is_one_when_the_face_never_matched() -> None:
    assert _choose(PixelRecognizer(threshold=_distance_at(1.0) * 0.5)).alpha == 1.0


def test_adaptive_alpha_stops_at_the_psnr_floor_and_says_it_still_matches() -> None:
    pixels, box, region, crop, delta = _scene()
    face = adaptive._Face(pixels, box, region, crop, delta)
    floor = face.psnr(3.0)
    choice = _choose(PixelRecognizer(threshold=1e9), alpha_max=6.0, floor=floor)
    assert choice.alpha <= 3.05 and face.psnr(choice.alpha) >= floor
    assert choice.verdicts[0].matched


def test_a_face_the_recogniser_cannot_find_does_not_match() -> None:
    choice = _choose(PixelRecognizer(threshold=1e9, blind_above=0.02))
    assert not choice.verdicts[0].matched and choice.verdicts[0].distance is None


def test_reference_photos_replace_the_clean_face() -> None:
    """With reference photos, the check is against them: a reference far from everything never matches."""
    pixels, box, region, crop, delta = _scene()
    rec = PixelRecognizer(threshold=_distance_at(2.5))
    reference = Photo(
        pixels=np.zeros((80, 80, 3), np.uint8), format="PNG", full_width=80, full_height=80
    )
    rec.clean = None
    (choice,) = adaptive.choose_alphas(
        pixels,
        [box],
        [region],
        crop[None],
        delta[None],
        {"pixels": rec},
        6.0,
        20.0,
        references=[reference],
    )
    assert choice.alpha == 1.0 and not choice.verdicts[0].matched


# -- options --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"momentum": 1.2}, "momentum"),
        ({"ti_kernel": 6}, "ti_kernel"),
        ({"attack": "cw", "momentum": 0.5}, "PGD techniques"),
        ({"surrogates": ("vgg",)}, "surrogates"),
        ({"surrogates": ("facenet", "facenet")}, "surrogates"),
        (
            {"surrogates": ("facenet", "facenet512"), "surrogate_weights": (1.0,)},
            "one weight per surrogate",
        ),
        ({"surrogates": ("facenet", "facenet512"), "surrogate_weights": (1.0, -1.0)}, "> 0"),
        ({"loop_recognizers": ("rekognition",)}, "loop_recognizers"),
        ({"loop_recognizers": ("dlib",)}, "dlib is an independent judge"),
        ({"loop_recognizers": "mobilefacenet"}, "mobilefacenet is an independent judge"),
        ({"surrogates": ("facenet", "dlib")}, "dlib is an independent judge"),
        ({"adaptive_alpha": True, "loop_recognizers": ()}, "at least one loop recogniser"),
        ({"adaptive_alpha": True, "alpha": 0.5}, ">= 1"),
        ({"psnr_floor": 5.0}, "psnr_floor"),
        ({"warp": 1.5}, "warp"),
        ({"warp": -0.1}, "warp"),
        ({"balance": "yes"}, "balance"),
        ({"attack": "cw", "balance": True}, "PGD techniques"),
        ({"attack": "cw", "warp": 0.5}, "PGD techniques"),
        ({"dropout": 0.51}, "dropout"),
        (
            {"surrogates": "facenet,mobileface", "align": False},
            "mobileface knows faces only when each is aligned",
        ),
        ({"dropout": -0.01}, "dropout"),
        ({"attack": "cw", "dropout": 0.2}, "PGD techniques"),
        ({"surrogate_subset": 3}, "fewer than the surrogates \\(3: facenet, sface, faceres\\)"),
        ({"surrogate_subset": 9}, "surrogate_subset"),
        ({"attack": "cw", "surrogate_subset": 1}, "PGD techniques"),
        ({"feature_level": 0.5, "balance": False}, "feature_level splits .* balance is off"),
        ({"feature_level": 1.1, "balance": True}, "feature_level"),
        ({"attack": "cw", "feature_level": 0.5}, "PGD techniques"),
        ({"skip_gradient": 1.0}, "skip_gradient"),
        ({"attack": "cw", "skip_gradient": 0.5}, "PGD techniques"),
        ({"variance": 9}, "variance"),
        ({"attack": "cw", "variance": 1}, "PGD techniques"),
    ],
)
def test_bad_transfer_options_are_refused_by_name(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidOption, match=message):
        resolve("medium", **overrides)


def test_transfer_options_reach_the_attack_and_split_batches() -> None:
    plain = resolve("medium", momentum=0.0, diversity=0.0, ti_kernel=0, eot=0.0)
    o = resolve(
        "medium",
        momentum=0.9,
        diversity=0.5,
        ti_kernel=5,
        eot=0.25,
        warp=0.0,
        surrogates="facenet,facenet512",
    )
    assert o.surrogates == ("facenet", "facenet512")
    assert o.attack_params()["transfer"] == Transfer(0.9, 0.5, 5, 0.25)
    assert resolve("medium", surrogates="sface,mobileface", align=True).surrogates == (
        "sface",
        "mobileface",
    )
    balanced = resolve("medium", warp=0.5, balance=True, dropout=0.3)
    assert balanced.attack_params()["transfer"].warp == 0.5
    assert balanced.attack_params()["transfer"].dropout == 0.3
    assert balanced.attack_params()["balance"] is True
    assert balanced.batch_key() != resolve("medium").batch_key()
    subset = resolve("medium", surrogates="facenet,sface,faceres", surrogate_subset=2)
    assert subset.attack_params()["transfer"].subset == 2
    assert subset.batch_key() != resolve("medium", surrogates="facenet,sface,faceres").batch_key()
    features = resolve("medium", balance=True, feature_level=0.4)
    assert features.attack_params()["transfer"].feature_level == 0.4
    assert features.batch_key() != resolve("medium", balance=True).batch_key()
    assert o.batch_key() != plain.batch_key()
    assert dataclasses.replace(o, alpha=4.0).batch_key() == o.batch_key()
    assert dataclasses.replace(o, adaptive_alpha=True).batch_key() == o.batch_key()


def test_profiles_use_the_techniques_but_cw_drops_them() -> None:
    medium = resolve("medium")
    assert medium.attack_params()["transfer"].active and len(medium.surrogates) >= 2
    cw = resolve("medium", attack="cw")
    assert (cw.momentum, cw.diversity, cw.ti_kernel, cw.eot) == (0, 0, 0, 0), (
        "CW takes none of PGD's techniques"
    )
    with pytest.raises(InvalidOption, match="PGD techniques"):
        resolve("medium", attack="cw", momentum=0.5)  # asked for explicitly: refused, not dropped
