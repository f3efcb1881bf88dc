"""FaceNet (Inception-ResNet-v1, 160x160 RGB -> 128-D), the surrogate the Face-Off attacks run on.

The paper attacks FaceNet as its white-box surrogate. The network here is built in code with the
Keras functional API, layer for layer as in Hiroki Taniai's keras-facenet port of David Sandberg's
TensorFlow model (``facenet_keras.h5``), and the file's tensors are then copied in by layer name
with h5py. The h5 file is treated as untrusted data: its stored model config, and in particular
its ``Lambda`` layers (marshalled Python bytecode), are never deserialised. Those Lambdas only
scale each residual branch before the add (0.17 in Block35, 0.10 in Block17, 0.20 in Block8 and
1.0 in the last, activation-free Block8); :class:`ScaleResidual` does the same multiplication.

The original network outputs the raw ``Bottleneck_BatchNorm`` vector; :meth:`FaceNet.embed`
L2-normalises it, which is how FaceNet embeddings are compared.

No device is pinned: TensorFlow places the model on a GPU when one is visible, else on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import keras
import numpy as np
import tensorflow as tf
from keras import layers

from faceoff.faces.models.augment import FACENET_SCALE, drop
from faceoff.faces.models.base import EmbeddingModel

__all__ = [
    "FaceNet",
    "ScaleResidual",
    "build_inception_resnet_v1",
    "load_h5_weights",
    "per_image_standardization",
]

INPUT_SIZE = 160
EMBEDDING_DIM = 128
_BN_EPSILON = 0.001
_BN_MOMENTUM = 0.995


class ScaleResidual(layers.Layer):
    """Multiply the input by a fixed float: the residual scaling of Inception-ResNet blocks."""

    def __init__(self, scale: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scale = float(scale)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        # a dropout site of surrogate augmentation (the identity unless an attack opens one)
        return drop(inputs * self.scale, f"facenet/{self.name}", FACENET_SCALE)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "scale": self.scale}


def _conv_bn(
    x: keras.KerasTensor,
    filters: int,
    kernel_size: int | tuple[int, int],
    name: str,
    strides: int = 1,
    padding: str = "same",
) -> keras.KerasTensor:
    """Conv (no bias) -> BatchNorm (no gamma) -> ReLU, named as in the h5 file."""
    x = layers.Conv2D(
        filters, kernel_size, strides=strides, padding=padding, use_bias=False, name=name
    )(x)
    x = layers.BatchNormalization(
        axis=3, momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, scale=False, name=f"{name}_BatchNorm"
    )(x)
    return layers.Activation("relu", name=f"{name}_Activation")(x)


def _residual_block(
    x: keras.KerasTensor, block_type: str, index: int, scale: float, activation: bool = True
) -> keras.KerasTensor:
    """One Block35 / Block17 / Block8: parallel branches, 1x1 up-projection, scaled residual add."""
    prefix = f"{block_type}_{index}"

    def branch(i: int, layer: str) -> str:
        return f"{prefix}_Branch_{i}_{layer}"

    branches: list[keras.KerasTensor]
    if block_type == "Block35":
        b0 = _conv_bn(x, 32, 1, branch(0, "Conv2d_1x1"))
        b1 = _conv_bn(x, 32, 1, branch(1, "Conv2d_0a_1x1"))
        b1 = _conv_bn(b1, 32, 3, branch(1, "Conv2d_0b_3x3"))
        b2 = _conv_bn(x, 32, 1, branch(2, "Conv2d_0a_1x1"))
        b2 = _conv_bn(b2, 32, 3, branch(2, "Conv2d_0b_3x3"))
        b2 = _conv_bn(b2, 32, 3, branch(2, "Conv2d_0c_3x3"))
        branches = [b0, b1, b2]
    elif block_type == "Block17":
        b0 = _conv_bn(x, 128, 1, branch(0, "Conv2d_1x1"))
        b1 = _conv_bn(x, 128, 1, branch(1, "Conv2d_0a_1x1"))
        b1 = _conv_bn(b1, 128, (1, 7), branch(1, "Conv2d_0b_1x7"))
        b1 = _conv_bn(b1, 128, (7, 1), branch(1, "Conv2d_0c_7x1"))
        branches = [b0, b1]
    elif block_type == "Block8":
        b0 = _conv_bn(x, 192, 1, branch(0, "Conv2d_1x1"))
        b1 = _conv_bn(x, 192, 1, branch(1, "Conv2d_0a_1x1"))
        b1 = _conv_bn(b1, 192, (1, 3), branch(1, "Conv2d_0b_1x3"))
        b1 = _conv_bn(b1, 192, (3, 1), branch(1, "Conv2d_0c_3x1"))
        branches = [b0, b1]
    else:
        raise ValueError(f"block_type {block_type!r} must be Block35, Block17 or Block8")
    mixed = layers.Concatenate(axis=3, name=f"{prefix}_Concatenate")(branches)
    up = layers.Conv2D(x.shape[-1], 1, padding="same", use_bias=True, name=f"{prefix}_Conv2d_1x1")(
        mixed
    )
    up = ScaleResidual(scale, name=f"{prefix}_ScaleResidual")(up)
    x = layers.Add(name=f"{prefix}_Add")([x, up])
    if activation:
        x = layers.Activation("relu", name=f"{prefix}_Activation")(x)
    return x


def build_inception_resnet_v1(input_size: int = INPUT_SIZE) -> keras.Model:
    """Build FaceNet's Inception-ResNet-v1 with random weights.

    Input: ``(N, input_size, input_size, 3)`` standardised images. Output: ``(N, 128)``, the raw
    ``Bottleneck_BatchNorm`` activations (not L2-normalised). Layer names match
    ``facenet_keras.h5`` so that :func:`load_h5_weights` can fill every weight.
    """
    inputs = keras.Input(shape=(input_size, input_size, 3), name="input_1")
    # Stem.
    x = _conv_bn(inputs, 32, 3, "Conv2d_1a_3x3", strides=2, padding="valid")
    x = _conv_bn(x, 32, 3, "Conv2d_2a_3x3", padding="valid")
    x = _conv_bn(x, 64, 3, "Conv2d_2b_3x3")
    x = layers.MaxPooling2D(3, strides=2, name="MaxPool_3a_3x3")(x)
    x = _conv_bn(x, 80, 1, "Conv2d_3b_1x1", padding="valid")
    x = _conv_bn(x, 192, 3, "Conv2d_4a_3x3", padding="valid")
    x = _conv_bn(x, 256, 3, "Conv2d_4b_3x3", strides=2, padding="valid")
    # 5 x Block35 (35x35 grid in the 299-px original; 17x17 here).
    for i in range(1, 6):
        x = _residual_block(x, "Block35", i, scale=0.17)
    # Mixed_6a: reduction to 8x8.
    b0 = _conv_bn(x, 384, 3, "Mixed_6a_Branch_0_Conv2d_1a_3x3", strides=2, padding="valid")
    b1 = _conv_bn(x, 192, 1, "Mixed_6a_Branch_1_Conv2d_0a_1x1")
    b1 = _conv_bn(b1, 192, 3, "Mixed_6a_Branch_1_Conv2d_0b_3x3")
    b1 = _conv_bn(b1, 256, 3, "Mixed_6a_Branch_1_Conv2d_1a_3x3", strides=2, padding="valid")
    b2 = layers.MaxPooling2D(3, strides=2, name="Mixed_6a_Branch_2_MaxPool_1a_3x3")(x)
    x = layers.Concatenate(axis=3, name="Mixed_6a")([b0, b1, b2])
    # 10 x Block17.
    for i in range(1, 11):
        x = _residual_block(x, "Block17", i, scale=0.10)
    # Mixed_7a: reduction to 3x3.
    b0 = _conv_bn(x, 256, 1, "Mixed_7a_Branch_0_Conv2d_0a_1x1")
    b0 = _conv_bn(b0, 384, 3, "Mixed_7a_Branch_0_Conv2d_1a_3x3", strides=2, padding="valid")
    b1 = _conv_bn(x, 256, 1, "Mixed_7a_Branch_1_Conv2d_0a_1x1")
    b1 = _conv_bn(b1, 256, 3, "Mixed_7a_Branch_1_Conv2d_1a_3x3", strides=2, padding="valid")
    b2 = _conv_bn(x, 256, 1, "Mixed_7a_Branch_2_Conv2d_0a_1x1")
    b2 = _conv_bn(b2, 256, 3, "Mixed_7a_Branch_2_Conv2d_0b_3x3")
    b2 = _conv_bn(b2, 256, 3, "Mixed_7a_Branch_2_Conv2d_1a_3x3", strides=2, padding="valid")
    b3 = layers.MaxPooling2D(3, strides=2, name="Mixed_7a_Branch_3_MaxPool_1a_3x3")(x)
    x = layers.Concatenate(axis=3, name="Mixed_7a")([b0, b1, b2, b3])
    # 5 x Block8, then a sixth with unit scale and no activation.
    for i in range(1, 6):
        x = _residual_block(x, "Block8", i, scale=0.20)
    x = _residual_block(x, "Block8", 6, scale=1.0, activation=False)
    # Tail.
    x = layers.GlobalAveragePooling2D(name="AvgPool")(x)
    x = layers.Dropout(0.2, name="Dropout")(x)
    x = layers.Dense(EMBEDDING_DIM, use_bias=False, name="Bottleneck")(x)
    x = layers.BatchNormalization(
        momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, scale=False, name="Bottleneck_BatchNorm"
    )(x)
    return keras.Model(inputs, x, name="inception_resnet_v1")


def _as_str(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _read_h5_weights(weights_path: Path) -> dict[str, dict[str, np.ndarray]]:
    """Read ``{layer name: {weight name: array}}`` from a Keras 2 HDF5 model or weights file.

    Only ``layer_names`` / ``weight_names`` attributes and numeric datasets are read.
    """
    out: dict[str, dict[str, np.ndarray]] = {}
    with h5py.File(weights_path, "r") as f:
        root = f["model_weights"] if "model_weights" in f else f
        if "layer_names" not in root.attrs:
            raise ValueError(f"{weights_path}: no 'layer_names' attribute; not a Keras HDF5 file")
        for layer_name in (_as_str(n) for n in root.attrs["layer_names"]):
            group = root.get(layer_name)
            if not isinstance(group, h5py.Group):
                raise ValueError(f"{weights_path}: layer {layer_name!r} is listed but not stored")
            weights: dict[str, np.ndarray] = {}
            for full in (_as_str(n) for n in group.attrs.get("weight_names", [])):
                ds = group.get(full)
                if not isinstance(ds, h5py.Dataset) or ds.dtype.kind != "f":
                    raise ValueError(f"{weights_path}: {layer_name}/{full} is not a float tensor")
                # "Conv2d_1a_3x3_BatchNorm/moving_mean:0" -> "moving_mean"
                short = full.rsplit("/", 1)[-1].split(":", 1)[0]
                if short in weights:
                    raise ValueError(f"{weights_path}: {layer_name} repeats weight {short!r}")
                weights[short] = np.asarray(ds[()])
            if weights:
                if layer_name in out:
                    raise ValueError(f"{weights_path}: layer {layer_name!r} appears twice")
                out[layer_name] = weights
    return out


def load_h5_weights(model: keras.Model, weights_path: Path) -> None:
    """Assign every weight of ``model`` from ``weights_path``, matching by layer and weight name.

    Raises:
        ValueError: a layer or weight exists on one side only, or a shape differs. Every tensor
            in the file must be used and every model weight must be set.
    """
    stored = _read_h5_weights(weights_path)
    model_layers = {layer.name: layer for layer in model.layers if layer.weights}
    problems: list[str] = []
    only_file = sorted(set(stored) - set(model_layers))
    only_model = sorted(set(model_layers) - set(stored))
    if only_file:
        problems.append(f"layers in the file but not in the model: {only_file}")
    if only_model:
        problems.append(f"layers in the model but not in the file: {only_model}")
    assignments: list[tuple[keras.Variable, np.ndarray]] = []
    for name in sorted(set(stored) & set(model_layers)):
        variables = {v.name: v for v in model_layers[name].weights}
        arrays = stored[name]
        if set(variables) != set(arrays):
            problems.append(
                f"{name}: model weights {sorted(variables)} != file weights {sorted(arrays)}"
            )
            continue
        for wname, var in variables.items():
            arr = arrays[wname]
            if tuple(var.shape) != arr.shape:
                problems.append(f"{name}/{wname}: model {tuple(var.shape)} != file {arr.shape}")
            else:
                assignments.append((var, arr.astype(var.dtype)))
    if problems:
        raise ValueError(
            f"{weights_path} does not fit the model {model.name!r}: " + "; ".join(problems)
        )
    for var, arr in assignments:
        var.assign(arr)


def per_image_standardization(images01: tf.Tensor) -> tf.Tensor:
    """``tf.image.per_image_standardization`` of ``images01 * 255``, with a NaN-free gradient.

    Each image becomes ``(x - mean) / max(std, 1/sqrt(n))`` with ``n`` its number of values. The
    std floor is taken on the variance (``sqrt(max(var, 1/n))``), which is the same value but
    keeps the gradient finite for flat images, where ``d sqrt(var)`` would be infinite.
    """
    x = tf.cast(images01, tf.float32) * 255.0
    n = tf.cast(tf.reduce_prod(tf.shape(x)[1:]), tf.float32)
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    var = tf.reduce_mean(tf.square(x - mean), axis=[1, 2, 3], keepdims=True)
    return (x - mean) / tf.sqrt(tf.maximum(var, 1.0 / n))


class FaceNet(EmbeddingModel):
    """FaceNet Inception-ResNet-v1 with the keras-facenet weights (``facenet_keras.h5``).

    Args:
        weights_path: the h5 file; default :func:`faceoff.common.assets.path` ``("facenet")``, which
            checks its SHA-256 and raises :class:`faceoff.common.assets.AssetError` if it is missing.

    :meth:`embed` returns **L2-normalised** 128-D embeddings, so the squared Euclidean distance
    of two embeddings is ``2 - 2 cos``. Weights are frozen: BatchNorm always uses its moving
    statistics, and ``training=True`` only switches on the 0.2 dropout before the bottleneck.
    """

    name = "facenet"

    def __init__(self, weights_path: Path | None = None) -> None:
        if weights_path is None:
            from faceoff.common import assets

            weights_path = assets.path("facenet")
        self.weights_path = Path(weights_path)
        self.network = build_inception_resnet_v1(INPUT_SIZE)
        load_h5_weights(self.network, self.weights_path)
        # Frozen: a non-trainable BatchNormalization runs in inference mode even when called
        # with training=True, so attacks can never move its statistics.
        self.network.trainable = False
        self._embed_compiled: Callable[[tf.Tensor], tf.Tensor] | None = None

    #: Side length of the square input: 160 px; length of the embedding: 128.
    input_size = INPUT_SIZE
    embedding_dim = EMBEDDING_DIM

    def preprocess(self, images01: tf.Tensor) -> tf.Tensor:
        """Per-image standardisation of ``(N, 160, 160, 3)`` images in [0, 1] (differentiable)."""
        return per_image_standardization(images01)

    def raw_embed(self, images01: tf.Tensor, training: bool = False) -> tf.Tensor:
        """The network's own output: ``(N, 128)`` un-normalised ``Bottleneck_BatchNorm`` values."""
        return self.network(self.preprocess(images01), training=training)

    def embed(self, images01: tf.Tensor, training: bool = False) -> tf.Tensor:
        """L2-normalised ``(N, 128)`` embeddings of ``(N, 160, 160, 3)`` images in [0, 1].

        The norm is floored (``tf.math.l2_normalize``, epsilon 1e-12), so the gradient is finite
        even for a zero vector.
        """
        return tf.math.l2_normalize(self.raw_embed(images01, training=training), axis=-1)
