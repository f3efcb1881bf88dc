"""Tests for the FaceNet surrogate: weight loading, preprocessing, accuracy and gradients.

The accuracy and gradient tests use the real weights from the model cache and skip, saying
so, when the file has not been fetched; a file that is present but fails its hash is an error.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from faceoff.faces.models import load_surrogate
from faceoff.faces.models.facenet import (
    FaceNet,
    load_h5_weights,
    per_image_standardization,
)
from tests.conftest import aligned_crops, cached_model_file

Weights = dict[str, dict[str, np.ndarray]]


@pytest.fixture(scope="module")
def facenet() -> FaceNet:
    cached_model_file("facenet")
    return FaceNet()


# --- fast tests: no weights needed -------------------------------------------------------------


def test_standardization_matches_tf_and_is_finite_on_flat_images() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((3, 160, 160, 3), dtype=np.float32)
    x[2] = 0.5  # a flat image: std 0, floored at 1/sqrt(n)
    want = tf.image.per_image_standardization(x * 255.0)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        got = per_image_standardization(xt)
        loss = tf.reduce_sum(tf.square(got))
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-4)
    assert np.isfinite(tape.gradient(loss, xt).numpy()).all()


def _tiny_model() -> keras.Model:
    inp = keras.Input((4, 4, 3))
    x = keras.layers.Conv2D(2, 1, use_bias=True, name="conv")(inp)
    x = keras.layers.BatchNormalization(scale=False, name="conv_BatchNorm")(x)
    return keras.Model(inp, x)


def _write_h5(path: Path, layers: Weights) -> Path:
    with h5py.File(path, "w") as f:
        g = f.create_group("model_weights")
        g.attrs["layer_names"] = [n.encode() for n in [*layers, "activation"]]
        g.create_group("activation").attrs["weight_names"] = []
        for name, weights in layers.items():
            lg = g.create_group(name)
            lg.attrs["weight_names"] = [f"{name}/{w}:0".encode() for w in weights]
            for w, arr in weights.items():
                lg.create_dataset(f"{name}/{w}:0", data=arr)
    return path


def _tiny_weights() -> Weights:
    return {
        "conv": {"kernel": np.full((1, 1, 3, 2), 0.5, np.float32), "bias": np.ones(2, np.float32)},
        "conv_BatchNorm": {
            "beta": np.full(2, 0.25, np.float32),
            "moving_mean": np.zeros(2, np.float32),
            "moving_variance": np.full(2, 4.0, np.float32),
        },
    }


def test_load_h5_weights_assigns_by_name(tmp_path: Path) -> None:
    model = _tiny_model()
    load_h5_weights(model, _write_h5(tmp_path / "w.h5", _tiny_weights()))
    assert np.all(model.get_layer("conv").kernel.numpy() == 0.5)
    assert np.all(model.get_layer("conv_BatchNorm").moving_variance.numpy() == 4.0)


@pytest.mark.parametrize(
    ("mutate", "complaint"),
    [
        (lambda w: w["conv"].update(kernel=np.zeros((3, 3, 3, 2), np.float32)), "(3, 3, 3, 2)"),
        (lambda w: w.pop("conv_BatchNorm"), "not in the file"),
        (lambda w: w.update(extra={"kernel": np.zeros(1, np.float32)}), "not in the model"),
        (lambda w: w["conv"].pop("bias"), "conv: model weights"),
        (lambda w: w["conv"].update(gamma=np.ones(2, np.float32)), "conv: model weights"),
    ],
    ids=["wrong-shape", "missing-layer", "unused-layer", "missing-weight", "unused-weight"],
)
def test_load_h5_weights_fails_loudly(
    tmp_path: Path, mutate: Callable[[Weights], object], complaint: str
) -> None:
    weights = _tiny_weights()
    mutate(weights)
    with pytest.raises(ValueError, match=re.escape(complaint)):
        load_h5_weights(_tiny_model(), _write_h5(tmp_path / "w.h5", weights))


def test_load_surrogate_rejects_unknown_name() -> None:
    with pytest.raises(ValueError, match="facenet"):
        load_surrogate("vggface")


# --- real weights ------------------------------------------------------------------------------


@pytest.mark.slow
def test_leave_one_out_nearest_centroid_is_perfect(facenet: FaceNet) -> None:
    images, labels = aligned_crops()
    emb = facenet.embed_numpy(images)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    classes = np.unique(labels)
    centroids = np.stack([emb[labels == c].mean(axis=0) for c in classes])
    predictions = []
    for i in range(len(emb)):
        own = (labels == labels[i]) & (np.arange(len(emb)) != i)
        c = centroids.copy()
        c[labels[i]] = emb[own].mean(axis=0)
        predictions.append(int(np.argmin(np.linalg.norm(c - emb[i], axis=1))))
    accuracy = float(np.mean(np.asarray(predictions) == labels))
    assert accuracy == 1.0, f"leave-one-out top-1 accuracy {accuracy:.3f}, expected 1.0"


@pytest.mark.slow
def test_gradients_are_finite_even_at_the_reference(facenet: FaceNet) -> None:
    images, _ = aligned_crops()
    x = tf.constant(np.concatenate([images[:2], np.full((1, 160, 160, 3), 0.5, np.float32)]))
    reference = facenet.embed(x)  # the input equals the reference: distance 0
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        e = facenet.embed(x)
        squared = tf.reduce_sum(tf.square(e - reference), axis=1)
        cosine = tf.reduce_sum(e * reference, axis=1)
        moved = tf.reduce_sum(tf.square(e - tf.roll(reference, 1, axis=0)), axis=1)
    assert e.shape == (3, 128)
    for loss in (squared, cosine, moved):
        g = tape.gradient(loss, x).numpy()
        assert g.shape == x.shape
        assert np.isfinite(g).all()
    # Away from the reference the gradient must carry signal, or the attacks have nothing to use.
    assert np.abs(tape.gradient(moved, x).numpy()).max() > 0
