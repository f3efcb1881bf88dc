"""Tests for the ``sface`` surrogate: the ONNX interpreter, agreement with OpenCV, batching, gradients.

The fast tests build tiny ONNX graphs with ``onnx.helper``. The slow ones use the real SFace file
from the model cache and skip, saying so, when it has not been fetched; a file that is present but
fails its hash is an error.
"""

from __future__ import annotations

import weakref
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from onnx import TensorProto, helper, numpy_helper

from faceoff.common import assets
from faceoff.common.assets import AssetError
from faceoff.faces.models import load_surrogate
from faceoff.faces.models.sface import WINDOW, OnnxNetwork, SFaceModel, parse_model
from tests.conftest import ALIGNED, aligned_crops, cached_model_file

PHOTOS = ALIGNED.parent / "photos"
DECOYS = (
    Path(__file__).resolve().parents[2]
    / "services/masker/src/faceoff/masker/data/decoys_sface.json"
)


@pytest.fixture(scope="module")
def model() -> SFaceModel:
    cached_model_file("sface")
    return SFaceModel()


# --- fast tests: tiny ONNX graphs ---------------------------------------------------------------

RNG = np.random.default_rng(0)


def _tiny_model(extra: list | None = None, pads: list[int] | None = None, out: str = "y"):  # type: ignore[no-untyped-def]
    """data (N,2,5,5) -> Sub/Mul -> Conv 3x3 -> BatchNorm -> PRelu -> Flatten -> Gemm -> y (N,3)."""
    w = RNG.standard_normal((4, 2, 3, 3)).astype(np.float32)
    inits = [
        numpy_helper.from_array(np.array([127.5], np.float32), "s1"),
        numpy_helper.from_array(np.array([0.0078125], np.float32), "s2"),
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(RNG.uniform(0.5, 2, 4).astype(np.float32), "g"),
        numpy_helper.from_array(RNG.standard_normal(4).astype(np.float32), "b"),
        numpy_helper.from_array(RNG.standard_normal(4).astype(np.float32), "m"),
        numpy_helper.from_array(RNG.uniform(0.5, 2, 4).astype(np.float32), "v"),
        numpy_helper.from_array(RNG.uniform(0, 0.5, (4, 1, 1)).astype(np.float32), "slope"),
        numpy_helper.from_array(RNG.standard_normal((3, 4 * 5 * 5)).astype(np.float32), "fw"),
        numpy_helper.from_array(RNG.standard_normal(3).astype(np.float32), "fb"),
    ]
    nodes = [
        helper.make_node("Sub", ["data", "s1"], ["a"], name="sub"),
        helper.make_node("Mul", ["a", "s2"], ["b0"], name="mul"),
        helper.make_node("Conv", ["b0", "w"], ["c"], name="conv", kernel_shape=[3, 3], pads=pads or [1, 1, 1, 1],
                         strides=[1, 1], dilations=[1, 1], group=1),
        helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["d"], name="bn", epsilon=1e-3),
        helper.make_node("PRelu", ["d", "slope"], ["e"], name="prelu"),
        *(extra or []),
        helper.make_node("Flatten", ["e"], ["f"], name="flat", axis=1),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], name="fc", transB=1),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("data", TensorProto.FLOAT, [None, 2, 5, 5])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [None, 3])], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])


def _numpy_reference(model, x_nchw: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The tiny graph evaluated with plain numpy loops, in ONNX's NCHW layout."""
    c = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in model.graph.initializer}
    x = (x_nchw - 127.5) * 0.0078125
    n = len(x)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    conv = np.zeros((n, 4, 5, 5))
    for i in range(5):
        for j in range(5):
            conv[:, :, i, j] = np.einsum("nchw,ochw->no", xp[:, :, i : i + 3, j : j + 3], c["w"])
    bn = (conv - c["m"][:, None, None]) / np.sqrt(c["v"][:, None, None] + 1e-3) * c["g"][
        :, None, None
    ] + c["b"][:, None, None]
    pr = np.where(bn > 0, bn, bn * c["slope"])
    return pr.reshape(n, -1) @ c["fw"].T + c["fb"]


def test_the_interpreter_computes_what_the_graph_says() -> None:
    model = _tiny_model()
    net = OnnxNetwork(parse_model(model.SerializeToString()))
    x = RNG.uniform(0, 255, (3, 2, 5, 5))
    got = net(tf.constant(x.transpose(0, 2, 3, 1), tf.float32)).numpy()
    np.testing.assert_allclose(got, _numpy_reference(model, x), rtol=1e-4, atol=1e-3)


def test_an_op_outside_the_whitelist_is_refused_by_name() -> None:
    model = _tiny_model(extra=[helper.make_node("Relu", ["e"], ["e2"], name="sneaky_relu")])
    with pytest.raises(ValueError, match=r"node 'sneaky_relu'.*'Relu' is not one of"):
        OnnxNetwork(parse_model(model.SerializeToString()))


def test_asymmetric_padding_is_refused_by_name() -> None:
    with pytest.raises(
        ValueError, match=r"node 'conv' \(Conv\) has unsupported pads=\[0, 0, 1, 1\]"
    ):
        OnnxNetwork(_tiny_model(pads=[0, 0, 1, 1]))


def test_bytes_that_are_no_model_are_refused() -> None:
    with pytest.raises(ValueError, match="not an ONNX model"):
        parse_model(b"\xff\x00 certainly not protobuf")


def test_the_window_is_the_fitted_one() -> None:
    # Guards the hard-coded constant against accidental edits (tools/fit_sface_window.py).
    assert (WINDOW.center_x, WINDOW.center_y, WINDOW.side) == (81.1, 69.4, 163.7)


# --- the real model file ------------------------------------------------------------------------


@pytest.mark.slow
def test_a_tampered_model_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = bytearray(cached_model_file("sface").read_bytes())
    data[len(data) // 2] ^= 0x01  # one weight byte: still parses, but is not the reviewed file
    file = tmp_path / assets.ASSETS["sface"].filename
    file.write_bytes(bytes(data))
    want = assets.ASSETS["sface"].sha256
    with pytest.raises(AssetError) as info:
        SFaceModel(model_path=file)
    assert str(file) in str(info.value) and want in str(info.value)
    monkeypatch.setenv("FACEOFF_MODEL_DIR", str(tmp_path))
    with pytest.raises(AssetError) as info:
        load_surrogate("sface")
    assert str(file) in str(info.value) and "faceoff models fetch" in str(info.value)


@pytest.mark.slow
def test_the_network_equals_opencv_sface_on_real_aligned_crops(model: SFaceModel) -> None:
    import cv2

    from faceoff.common.imaging import decode
    from faceoff.faces.recognizers.sface import SFaceRecognizer

    if not PHOTOS.is_dir():
        pytest.skip(f"{PHOTOS} not found")
    real = SFaceRecognizer()
    real._load()
    aligned, expected = [], []
    for file in sorted(PHOTOS.glob("*/*_01.jpg")):  # one photo of each of the ten people
        bgr = cv2.cvtColor(decode(file.read_bytes()).pixels, cv2.COLOR_RGB2BGR)
        face = real._detect(bgr)
        assert face is not None, f"YuNet found no face in {file.name}"
        crop = real._sface.alignCrop(bgr, face.reshape(1, -1))
        aligned.append(crop[..., ::-1].astype(np.float32))  # OpenCV's blobFromImage swaps to RGB
        expected.append(np.asarray(real._sface.feature(crop), np.float64).reshape(-1))
    got = model.features(tf.constant(np.stack(aligned))).numpy().astype(np.float64)
    exp = np.asarray(expected)
    cosine = np.sum(got * exp, axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(exp, axis=1)
    print(f"sface: TF vs OpenCV cosine on {len(cosine)} aligned crops: min {cosine.min():.7f}")
    assert cosine.min() > 0.999, cosine


@pytest.mark.slow
def test_leave_one_out_nearest_centroid_on_aligned_crops(model: SFaceModel) -> None:
    images, labels = aligned_crops()
    emb = model.embed_numpy(images)
    assert emb.shape == (len(images), 128)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    hits = 0
    for i in range(len(emb)):
        keep = np.arange(len(emb)) != i
        cents = np.stack([emb[keep & (labels == c)].mean(axis=0) for c in np.unique(labels)])
        hits += int(np.argmin(np.linalg.norm(cents - emb[i], axis=1))) == labels[i]
    accuracy = hits / len(emb)
    print(
        f"sface surrogate: leave-one-out nearest-centroid top-1 on {len(emb)} aligned crops = {accuracy:.3f}"
    )
    assert accuracy >= 0.95, (
        f"leave-one-out top-1 accuracy {accuracy:.3f}, measured 1.000 when written"
    )


@pytest.mark.slow
def test_a_batch_embeds_as_its_faces_one_by_one(model: SFaceModel) -> None:
    images, _ = aligned_crops()
    x = images[::11][:8]
    batched = model.embed(tf.constant(x)).numpy()
    singles = np.concatenate(
        [model.embed(tf.constant(x[i : i + 1])).numpy() for i in range(len(x))]
    )
    assert batched.shape == (len(x), 128)
    np.testing.assert_allclose(batched, singles, atol=1e-5)


@pytest.mark.slow
def test_gradients_inside_a_compiled_step(model: SFaceModel) -> None:
    images, _ = aligned_crops()
    ref = weakref.ref(model)  # the attacks' compiled-step cache keys on a weak reference
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
        # The window reaches above the crop, where edge rows are repeated: the top row gets gradient.
        assert np.abs(g[:, 0]).max() > 0
