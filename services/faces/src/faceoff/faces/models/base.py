"""The interface every surrogate embedding model implements.

Attacks and losses depend on this interface only, never on one network, so that more surrogates
(an ensemble, another architecture family) can be added without touching the attack code.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

#: Added under the square root of every embedding distance, so the gradient is finite at 0.
DISTANCE_SMOOTHING = 1e-12


def smooth_l2(u: tf.Tensor, axis: int = -1) -> tf.Tensor:
    """The Euclidean norm of ``u`` along ``axis``, smoothed to have a finite gradient at 0."""
    return tf.sqrt(tf.reduce_sum(tf.square(u), axis=axis) + DISTANCE_SMOOTHING)


class EmbeddingModel(abc.ABC):
    """A differentiable face embedding f: images -> R^D.

    Images enter as float32 tensors of shape ``(N, S, S, 3)`` with RGB values in ``[0, 1]``
    where ``S == input_size``. :meth:`embed` applies the model's own preprocessing (for FaceNet,
    per-image standardisation) inside the graph so that gradients flow back to the [0, 1] pixels
    the attacks perturb.
    """

    #: Short name used in receipts and benchmark output (e.g. ``"facenet"``).
    name: str = "embedding"

    # A model of fixed sizes declares both as class attributes (``input_size = 160``); one whose
    # sizes follow its parts (an ensemble, a resized view) as properties.

    @property
    @abc.abstractmethod
    def input_size(self) -> int:
        """Side length S of the square input, in pixels."""

    @property
    @abc.abstractmethod
    def embedding_dim(self) -> int:
        """Length D of the embedding vector."""

    @abc.abstractmethod
    def preprocess(self, images01: tf.Tensor) -> tf.Tensor:
        """Map ``(N, S, S, 3)`` images in [0, 1] to the network's input (differentiable)."""

    @abc.abstractmethod
    def embed(self, images01: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Return ``(N, D)`` embeddings of ``(N, S, S, 3)`` images in [0, 1] (differentiable)."""

    @property
    def segments(self) -> tuple[tuple[int, int], ...]:
        """Where each surrogate's part of an embedding lies, as ``(start, end)`` column ranges:
        the whole vector for one model; one range per member for an ensemble."""
        return ((0, self.embedding_dim),)

    @property
    def shares(self) -> tuple[float, ...]:
        """Each part's weight in :meth:`distance` (summing to 1), in :attr:`segments`' order."""
        return (1.0,)

    #: Whether the model reads its input through each face's alignment
    #: (:mod:`faceoff.faces.alignment`): True for networks trained on landmark-aligned faces.
    aligned: bool = False

    def embed_aligned(self, images01: tf.Tensor, align: tf.Tensor) -> tf.Tensor:
        """:meth:`embed` of faces with their alignments ``(N, 6)`` (see
        :mod:`faceoff.faces.alignment`). A model that is not :attr:`aligned` sees the crop as it
        is; an aligned one overrides this to read its window through each face's alignment."""
        del align
        return self.embed(images01)

    def parts_aligned(self, images01: tf.Tensor, align: tf.Tensor) -> list[tf.Tensor]:
        """:meth:`embed_aligned`'s :attr:`segments` as separate tensors, one per surrogate.

        Here, slices of the whole embedding. An ensemble overrides this with each member's own
        embedding, so that differentiating one part reaches only its own network: a slice of the
        concatenation carries zeros back through every other member's network too.
        """
        embeddings = self.embed_aligned(images01, align)
        if len(self.segments) == 1:
            return [embeddings]
        return [embeddings[:, a:b] for a, b in self.segments]

    def distance(self, u: tf.Tensor) -> tf.Tensor:
        """Distance ``(...)`` represented by difference vectors ``u`` ``(..., D)`` (differentiable).

        The smoothed Euclidean norm; an ensemble (:class:`~faceoff.faces.models.ensemble.Ensemble`)
        overrides it with the weighted mean of its members' distances.
        """
        return smooth_l2(u)

    def distance_numpy(self, u: np.ndarray) -> np.ndarray:
        """:meth:`distance` of ``(..., D)`` difference vectors, in numpy (float64)."""
        distances: np.ndarray = np.linalg.norm(np.asarray(u, np.float64), axis=-1)
        return distances

    def normalise_numpy(self, v: np.ndarray) -> np.ndarray:
        """``v`` ``(D,)`` scaled to the model's embedding sphere (unit length), e.g. a centroid."""
        v = np.asarray(v, np.float64)
        return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)

    def embed_numpy(
        self,
        images01: np.ndarray | Sequence[np.ndarray],
        batch_size: int = 32,
        align: np.ndarray | None = None,
    ) -> np.ndarray:
        """Embed ``(N, S, S, 3)`` images in [0, 1] in compiled chunks; returns float32 ``(N, D)``.

        For evaluation and enrolment, where no gradient is needed. Calling :meth:`embed` eagerly
        dispatches a deep graph op by op; this wraps it in one ``tf.function``. With ``align``
        ``(N, 6)``, each face is embedded through its alignment (:meth:`embed_aligned`).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size is {batch_size}; it must be at least 1")
        arr = np.asarray(images01, dtype=np.float32)
        size = self.input_size
        if arr.ndim != 4 or arr.shape[1:] != (size, size, 3):
            raise ValueError(f"images01 has shape {arr.shape}; expected (N, {size}, {size}, 3)")
        if align is not None:
            return self._embed_aligned_numpy(arr, np.asarray(align, np.float32), batch_size)
        compiled = getattr(self, "_embed_compiled", None)
        if compiled is None:
            # traced once, for any number of images (a trace per batch shape would round
            # differently from the general one, and cost a trace per reference-set size)
            compiled = tf.function(
                self.embed,
                input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)],
                autograph=False,  # no data-dependent Python control flow; converting costs seconds
            )
            self._embed_compiled = compiled
        out = np.zeros((len(arr), self.embedding_dim), np.float32)
        for i in range(0, len(arr), batch_size):
            out[i : i + batch_size] = compiled(tf.constant(arr[i : i + batch_size]))
        return out

    def _embed_aligned_numpy(
        self, arr: np.ndarray, align: np.ndarray, batch_size: int
    ) -> np.ndarray:
        if align.shape != (len(arr), 6) or not np.all(np.isfinite(align)):
            raise ValueError(f"align has shape {align.shape}; expected ({len(arr)}, 6), finite")
        compiled = getattr(self, "_embed_aligned_compiled", None)
        if compiled is None:
            size = self.input_size
            compiled = tf.function(
                self.embed_aligned,
                input_signature=[
                    tf.TensorSpec([None, size, size, 3], tf.float32),
                    tf.TensorSpec([None, 6], tf.float32),
                ],
                autograph=False,
            )
            self._embed_aligned_compiled = compiled
        out = np.zeros((len(arr), self.embedding_dim), np.float32)
        for i in range(0, len(arr), batch_size):
            part = slice(i, i + batch_size)
            out[part] = compiled(tf.constant(arr[part]), tf.constant(align[part]))
        return out
