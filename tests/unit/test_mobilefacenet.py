"""The ``mobilefacenet`` judge: the network against TF.js, accuracy on the shared photos, bad weights.

The network tests need the real weight files from the model cache and skip, saying so, when they
have not been fetched. The TF.js reference (tests/fixtures/tfjs_mobilefacenet.json, made with
tools/tfjs_reference.mjs) holds TF.js's own output for three aligned crops stored beside it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from faceoff.common.imaging import decode
from faceoff.faces.models import SURROGATES
from faceoff.faces.models.mobilefacenet import EMBEDDING_DIM, INPUT_SIZE, MobileFaceNet
from faceoff.faces.recognizers import DEFAULT_LOCAL_RECOGNIZERS, LOCAL_RECOGNIZERS, get_local
from faceoff.faces.recognizers.mobilefacenet import MobileFaceNetRecognizer
from faceoff.faces.whitebox import is_white_box
from faceoff.masker.options import LOOP_RECOGNIZER_NAMES, SURROGATE_NAMES
from tests.conftest import CELEBS, cached_model_file, celeb_photos

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
REFERENCE = json.loads((FIXTURES / "tfjs_mobilefacenet.json").read_text())


def _need(*names: str) -> None:
    """Skip, saying so, unless every asset in ``names`` is in the model cache."""
    for name in names:
        cached_model_file(name)


@pytest.fixture(scope="module")
def weights() -> dict[str, np.ndarray]:
    _need("mobilefacenet_json", "mobilefacenet_bin", "yunet")
    from faceoff.faces.models.tfjs import load_asset_weights

    return load_asset_weights("mobilefacenet_json", "mobilefacenet_bin")


@pytest.fixture(scope="module")
def crops() -> tuple[list[str], np.ndarray]:
    """The reference crops (names, (3, 112, 112, 3) uint8), their bytes checked."""
    names = list(REFERENCE["crops"])
    images = []
    for name in names:
        png = FIXTURES / name
        assert (
            hashlib.sha256(png.read_bytes()).hexdigest() == REFERENCE["crops"][name]["png_sha256"]
        )
        images.append(np.asarray(Image.open(png).convert("RGB")))
    return names, np.stack(images)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


# -- registration: a judge, never a surrogate (no model needed) -------------------------------


def test_a_local_judge_that_is_never_a_surrogate() -> None:
    assert "mobilefacenet" in LOCAL_RECOGNIZERS and "mobilefacenet" not in DEFAULT_LOCAL_RECOGNIZERS
    assert "mobilefacenet" not in SURROGATES
    assert "mobilefacenet" not in SURROGATE_NAMES and "mobilefacenet" not in LOOP_RECOGNIZER_NAMES
    assert not is_white_box("mobilefacenet", set(SURROGATE_NAMES) | set(LOOP_RECOGNIZER_NAMES))
    r = get_local("mobilefacenet")
    assert isinstance(r, MobileFaceNetRecognizer)
    assert (r.metric, r.distance_threshold, r.detector_name) == ("cosine", 0.6, "YuNet")


# -- the network -------------------------------------------------------------------------------


@pytest.mark.slow
def test_as_converted_it_is_what_tfjs_computes(
    weights: dict[str, np.ndarray], crops: tuple[list[str], np.ndarray]
) -> None:
    names, images = crops
    ours = MobileFaceNet(weights, as_converted=True).embed(images.astype(np.float32)).numpy()
    theirs = np.array([REFERENCE["crops"][n]["embedding"] for n in names])
    for name, a, b in zip(names, ours, theirs):
        assert _cos(a, b) >= 0.999, name
        assert np.abs(a - b).max() <= 1e-5, name
    # The published graph maps every face close to one direction (cosine ~0.9999 between
    # different people), so agreeing on each vector says little: the differences between the
    # three faces must agree too (a swapped or misread crop would fail here).
    for i, j in ((0, 1), (0, 2), (1, 2)):
        assert _cos(ours[i] - ours[j], theirs[i] - theirs[j]) >= 0.99


@pytest.mark.slow
def test_as_published_it_does_not_tell_people_apart_and_as_trained_it_does(
    weights: dict[str, np.ndarray], crops: tuple[list[str], np.ndarray]
) -> None:
    names, images = crops
    assert len({n.split("_")[1] for n in names}) == 3  # three different people
    theirs = np.array([REFERENCE["crops"][n]["embedding"] for n in names])
    trained = MobileFaceNet(weights).embed(images.astype(np.float32)).numpy()
    for i, j in ((0, 1), (0, 2), (1, 2)):
        assert _cos(theirs[i], theirs[j]) > 0.999  # TF.js's own output
        assert _cos(trained[i], trained[j]) < 0.4  # the recogniser's threshold is 0.4


@pytest.mark.slow
def test_batches_shapes_and_gradients(
    weights: dict[str, np.ndarray], crops: tuple[list[str], np.ndarray]
) -> None:
    model = MobileFaceNet(weights)
    _, images = crops
    x = tf.constant(images.astype(np.float32))
    batch = model.embed(x).numpy()
    assert batch.shape == (3, EMBEDDING_DIM)
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    one = model.embed(x[1:2]).numpy()
    np.testing.assert_allclose(one[0], batch[1], atol=1e-5)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(model.embed(x) * tf.constant(batch[::-1]))
    grad = tape.gradient(loss, x).numpy()
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0
    with pytest.raises(ValueError, match=r"takes \(N, 112, 112, 3\) images"):
        model.embed(tf.zeros([1, 96, 96, 3]))


@pytest.mark.slow
def test_the_recogniser_reproduces_the_reference_crops(crops: tuple[list[str], np.ndarray]) -> None:
    _need("mobilefacenet_json", "mobilefacenet_bin", "yunet")
    names, images = crops
    r = get_local("mobilefacenet")
    assert isinstance(r, MobileFaceNetRecognizer)
    for name, stored in zip(names, images):
        photo = decode((CELEBS / REFERENCE["crops"][name]["photo"]).read_bytes())
        crop = r.aligned_crop(photo)
        assert crop is not None and crop.shape == (INPUT_SIZE, INPUT_SIZE, 3)
        assert np.abs(crop.astype(int) - stored.astype(int)).mean() < 0.5, name
        np.testing.assert_allclose(
            r.embed(photo), r.embed_crops(stored[None])[0], atol=1e-3, err_msg=name
        )


# -- accuracy on the shared photos -------------------------------------------------------------


@pytest.mark.slow
def test_leave_one_out_identification_and_verification_on_the_shared_photos() -> None:
    _need("mobilefacenet_json", "mobilefacenet_bin", "yunet")
    paths = celeb_photos()
    if len(paths) != 50:
        pytest.fail(f"the shared photo set is incomplete: {len(paths)} photos")
    r = get_local("mobilefacenet")
    embeddings = {p: r.embed(decode(p.read_bytes())) for p in paths}
    correct = 0
    for path, e in embeddings.items():
        gallery: dict[str, list[np.ndarray]] = {}
        for other, f in embeddings.items():
            if other != path:
                gallery.setdefault(other.parent.name, []).append(f)
        correct += r.identify_embeddings(e, gallery, top_k=1)[0].name == path.parent.name
    print(f"mobilefacenet: leave-one-out top-1 {correct}/{len(paths)} = {correct / len(paths):.0%}")
    assert correct / len(paths) >= 0.9
    items = list(embeddings.items())
    same, different = [], []
    for i, (pa, ea) in enumerate(items):
        for pb, eb in items[i + 1 :]:
            (same if pa.parent == pb.parent else different).append(
                r.verify_embeddings(ea, [eb]).match
            )
    assert np.mean(same) >= 0.9 and np.mean(different) <= 0.02, (np.mean(same), np.mean(different))


# -- bad weights -------------------------------------------------------------------------------

CONV_0 = "MobileFaceNet/MobileFaceNet/Conv2d_0/Conv2D_weights"
DW_7 = "MobileFaceNet/MobileFaceNet/Conv2d_4_InvResBlock_3/SeparableConv2d/depthwise_weights"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda w: w.update({CONV_0: w[CONV_0][:, :, :, :32]}),
            rf"{CONV_0}' has shape \[3, 3, 3, 32\]; expected \[3, 3, 3, 64\]",
        ),
        (
            lambda w: w.update({DW_7: w[DW_7].reshape(3, 3, 1, 256)}),
            r"has shape \[3, 3, 1, 256\]; expected \[3, 3, 256, 1\]",
        ),
        (lambda w: w.pop(DW_7), f"lack '{DW_7}'"),
        (
            lambda w: w.update({"extra/weights": np.zeros(3, np.float32)}),
            r"1 entries this network does not have, e.g. \['extra/weights'\]",
        ),
        (
            lambda w: w.update({CONV_0: np.full((3, 3, 3, 64), np.nan, np.float32)}),
            "must hold finite floats",
        ),
        (
            lambda w: w.update({CONV_0: np.zeros((3, 3, 3, 64), np.int32)}),
            "must hold finite floats",
        ),
        (lambda w: w.update({"embeddings/Sum/reduction_indices": np.int32(0)}), "is 0; expected 1"),
        (
            lambda w: w.update({"embeddings/Maximum/y": np.float32(1.0)}),
            r"is 1.0; expected \(0, 1e-3\]",
        ),
    ],
)
def test_bad_weights_are_refused_naming_them(
    weights: dict[str, np.ndarray], change: object, message: str
) -> None:
    bad = dict(weights)
    change(bad)  # type: ignore[operator]
    with pytest.raises(ValueError, match=message):
        MobileFaceNet(bad)
