"""Unit tests of the Face-Off losses and attacks, on a tiny deterministic embedding model.

Every registered attack (PGD and CW, each in L2 and Linf) runs with every registered loss (target,
hinge) in both modes (untargeted, targeted). The model is a two-layer conv net with fixed random
weights on 32x32 inputs, and the "identities" are smooth random images plus pixel noise, so each
attack runs in well under a second.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

from faceoff.faces.models.augment import drop
from faceoff.faces.models.base import EmbeddingModel
from faceoff.masker.attacks import (
    ATTACKS,
    CWL2,
    LOSSES,
    PGDL2,
    AttackResult,
    CWLinf,
    HingeLoss,
    PGDLinf,
    TargetLoss,
    make_attack,
    make_loss,
)
from faceoff.masker.attacks.losses import set_distances
from faceoff.masker.attacks.pgd import Switches

SIZE = 32
IDENTITIES = 5
REFERENCES = 4


class ToyEmbedding(EmbeddingModel):
    """conv(3x3, 8, stride 2) -> tanh -> conv(3x3, 16, stride 2) -> tanh -> dense(16) -> L2 norm.

    The first feature map is a dropout site (:mod:`faceoff.faces.models.augment`), as in the
    real surrogates."""

    name = "toy"

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.k1 = tf.constant(rng.normal(0, np.sqrt(2 / 27), (3, 3, 3, 8)), tf.float32)
        self.k2 = tf.constant(rng.normal(0, np.sqrt(2 / 72), (3, 3, 8, 16)), tf.float32)
        self.w = tf.constant(rng.normal(0, np.sqrt(1 / 1024), (1024, 16)), tf.float32)

    @property
    def input_size(self) -> int:
        return SIZE

    @property
    def embedding_dim(self) -> int:
        return 16

    def preprocess(self, images01: tf.Tensor) -> tf.Tensor:
        return images01 * 2.0 - 1.0

    def embed(self, images01: tf.Tensor, training: bool = False) -> tf.Tensor:
        h = tf.tanh(tf.nn.conv2d(self.preprocess(images01), self.k1, 2, "SAME"))
        h = tf.tanh(tf.nn.conv2d(drop(h, "toy/conv1"), self.k2, 2, "SAME"))
        h = tf.reshape(h, [tf.shape(h)[0], -1]) @ self.w
        return tf.math.l2_normalize(h, axis=1)


class NaNForFirstFace(ToyEmbedding):
    """The toy model, but the first face of every batch embeds to NaN (a broken surrogate)."""

    def embed(self, images01: tf.Tensor, training: bool = False) -> tf.Tensor:
        e = super().embed(images01, training)
        first = tf.one_hot(0, tf.shape(e)[0], on_value=True, off_value=False)
        return tf.where(first[:, None], tf.fill(tf.shape(e), np.float32(np.nan)), e)


@functools.cache
def model() -> ToyEmbedding:
    return ToyEmbedding()


@functools.cache
def faces() -> tuple[np.ndarray, np.ndarray]:
    """``(probes (I, S, S, 3), references (I, R, S, S, 3))``: a probe and R photos per identity."""
    rng = np.random.default_rng(1)
    low = rng.uniform(0.15, 0.85, (IDENTITIES, 8, 8, 3))
    base = np.clip(tf.image.resize(low, (SIZE, SIZE), "bicubic").numpy(), 0, 1)
    noise = rng.normal(0, 0.02, (IDENTITIES, REFERENCES, SIZE, SIZE, 3))
    references = np.clip(base[:, None] + noise, 0, 1).astype(np.float32)
    probes = np.clip(base + rng.normal(0, 0.02, base.shape), 0, 1).astype(np.float32)
    return probes, references


@functools.cache
def embeddings() -> np.ndarray:
    """``(I, R, D)`` reference embeddings."""
    _, references = faces()
    return np.stack([model().embed(r).numpy() for r in references])


def loss_for(
    name: str,
    targeted: bool,
    picked: list[int] | None = None,
    on: ToyEmbedding | None = None,
    **params: Any,
):
    """Loss for all probes (or the ``picked`` ones): anchor = own identity (untargeted) or the
    next one (targeted); others = every remaining identity, so success is decided by the nearest
    centroid. ``on``: the model the loss runs (default: the shared toy model)."""
    e = embeddings()
    probes = range(IDENTITIES) if picked is None else picked
    anchor = [(i + 1) % IDENTITIES if targeted else i for i in probes]
    references = [e[a] for a in anchor]
    others = [[e[j] for j in range(IDENTITIES) if j != a] for a in anchor]
    if name == "hinge":
        params.setdefault("kappa", 0.05)
    return make_loss(name, on or model(), references, others, targeted=targeted, **params)


#: Fast settings for the toy model (a 32x32x3 crop has 3072 values: L2 2.0 ~ 0.036 per value).
FAST: dict[tuple[str, str], dict[str, Any]] = {
    ("pgd", "l2"): {"epsilon": 2.0, "step_size": 0.3, "iterations": 10},
    ("pgd", "linf"): {"epsilon": 0.05, "step_size": 0.01, "iterations": 10},
    ("cw", "l2"): {"iterations": 20, "search_steps": 3},
    ("cw", "linf"): {"iterations": 20, "search_steps": 3},
}
ATTACK_KEYS = [(name, norm) for name in ATTACKS for norm in ATTACKS[name]]
CASES = list(itertools.product(ATTACK_KEYS, LOSSES, [False, True]))
CASE_IDS = [f"{a}-{n}-{loss}-{'targeted' if t else 'untargeted'}" for (a, n), loss, t in CASES]


@functools.cache
def run_case(
    attack: tuple[str, str], loss_name: str, targeted: bool, seed: int = 3
) -> AttackResult:
    probes, _ = faces()
    return make_attack(*attack, **FAST[attack]).attack(
        probes, loss_for(loss_name, targeted), seed=seed
    )


def test_registry_covers_every_attack_and_loss() -> None:
    expected = {("pgd", "l2"), ("pgd", "linf"), ("cw", "l2"), ("cw", "linf")}
    assert set(FAST) == set(ATTACK_KEYS) == expected
    assert set(LOSSES) == {"target", "hinge"}


def test_toy_identities_are_recognised_before_any_attack() -> None:
    # Otherwise "success" below would mean nothing.
    for targeted in (False, True):
        _, success = loss_for("target", targeted).evaluate(faces()[0])
        assert not success.any()


@pytest.mark.parametrize(("attack", "loss_name", "targeted"), CASES, ids=CASE_IDS)
def test_result_is_a_usable_perturbation(
    attack: tuple[str, str], loss_name: str, targeted: bool
) -> None:
    probes, _ = faces()
    result = run_case(attack, loss_name, targeted)
    assert result.delta.shape == probes.shape and result.delta.dtype == np.float32
    assert result.success.shape == (IDENTITIES,) and result.success.dtype == bool
    assert result.loss.shape == (IDENTITIES,)
    assert np.all(np.isfinite(result.delta)) and np.all(np.isfinite(result.loss))
    assert np.all(np.any(result.delta != 0, axis=(1, 2, 3))), "a face got an all-zero delta"
    adversarial = probes + result.delta
    assert adversarial.min() >= 0.0 and adversarial.max() <= 1.0
    assert result.iterations_run > 0


@pytest.mark.parametrize(("attack", "loss_name", "targeted"), CASES, ids=CASE_IDS)
def test_attack_lowers_the_loss_and_succeeds_on_most_faces(
    attack: tuple[str, str], loss_name: str, targeted: bool
) -> None:
    probes, _ = faces()
    result = run_case(attack, loss_name, targeted)
    clean_loss, _ = loss_for(loss_name, targeted).evaluate(probes)
    assert np.all(result.loss < clean_loss)
    assert result.success.mean() >= 0.8
    # The reported flags are those of the returned perturbation.
    loss, success = loss_for(loss_name, targeted).evaluate(probes + result.delta)
    np.testing.assert_array_equal(success, result.success)
    np.testing.assert_allclose(loss, result.loss, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("loss_name", list(LOSSES))
@pytest.mark.parametrize("targeted", [False, True])
@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_pgd_stays_within_epsilon_in_its_own_norm(
    norm: str, loss_name: str, targeted: bool
) -> None:
    delta = run_case(("pgd", norm), loss_name, targeted).delta
    epsilon = FAST[("pgd", norm)]["epsilon"]
    if norm == "l2":
        assert np.sqrt(np.sum(delta.astype(np.float64) ** 2, axis=(1, 2, 3))).max() <= epsilon
    else:
        assert np.abs(delta.astype(np.float64)).max() <= epsilon


def test_pgd_l2_is_not_a_sign_attack() -> None:
    # The paper's code passes the norm under the wrong name, so its "L2 PGD" takes Linf sign steps.
    # One step of size epsilon from (almost) zero: a sign step puts every value at +-epsilon, so
    # ||delta||_2 / ||delta||_inf = sqrt(d); an L2 step follows the gradient's uneven shape.
    probes, _ = faces()
    loss = loss_for("target", False)
    d = probes[0].size
    l2_attack = PGDL2(epsilon=1.0, step_size=1.0, iterations=1, random_start=False)
    linf_attack = PGDLinf(epsilon=0.02, step_size=0.02, iterations=1, random_start=False)
    l2_delta = l2_attack.attack(probes, loss).delta.astype(np.float64)
    linf_delta = linf_attack.attack(probes, loss).delta.astype(np.float64)

    def flatness(delta: np.ndarray) -> np.ndarray:
        l2 = np.sqrt(np.sum(delta**2, axis=(1, 2, 3)))
        return l2 / np.abs(delta).max(axis=(1, 2, 3)) / np.sqrt(d)

    assert np.all(flatness(l2_delta) < 0.6)
    assert np.all(flatness(linf_delta) > 0.95)
    # Sign-step values sit within 2% of +-epsilon; the L2 step's values mostly do not.
    at_bound = np.abs(np.abs(l2_delta) - np.abs(l2_delta).max(axis=(1, 2, 3), keepdims=True))
    assert np.mean(at_bound < 0.02 * np.abs(l2_delta).max()) < 0.1
    assert np.mean(np.abs(np.abs(linf_delta) - 0.02) < 0.02 * 0.02) > 0.95
    # And each stays in its own ball.
    assert np.sqrt(np.sum(l2_delta**2, axis=(1, 2, 3))).max() <= 1.0
    assert np.abs(linf_delta).max() <= 0.02


@pytest.mark.parametrize("attack", ATTACK_KEYS, ids=["-".join(k) for k in ATTACK_KEYS])
def test_same_seed_gives_the_same_delta(attack: tuple[str, str]) -> None:
    probes, _ = faces()
    first = run_case(attack, "hinge", False)
    again = make_attack(*attack, **FAST[attack]).attack(probes, loss_for("hinge", False), seed=3)
    other = make_attack(*attack, **FAST[attack]).attack(probes, loss_for("hinge", False), seed=4)
    np.testing.assert_array_equal(again.delta, first.delta)
    np.testing.assert_array_equal(again.success, first.success)
    assert not np.array_equal(other.delta, first.delta)


def test_probe_among_its_references_has_a_finite_nonzero_gradient() -> None:
    probes, _ = faces()
    probe = probes[:1]
    own = model().embed(probe).numpy()
    with_others = np.concatenate([own, embeddings()[0]])  # the probe itself + 4 more photos
    for references in (with_others, own):
        loss = TargetLoss(model(), [references])
        x = tf.constant(probe)
        with tf.GradientTape() as tape:
            tape.watch(x)
            value, _ = TargetLoss.evaluate_graph(model(), x, loss.inputs)
        grad = tape.gradient(value, x).numpy()
        assert np.all(np.isfinite(grad))
        if references is with_others:
            assert np.abs(grad).max() > 0
    # With the probe as its only reference the gradient at delta = 0 is 0 (a distance minimum);
    # the random start moves off it, so the attack still pushes the face away.
    loss = TargetLoss(model(), [own])
    for attack in (
        PGDL2(epsilon=1.0, step_size=0.2, iterations=5, random_start=False),
        CWL2(iterations=10, search_steps=1),
    ):
        result = attack.attack(probe, loss)
        assert np.any(result.delta != 0)
        assert loss.anchor_distance(probe + result.delta)[0] > loss.anchor_distance(probe)[0] + 0.05


@pytest.mark.parametrize("attack", ATTACK_KEYS, ids=["-".join(k) for k in ATTACK_KEYS])
def test_batch_with_ragged_reference_sets(attack: tuple[str, str]) -> None:
    probes, _ = faces()
    e = embeddings()
    references = [e[0][:1], e[1][:3], e[2], e[3][:2]]
    others = [[e[4][:2], e[3]], [], [e[0][:1]], [e[1], e[2][:3], e[4]]]
    params = {**FAST[attack], "iterations": 3}
    if attack[0] == "cw":
        params["search_steps"] = 1
    loss = HingeLoss(model(), references, others, kappa=0.05)
    result = make_attack(*attack, **params).attack(probes[:4], loss, seed=0)
    assert result.delta.shape == probes[:4].shape and np.all(np.isfinite(result.delta))
    # Padding does not change any face's loss: each face alone gives the same value.
    batch_loss, batch_success = loss.evaluate(probes[:4] + result.delta)
    for i in range(4):
        alone = HingeLoss(model(), [references[i]], [others[i]], kappa=0.05)
        loss_i, success_i = alone.evaluate(probes[i : i + 1] + result.delta[i : i + 1])
        np.testing.assert_allclose(loss_i[0], batch_loss[i], rtol=1e-5, atol=1e-6)
        assert success_i[0] == batch_success[i]


def test_losses_match_their_formulas() -> None:
    probes, _ = faces()
    e = embeddings()
    f = model().embed(probes).numpy()
    kappa = 0.3

    def mean_distance(i: int, j: int) -> float:
        return float(np.linalg.norm(e[j] - f[i], axis=1).mean())

    for targeted in (False, True):
        target, _ = loss_for("target", targeted).evaluate(probes)
        hinge, _ = loss_for("hinge", targeted, kappa=kappa).evaluate(probes)
        for i in range(IDENTITIES):
            anchor = (i + 1) % IDENTITIES if targeted else i
            d_anchor = mean_distance(i, anchor)
            nearest_other = min(mean_distance(i, j) for j in range(IDENTITIES) if j != anchor)
            expected_target = d_anchor if targeted else -d_anchor
            gap = d_anchor - nearest_other if targeted else nearest_other - d_anchor
            assert target[i] == pytest.approx(expected_target, abs=1e-5)
            assert hinge[i] == pytest.approx(max(gap + kappa, 0.0), abs=1e-5)


def test_hinge_without_other_identities_falls_back_to_the_target_loss() -> None:
    probes, _ = faces()
    own = list(embeddings())
    for targeted in (False, True):
        hinge, _ = HingeLoss(model(), own, targeted=targeted).evaluate(probes)
        target, _ = TargetLoss(model(), own, targeted=targeted).evaluate(probes)
        np.testing.assert_allclose(hinge, target, rtol=1e-6)


def test_success_without_other_identities_uses_the_threshold() -> None:
    probes, _ = faces()
    own = list(embeddings())
    distance = TargetLoss(model(), own).anchor_distance(probes)
    assert np.all(distance > 0.01) and np.all(distance < 0.5)
    _, low = TargetLoss(model(), own, threshold=0.01).evaluate(probes)
    _, high = TargetLoss(model(), own, threshold=0.5).evaluate(probes)
    assert low.all() and not high.any()
    _, targeted_low = TargetLoss(model(), own, targeted=True, threshold=0.01).evaluate(probes)
    _, targeted_high = TargetLoss(model(), own, targeted=True, threshold=0.5).evaluate(probes)
    assert not targeted_low.any() and targeted_high.all()


def test_set_distances_mean_centroid_and_padding() -> None:
    embedding = tf.constant([[1.0, 0.0]])
    references = tf.constant([[[[0.0, 0.0], [2.0, 0.0], [9.0, 9.0]]]])  # the last one is padding
    mask = tf.constant([[[1.0, 1.0, 0.0]]])
    mean, centroid, present = set_distances(embedding, references, mask)
    assert mean.numpy()[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert centroid.numpy()[0, 0] == pytest.approx(0.0, abs=1e-5)
    assert present.numpy()[0, 0]


@pytest.mark.parametrize("attack", ATTACK_KEYS, ids=["-".join(k) for k in ATTACK_KEYS])
def test_broken_model_and_extreme_images_still_give_finite_nonzero_deltas(
    attack: tuple[str, str],
) -> None:
    probes, _ = faces()
    images = probes[:3].copy()
    images[1] = 0.0  # black
    images[2] = 1.0  # white
    params = {**FAST[attack], "iterations": 3}
    if attack[0] == "cw":
        params["search_steps"] = 1
    broken = NaNForFirstFace()
    loss = TargetLoss(broken, list(embeddings()[:3]))
    result = make_attack(*attack, **params).attack(images, loss, seed=0)
    assert np.all(np.isfinite(result.delta))
    assert np.all(np.any(result.delta != 0, axis=(1, 2, 3)))
    assert (images + result.delta).min() >= 0.0 and (images + result.delta).max() <= 1.0
    assert not result.success[0]


def test_progress_is_reported_between_chunks() -> None:
    probes, _ = faces()
    calls: list[tuple[int, int]] = []
    PGDL2(epsilon=1.0, step_size=0.2, iterations=25).attack(
        probes, loss_for("target", False), progress=lambda i, n: calls.append((i, n))
    )
    assert calls == [(10, 25), (20, 25), (25, 25)]
    calls.clear()
    CWL2(iterations=12, search_steps=2).attack(
        probes, loss_for("target", False), progress=lambda i, n: calls.append((i, n))
    )
    assert [i for i, _ in calls] == [10, 12, 22, 24] and {n for _, n in calls} == {24}


def test_progress_callback_can_abort() -> None:
    probes, _ = faces()

    def stop(iteration: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        PGDLinf(iterations=30).attack(probes, loss_for("target", False), progress=stop)


def test_compiled_step_is_traced_once_for_any_parameters_and_batch_sizes() -> None:
    probes, _ = faces()
    # a model of its own: the compiled functions are cached per model, and the shared toy
    # model's may already have been traced by another test (another transfer kernel's shape)
    own = ToyEmbedding()
    loss_5 = loss_for("target", False, on=own)
    PGDL2(epsilon=1.0, iterations=2).attack(probes, loss_5)
    run = PGDL2()._compiled(loss_5, f"run/{Switches(*[False] * 6, variance=0)}", None)
    assert run.tracing_count() == 1  # the first call traced the relaxed shapes, not its own
    e = embeddings()
    loss_3 = TargetLoss(own, list(e[:3]), [[e[4]]] * 3)
    PGDL2(epsilon=0.5, iterations=2).attack(probes[:3], loss_3)
    loss_2 = TargetLoss(own, list(e[:2]), [[e[3][:2], e[4]]] * 2, targeted=True)
    PGDL2(epsilon=3.0, step_size=0.7, iterations=4).attack(probes[:2], loss_2)
    assert run.tracing_count() == 1


def test_relaxed_specs_open_the_batch_and_the_reference_sets_only() -> None:
    import tensorflow as tf

    from faceoff.masker.attacks._compile import relaxed_spec
    from faceoff.masker.attacks.transfer import Transfer

    inputs = loss_for("target", False).inputs
    spec = relaxed_spec(inputs)
    assert spec.references.shape.as_list() == [None, None, None, inputs.references.shape[-1]]
    assert spec.mask.shape.as_list() == [None, None, None]
    assert spec.targeted.shape.as_list() == []
    transfer = relaxed_spec(Transfer(ti_kernel=5).inputs(np.array([1])))
    assert transfer.kernel.shape.as_list() == [5, 5, 3, 1]  # a setting: exact
    assert transfer.seed.shape.as_list() == [None]  # one per face
    assert relaxed_spec(tf.zeros([3, 8, 8, 3])).shape.as_list() == [None, 8, 8, 3]
    assert relaxed_spec(tf.constant(2)).shape.as_list() == []


# --- validation --------------------------------------------------------------------------------

BAD_PARAMETERS = [
    (PGDL2, {"epsilon": -1}, "epsilon must be > 0, got -1"),
    (PGDLinf, {"epsilon": 0}, "epsilon"),
    (PGDL2, {"epsilon": float("nan")}, "epsilon"),
    (PGDL2, {"step_size": 0}, "step_size"),
    (PGDLinf, {"iterations": 0}, "iterations"),
    (PGDL2, {"iterations": 2.5}, "iterations"),
    (PGDL2, {"iterations": 10_001}, "iterations"),
    (PGDL2, {"random_start": "yes"}, "random_start"),
    (CWL2, {"iterations": True}, "iterations"),
    (CWL2, {"search_steps": 0}, "search_steps"),
    (CWL2, {"search_steps": 51}, "search_steps"),
    (CWL2, {"learning_rate": -0.1}, "learning_rate"),
    (CWLinf, {"initial_const": 0}, "initial_const"),
    (CWLinf, {"initial_tau": 0}, "initial_tau"),
    (CWLinf, {"initial_tau": 1.5}, "initial_tau"),
    (CWLinf, {"decrease_factor": 1.5}, "decrease_factor"),
    (CWLinf, {"const_factor": 1.0}, "const_factor"),
    (CWLinf, {"largest_const": -1}, "largest_const"),
    (CWLinf, {"reduce_const": 1}, "reduce_const"),
]


@pytest.mark.parametrize(("factory", "params", "message"), BAD_PARAMETERS)
def test_bad_attack_parameters_are_rejected_by_name(
    factory: type, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        factory(**params)


def test_every_attack_parameter_has_a_documented_default() -> None:
    for attack in ATTACK_KEYS:
        instance = make_attack(*attack)
        assert instance.name == attack[0] and instance.norm == attack[1]
    assert (PGDL2().epsilon, PGDL2().step_size, PGDL2().iterations) == (0.1, 0.1, 20)
    assert (CWL2().iterations, CWL2().search_steps, CWL2().initial_const) == (100, 8, 0.3)
    assert (CWLinf().search_steps, CWLinf().learning_rate) == (10, 0.1)


def test_registry_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="attack must be one of"):
        make_attack("fgsm", "l2")
    with pytest.raises(ValueError, match="norm must be one of"):
        make_attack("pgd", "l1")
    with pytest.raises(ValueError, match="loss must be one of"):
        make_loss("cosine", model(), list(embeddings()))
    with pytest.raises(TypeError):
        make_loss("target", model(), list(embeddings()), kappa=1.0)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: HingeLoss(model(), list(embeddings()), kappa=-1), "kappa must be >= 0, got -1"),
        (lambda: TargetLoss(model(), list(embeddings()), threshold=0), "threshold"),
        (lambda: TargetLoss(model(), list(embeddings()), targeted="yes"), "targeted"),
        (lambda: TargetLoss(model(), []), "references"),
        (lambda: TargetLoss(model(), [np.zeros((0, 16))]), r"references\[0\]"),
        (lambda: TargetLoss(model(), [np.zeros((3, 8))]), r"references\[0\] has shape \(3, 8\)"),
        (lambda: TargetLoss(model(), [np.full((3, 16), np.nan)]), r"references\[0\]"),
        (lambda: TargetLoss(model(), list(embeddings()), [[]]), "others has 1 entries"),
        (lambda: TargetLoss(model(), [embeddings()[0]], [embeddings()[1]]), r"others\[0\]"),
        (lambda: TargetLoss(model(), [embeddings()[0]], [[np.zeros((2, 3))]]), r"others\[0\]\[0\]"),
        (lambda: TargetLoss("facenet", list(embeddings())), "model"),
    ],
)
def test_bad_loss_arguments_are_rejected_by_name(build: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (np.zeros((5, SIZE, SIZE)), r"images01 has shape \(5, 32, 32\)"),
        (np.zeros((5, 16, 16, 3)), "expected"),
        (np.zeros((4, SIZE, SIZE, 3)), "the loss was built for 5"),
        (np.full((5, SIZE, SIZE, 3), 255.0), r"in \[0, 1\]"),
        (np.full((5, SIZE, SIZE, 3), np.nan), "finite"),
        (np.zeros((5, SIZE, SIZE, 3), np.uint8), "floating point"),
    ],
)
def test_bad_images_are_rejected(images: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PGDL2(iterations=1).attack(images, loss_for("target", False))


def test_seed_must_be_an_integer() -> None:
    with pytest.raises(ValueError, match="seed"):
        PGDL2(iterations=1).attack(
            faces()[0],
            loss_for("target", False),
            seed=1.5,  # type: ignore[arg-type]
        )


# --- per-face seeds ----------------------------------------------------------------------------


def _attack_faces(attack: tuple[str, str], picked: list[int], seeds: list[Any]) -> np.ndarray:
    """The perturbations of the probes ``picked``, attacked as one batch seeded ``seeds``."""
    from faceoff.masker.attacks import Transfer

    probes, _ = faces()
    loss = loss_for("target", False, picked)
    params = dict(FAST[attack])
    if attack[0] == "pgd":  # every random part of the default profile's step, drawn per face
        params["transfer"] = Transfer(momentum=1.0, diversity=1.0, eot=0.5)
    return make_attack(*attack, **params).attack(probes[picked], loss, seed=seeds).delta


@pytest.mark.parametrize("attack", ATTACK_KEYS, ids=["-".join(k) for k in ATTACK_KEYS])
def test_a_faces_perturbation_does_not_depend_on_the_faces_beside_it(
    attack: tuple[str, str],
) -> None:
    """Each face draws its start and its transforms from its own seed, so a face attacked in a
    batch with others (the masker's batches of several requests) gets what it gets alone, up to
    the float rounding of a batched pass through the model (which CW's Adam steps grow more
    than PGD's normalised ones)."""
    rounding = 1e-4 if attack[0] == "cw" else 1e-5
    together = _attack_faces(attack, [0, 1, 2], [(7, 0), (9, 0), (5, 3)])
    alone = _attack_faces(attack, [1], [(9, 0)])
    np.testing.assert_allclose(together[1], alone[0], rtol=0, atol=rounding)
    reordered = _attack_faces(attack, [1, 4], [(9, 0), (2, 1)])
    np.testing.assert_allclose(reordered[0], alone[0], rtol=0, atol=rounding)
    other_seed = _attack_faces(attack, [1], [(9, 1)])
    assert np.abs(other_seed[0] - alone[0]).max() > 100 * rounding, "the seed does not reach it"


def test_one_integer_seed_seeds_each_face_with_its_index() -> None:
    from faceoff.masker.attacks.base import FaceRandom, face_seeds

    assert face_seeds(5, 3) == [(5, 0), (5, 1), (5, 2)]
    assert face_seeds([3, (4, 1)], 2) == [3, (4, 1)]
    rng = FaceRandom([(5, 0), (5, 1)])
    alone = FaceRandom([(5, 1)])
    both = rng.uniform(0, 1, size=(2, 3))
    np.testing.assert_array_equal(both[1], alone.uniform(0, 1, size=(1, 3))[0])
    assert not np.array_equal(both[0], both[1])


@pytest.mark.parametrize(
    "seed", [-1, 1.5, True, "3", [1], [1, 2, 3, 4, 5, 6], [(1, -2)] * IDENTITIES, [()] * IDENTITIES]
)
def test_bad_seeds_are_refused_by_name(seed: Any) -> None:
    with pytest.raises(ValueError, match="seed"):
        PGDL2(iterations=1).attack(faces()[0], loss_for("target", False), seed=seed)
