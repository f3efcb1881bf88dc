"""SFace (OpenCV Zoo, MobileFaceNet-style, 112x112 RGB -> 128-D), a surrogate of another family.

The evaluator's ``sface`` recogniser runs this network through OpenCV as a black box. Here the
same weights, the ONNX file ``face_recognition_sface_2021dec.onnx`` (asset ``sface``), are rebuilt
in TensorFlow so that the attacks can take gradients through it.

An ONNX model is data: a list of nodes, each an op name with attributes, plus weight tensors. It
is parsed with the ``onnx`` package (protobuf only; no external data, no custom op, nothing run)
and :class:`OnnxNetwork` walks ``graph.node`` in order, mapping each op of a short whitelist
(:data:`ALLOWED_OPS`: Sub, Mul, Conv incl. depthwise, BatchNormalization, PRelu, Dropout,
Flatten, Gemm) to TensorFlow ops in NHWC layout. Any other op, and any attribute value outside
what this network uses (dilations, grouped but not depthwise convolutions, asymmetric or
automatic padding, training-mode batch norm ...), refuses the file with a ``ValueError`` naming
the node. The weights are converted once at load into frozen (non-trainable) variables, batch
norms in inference mode; dropout is the identity. The batch dimension is free.

The graph normalises its own input, ``(x - 127.5) * 0.0078125`` (initializers ``scalar_op1``
and ``scalar_op2``), on RGB values in 0..255: OpenCV's ``FaceRecognizerSF.feature`` feeds the
BGR aligned crop through ``blobFromImage(..., swapRB=true)``.

Alignment. The real pipeline (YuNet landmarks -> ``alignCrop``, a similarity warp to 112x112)
sees a tighter, differently centred face than the masker's 160x160 crop (MTCNN box plus 10%
margin). :meth:`SFaceModel.preprocess` maps the 160 crop to the 112 input with one fixed,
differentiable bilinear crop-and-resize, :data:`WINDOW`, fitted on the shared photos by
``tools/fit_sface_window.py`` (rotation ignored).

No device is pinned: TensorFlow places the model on a GPU when one is visible, else on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import cast

import numpy as np
import onnx
import tensorflow as tf
from onnx import numpy_helper

from faceoff.faces.models.augment import SFACE_SCALE, drop
from faceoff.faces.models.base import EmbeddingModel
from faceoff.faces.models.window_crop import Window, WindowCrop

__all__ = ["ALLOWED_OPS", "WINDOW", "OnnxNetwork", "SFaceModel", "Window", "parse_model"]

INPUT_SIZE = 160
NETWORK_SIZE = 112
EMBEDDING_DIM = 128
INPUT_NAME = "data"
OUTPUT_NAME = "fc1"

#: Every op the SFace graph uses; anything else refuses the file.
ALLOWED_OPS = frozenset(
    {"Sub", "Mul", "Conv", "BatchNormalization", "PRelu", "Dropout", "Flatten", "Gemm"}
)


#: Where the real pipeline's 112x112 aligned crop lies inside the masker's 160x160 crop, on
#: average. Measured by ``tools/fit_sface_window.py`` on the 50 shared photos
#: (faceoff-celebs/photos): for each photo, the MTCNN crop region (box + 10% margin) and the
#: similarity transform ``alignCrop`` applies to YuNet's landmarks; the aligned square's centre
#: and side (mean of the scale of that transform, rotation ignored) mapped into 160-px crop
#: coordinates, then averaged over the photos where both detectors found the face (all 50).
#: Spread over the photos (sd): centre_x 11.7 px, centre_y 4.7 px, side 9.6 px (144 to 190); the
#: centre_x spread is mostly head turn and tilt, which one fixed window cannot follow. The window
#: reaches 12 px above the crop, where the crop's edge rows are repeated (as the real aligned
#: crop would show more of the photo there, not black).
WINDOW = Window(center_x=81.1, center_y=69.4, side=163.7)


def parse_model(data: bytes) -> onnx.ModelProto:
    """Parse serialised ONNX bytes into the protobuf message (nothing is built or run).

    Raises:
        ValueError: the bytes are not an ONNX model.
    """
    try:
        return onnx.load_model_from_string(data)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError, whose class depends on the backend
        raise ValueError(f"not an ONNX model: {exc}") from None


def _attrs(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _where(node: onnx.NodeProto) -> str:
    return f"node {node.name or '(unnamed)'!r} ({node.op_type})"


def _check_attrs(
    node: onnx.NodeProto, attrs: dict[str, object], allowed: dict[str, Callable[[object], bool]]
) -> None:
    """Refuse attributes not in ``allowed`` or whose value fails its check."""
    for key, value in attrs.items():
        check = allowed.get(key)
        if check is None:
            raise ValueError(
                f"{_where(node)} has attribute {key}={value!r}, which this network does not use"
            )
        if not check(value):
            raise ValueError(f"{_where(node)} has unsupported {key}={value!r}")


def _ones(v: object) -> bool:
    return isinstance(v, list) and all(x == 1 for x in v)


#: What an ``OnnxNetwork._op_*`` builder returns: the step's function and the tensors it reads.
_Step = tuple[Callable[..., tf.Tensor], list[str]]


class OnnxNetwork:
    """An ONNX graph of :data:`ALLOWED_OPS` rebuilt as TensorFlow ops on NHWC tensors.

    Args:
        model: the parsed model; its graph must have one float input ``(N, C, H, W)`` besides the
            initializers, and one output.

    Raises:
        ValueError: an op outside :data:`ALLOWED_OPS`, an unsupported attribute value, a weight
            stored outside the file, or an input no node produces; the message names the node.

    Calling the network on ``(N, H, W, C)`` float32 tensors returns the graph's output; it is
    differentiable and may be called eagerly or inside a ``tf.function``.
    """

    def __init__(self, model: onnx.ModelProto) -> None:
        graph = model.graph
        if len(model.functions) or len(graph.sparse_initializer):
            raise ValueError(
                "the ONNX model carries local functions or sparse initializers; SFace has none"
            )
        consts: dict[str, np.ndarray] = {}
        for init in graph.initializer:
            if init.data_location == onnx.TensorProto.EXTERNAL:
                raise ValueError(
                    f"initializer {init.name!r} is stored outside the file; refusing external data"
                )
            consts[init.name] = numpy_helper.to_array(init)
        inputs = [i.name for i in graph.input if i.name not in consts]
        if len(inputs) != 1 or len(graph.output) != 1:
            raise ValueError(
                f"the graph has inputs {inputs} and {len(graph.output)} outputs besides its weights; "
                "expected one image input and one output"
            )
        self.input_name = inputs[0]
        self.output_name = graph.output[0].name
        self.variables: list[tf.Variable] = []
        # Each step: (function of the tensors it reads, names of those tensors, name of its output).
        self._steps: list[tuple[Callable[..., tf.Tensor], list[str], str]] = []
        produced = {self.input_name}
        for node in graph.node:
            if node.op_type not in ALLOWED_OPS:
                raise ValueError(
                    f"{_where(node)}: op {node.op_type!r} is not one of {sorted(ALLOWED_OPS)}; refusing the model"
                )
            if node.domain not in ("", "ai.onnx"):
                raise ValueError(
                    f"{_where(node)} is in op domain {node.domain!r}; only the default domain is accepted"
                )
            build = getattr(self, f"_op_{node.op_type}")
            fn, reads = build(node, _attrs(node), consts)
            missing = [name for name in reads if name not in produced]
            if missing:
                raise ValueError(f"{_where(node)} reads {missing}, which no earlier node produces")
            self._steps.append((fn, reads, node.output[0]))
            produced.add(node.output[0])
        if self.output_name not in produced:
            raise ValueError(f"no node produces the graph output {self.output_name!r}")

    # ---- helpers -------------------------------------------------------------------------------

    def _frozen(self, value: np.ndarray, name: str) -> tf.Variable:
        var = tf.Variable(
            np.asarray(value, np.float32), trainable=False, name=name.replace("/", "_")
        )
        self.variables.append(var)
        return var

    @staticmethod
    def _const(node: onnx.NodeProto, consts: dict[str, np.ndarray], index: int) -> np.ndarray:
        if index >= len(node.input) or node.input[index] not in consts:
            raise ValueError(f"{_where(node)}: input {index} must be a weight stored in the file")
        return consts[node.input[index]]

    @staticmethod
    def _channel_vector(node: onnx.NodeProto, value: np.ndarray, what: str) -> np.ndarray:
        """A per-channel parameter stored ``(C,)`` or ``(C, 1, 1)`` (NCHW), as ``(C,)`` for NHWC."""
        if value.ndim == 0 or value.size != value.shape[0]:
            raise ValueError(
                f"{_where(node)}: {what} has shape {value.shape}; expected (C,) or (C, 1, 1)"
            )
        return value.reshape(-1)

    # ---- ops -----------------------------------------------------------------------------------

    def _elementwise(
        self,
        node: onnx.NodeProto,
        attrs: dict[str, object],
        consts: dict[str, np.ndarray],
        op: Callable[[tf.Tensor, float], tf.Tensor],
    ) -> _Step:
        _check_attrs(node, attrs, {})
        if len(node.input) != 2:
            raise ValueError(f"{_where(node)} has {len(node.input)} inputs; expected 2")
        value = self._const(node, consts, 1)
        if value.size != 1:
            raise ValueError(
                f"{_where(node)}: second input has shape {value.shape}; only a scalar is accepted"
            )
        scalar = float(value.reshape(()))
        return (lambda x: op(x, scalar)), [node.input[0]]

    def _op_Sub(  # noqa: N802 (ONNX op names)
        self, node: onnx.NodeProto, attrs: dict[str, object], consts: dict[str, np.ndarray]
    ) -> _Step:
        return self._elementwise(node, attrs, consts, lambda x, s: x - s)

    def _op_Mul(  # noqa: N802
        self, node: onnx.NodeProto, attrs: dict[str, object], consts: dict[str, np.ndarray]
    ) -> _Step:
        return self._elementwise(node, attrs, consts, lambda x, s: x * s)

    def _op_Conv(  # noqa: N802
        self, node: onnx.NodeProto, attrs: dict[str, object], consts: dict[str, np.ndarray]
    ) -> _Step:
        _check_attrs(node, attrs, {
            "dilations": _ones,
            "strides": lambda v: isinstance(v, list) and len(v) == 2 and all(s >= 1 for s in v),
            "kernel_shape": lambda v: isinstance(v, list) and len(v) == 2,
            "group": lambda v: isinstance(v, int) and v >= 1,
            "pads": lambda v: isinstance(v, list) and len(v) == 4 and v[:2] == v[2:] and min(v) >= 0,
            "auto_pad": lambda v: v in (b"NOTSET", "NOTSET"),
        })  # fmt: skip
        weight = self._const(node, consts, 1)  # (out, in / group, kh, kw)
        if weight.ndim != 4:
            raise ValueError(f"{_where(node)}: weight has shape {weight.shape}; expected 4-D")
        out_ch, in_per_group, kh, kw = weight.shape
        if list(cast(list[int], attrs.get("kernel_shape", [kh, kw]))) != [kh, kw]:
            raise ValueError(
                f"{_where(node)}: kernel_shape {attrs['kernel_shape']} disagrees with weight {weight.shape}"
            )
        group = int(cast(int, attrs.get("group", 1)))
        strides = [1, *cast(list[int], attrs.get("strides", [1, 1])), 1]
        pad_h, pad_w = list(cast(list[int], attrs.get("pads", [0, 0, 0, 0])))[:2]
        padding = [[0, 0], [pad_h, pad_h], [pad_w, pad_w], [0, 0]]
        bias = (
            self._frozen(self._const(node, consts, 2), node.input[2])
            if len(node.input) > 2 and node.input[2]
            else None
        )
        if group == 1:
            kernel = self._frozen(weight.transpose(2, 3, 1, 0), node.input[1])  # (kh, kw, in, out)

            def conv(x: tf.Tensor) -> tf.Tensor:
                return tf.nn.conv2d(x, kernel, strides, padding)
        elif in_per_group == 1 and out_ch == group:
            kernel = self._frozen(weight.transpose(2, 3, 0, 1), node.input[1])  # (kh, kw, C, 1)

            def conv(x: tf.Tensor) -> tf.Tensor:
                return tf.nn.depthwise_conv2d(tf.pad(x, padding), kernel, strides, "VALID")
        else:
            raise ValueError(
                f"{_where(node)}: group={group} with weight {weight.shape} is a grouped convolution; "
                "only group=1 and depthwise (group == channels) are supported"
            )
        if bias is None:
            return conv, [node.input[0]]
        return (lambda x: conv(x) + bias), [node.input[0]]

    def _op_BatchNormalization(  # noqa: N802
        self, node: onnx.NodeProto, attrs: dict[str, object], consts: dict[str, np.ndarray]
    ) -> _Step:
        _check_attrs(node, attrs, {
            "epsilon": lambda v: isinstance(v, float) and v >= 0,
            "momentum": lambda v: isinstance(v, float),  # a training parameter; unused at inference
            "spatial": lambda v: v == 1,
            "is_test": lambda v: v == 1,
            "training_mode": lambda v: v == 0,
        })  # fmt: skip
        if len(node.output) != 1:
            raise ValueError(f"{_where(node)} has {len(node.output)} outputs; inference mode has 1")
        gamma, beta, mean, var = (self._channel_vector(node, self._const(node, consts, i), n)
                                  for i, n in ((1, "scale"), (2, "bias"), (3, "mean"), (4, "var")))  # fmt: skip
        eps = float(cast(float, attrs.get("epsilon", 1e-5)))
        scale64 = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
        scale = self._frozen(scale64, node.name + "_scale")
        shift = self._frozen(beta - mean * scale64, node.name + "_shift")
        # NHWC and (N, C) both have the channels last.
        return (lambda x: x * scale + shift), [node.input[0]]

    def _op_PRelu(  # noqa: N802
        self, node: onnx.NodeProto, attrs: dict[str, object], consts: dict[str, np.ndarray]
    ) -> _Step:
        _check_attrs(node, attrs, {})
        slope = self._frozen(
            self._channel_vector(node, self._const(node, consts, 1), "slope"), node.input[1]
        )
        site = f"sface/{node.name or node.output[0]}"

        def prelu(x: tf.Tensor) -> tf.Tensor:
            y = tf.maximum(x, 0.0) + slope * tf.minimum(x, 0.0)
            # a dropout site of surrogate augmentation (feature maps only, not the embedding)
            return drop(y, site, SFACE_SCALE) if y.shape.rank == 4 else y

        return prelu, [node.input[0]]

    def _op_Dropout(  # noqa: N802
        self, node: onnx.NodeProto, attrs: dict[str, object], consts: dict[str, np.ndarray]
    ) -> _Step:
        _check_attrs(node, attrs, {"ratio": lambda v: isinstance(v, float), "seed": lambda v: True,
                                   "is_test": lambda v: v == 1})  # fmt: skip
        if len(node.input) > 1 and any(node.input[1:]):
            raise ValueError(
                f"{_where(node)} has ratio/training_mode inputs; only the plain inference form is accepted"
            )
        return tf.identity, [node.input[0]]

    def _op_Flatten(  # noqa: N802
        self, node: onnx.NodeProto, attrs: dict[str, object], consts: dict[str, np.ndarray]
    ) -> _Step:
        _check_attrs(node, attrs, {"axis": lambda v: v == 1})

        def flatten(x: tf.Tensor) -> tf.Tensor:
            if x.shape.rank == 4:  # flatten in ONNX's (C, H, W) order
                x = tf.transpose(x, [0, 3, 1, 2])
            return tf.reshape(x, [tf.shape(x)[0], -1])

        return flatten, [node.input[0]]

    def _op_Gemm(  # noqa: N802
        self, node: onnx.NodeProto, attrs: dict[str, object], consts: dict[str, np.ndarray]
    ) -> _Step:
        _check_attrs(node, attrs, {"alpha": lambda v: v == 1.0, "beta": lambda v: v == 1.0,
                                   "transA": lambda v: v == 0, "transB": lambda v: v in (0, 1)})  # fmt: skip
        weight = self._const(node, consts, 1)
        if weight.ndim != 2:
            raise ValueError(f"{_where(node)}: weight has shape {weight.shape}; expected 2-D")
        if attrs.get("transB", 0) == 1:
            weight = weight.T
        matrix = self._frozen(weight, node.input[1])  # (in, out)
        bias = (
            self._frozen(self._const(node, consts, 2), node.input[2])
            if len(node.input) > 2
            else None
        )
        if bias is None:
            return (lambda x: tf.matmul(x, matrix)), [node.input[0]]
        return (lambda x: tf.matmul(x, matrix) + bias), [node.input[0]]

    def __call__(self, images: tf.Tensor) -> tf.Tensor:
        """Run the graph on ``(N, H, W, C)`` float32 ``images``; returns the graph output."""
        env = {self.input_name: images}
        for fn, reads, out in self._steps:
            env[out] = fn(*(env[name] for name in reads))
        return env[self.output_name]


class SFaceModel(EmbeddingModel):
    """SFace (OpenCV Zoo ``face_recognition_sface_2021dec.onnx``), rebuilt in TensorFlow.

    Args:
        model_path: the ONNX file; default :func:`faceoff.common.assets.path` ``("sface")``. The bytes
            that are parsed are the bytes whose SHA-256 is checked against the asset's, whichever
            path is given.
        window: where the network's 112x112 input lies inside the 160x160 crop; default
            :data:`WINDOW`.

    Raises:
        faceoff.common.assets.AssetError: the file is missing or its SHA-256 is wrong.
        ValueError: the graph is not a network :class:`OnnxNetwork` accepts, or not SFace's shape.

    :meth:`embed` returns **L2-normalised** 128-D embeddings (SFace features are compared by cosine
    similarity, so Euclidean distances between them order pairs the same way).
    """

    name = "sface"

    def __init__(self, model_path: Path | None = None, window: Window = WINDOW) -> None:
        from faceoff.common import assets

        self.model_path = Path(model_path) if model_path is not None else assets.path("sface")
        data = assets.read_verified("sface", self.model_path)
        model = parse_model(data)
        del data
        self.network = OnnxNetwork(model)
        if (self.network.input_name, self.network.output_name) != (INPUT_NAME, OUTPUT_NAME):
            raise ValueError(
                f"the graph maps {self.network.input_name!r} -> {self.network.output_name!r}; "
                f"expected SFace's {INPUT_NAME!r} -> {OUTPUT_NAME!r}"
            )
        self.window = window
        self._crop = WindowCrop(window, INPUT_SIZE, NETWORK_SIZE)
        self._embed_compiled: Callable[[tf.Tensor], tf.Tensor] | None = None

    #: Side length of the square input: 160 px (the masker's crops); length of the embedding: 128.
    input_size = INPUT_SIZE
    embedding_dim = EMBEDDING_DIM

    def preprocess(self, images01: tf.Tensor) -> tf.Tensor:
        """Cut :attr:`window` out of ``(N, 160, 160, 3)`` crops in [0, 1]; ``(N, 112, 112, 3)`` RGB 0..255.

        A bilinear crop-and-resize (differentiable with respect to the pixels), the crop's edge
        pixels repeated where the window reaches outside it; the graph's own
        first two nodes then normalise to ``(x - 127.5) / 128``.
        """
        return self._crop(images01) * 255.0

    def features(self, images112: tf.Tensor) -> tf.Tensor:
        """Raw (unnormalised) SFace features of ``(N, 112, 112, 3)`` RGB images in 0..255.

        What ``cv2.FaceRecognizerSF.feature`` returns for the same image (given BGR to OpenCV).
        """
        return self.network(tf.cast(images112, tf.float32))

    aligned = True

    def embed_aligned(self, images01: tf.Tensor, align: tf.Tensor) -> tf.Tensor:
        """:meth:`embed` with :attr:`window` read through each face's alignment ``(N, 6)`` (see
        :mod:`faceoff.faces.alignment`): the face as ``alignCrop`` would place it from the
        landmarks the alignment was computed from."""
        crops = self._crop.aligned(images01, align)
        return tf.math.l2_normalize(self.features(crops * 255.0), axis=-1, epsilon=1e-12)

    def embed(self, images01: tf.Tensor, training: bool = False) -> tf.Tensor:
        """L2-normalised ``(N, 128)`` embeddings of ``(N, 160, 160, 3)`` crops in [0, 1].

        Differentiable with respect to ``images01``; may be called eagerly or inside a
        ``tf.function``. ``training`` is accepted for the interface and ignored (batch norms run
        in inference mode and dropout is the identity).
        """
        return tf.math.l2_normalize(
            self.features(self.preprocess(images01)), axis=-1, epsilon=1e-12
        )
