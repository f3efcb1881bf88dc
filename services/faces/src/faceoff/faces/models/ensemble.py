"""An ensemble of surrogates that the attacks treat as one embedding model.

Attacks transfer better when they fool several models at once (Liu et al., ICLR 2017). The
ensemble's embedding is the concatenation of its members' (each L2-normalised), and its
distance between two such vectors is the weighted mean of the members' distances::

    d(u) = sum_i w_i * ||u_i||_2 / sum_i w_i        (u_i: member i's part of u)

so the paper's mean distance d'(x, A) = mean_a d(f(x) - f(a)) is the weighted mean of the
members' d', and the target loss -d' is the weighted sum of the members' target losses (up to
the constant 1 / sum w). Distances stay in [0, 2] like a single normalised model's, so the
thresholds and margins of :mod:`faceoff.masker.attacks.losses` keep their meaning. The hinge
loss is taken on the combined distances (one hinge), not summed over members.

Members must share the input size; each applies its own preprocessing in :meth:`embed`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from faceoff.faces.models.base import EmbeddingModel, smooth_l2


class Ensemble(EmbeddingModel):
    """Several surrogates as one :class:`EmbeddingModel` (see the module docstring).

    Args:
        members: Two or more models with the same ``input_size``.
        weights: One weight > 0 per member (default: equal weights).

    Raises:
        ValueError: Fewer than two members, mismatched input sizes, or bad weights.
    """

    def __init__(
        self, members: Sequence[EmbeddingModel], weights: Sequence[float] | None = None
    ) -> None:
        members = tuple(members)
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least two members, got {len(members)}")
        sizes = {m.input_size for m in members}
        if len(sizes) != 1:
            raise ValueError(f"ensemble members must share the input size; got {sorted(sizes)}")
        weights = tuple(
            float(w) for w in (weights if weights is not None else [1.0] * len(members))
        )
        if len(weights) != len(members) or not all(np.isfinite(w) and w > 0 for w in weights):
            raise ValueError(
                f"weights must be one finite number > 0 per member ({len(members)}), got {list(weights)}"
            )
        self.members = members
        self.weights = weights
        self.name = "+".join(m.name for m in members)
        bounds = np.cumsum([0] + [m.embedding_dim for m in members])
        self._segments = tuple((int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]))
        self._share = tuple(w / sum(weights) for w in weights)

    @property
    def segments(self) -> tuple[tuple[int, int], ...]:
        """Each member's columns of the ensemble's embedding."""
        return self._segments

    @property
    def shares(self) -> tuple[float, ...]:
        """Each member's weight divided by the sum of the weights."""
        return self._share

    @property
    def input_size(self) -> int:
        return self.members[0].input_size

    @property
    def embedding_dim(self) -> int:
        return self.segments[-1][1]

    def preprocess(self, images01: tf.Tensor) -> tf.Tensor:
        """The identity: each member preprocesses its own copy in :meth:`embed`."""
        return images01

    def embed(self, images01: tf.Tensor, training: bool = False) -> tf.Tensor:
        """``(N, sum D_i)``: the members' embeddings side by side."""
        return tf.concat([m.embed(images01, training=training) for m in self.members], axis=-1)

    @property
    def aligned(self) -> bool:  # type: ignore[override]
        """Whether any member reads its input through the faces' alignments."""
        return any(m.aligned for m in self.members)

    def embed_aligned(self, images01: tf.Tensor, align: tf.Tensor) -> tf.Tensor:
        """``(N, sum D_i)``: each member's :meth:`~EmbeddingModel.embed_aligned`."""
        return tf.concat(self.parts_aligned(images01, align), axis=-1)

    def parts_aligned(self, images01: tf.Tensor, align: tf.Tensor) -> list[tf.Tensor]:
        """Each member's :meth:`~EmbeddingModel.embed_aligned`, in :attr:`segments`' order."""
        return [m.embed_aligned(images01, align) for m in self.members]

    def distance(self, u: tf.Tensor) -> tf.Tensor:
        """Weighted mean of the members' smoothed L2 norms of their parts of ``u``."""
        parts = [
            share * smooth_l2(u[..., a:b]) for share, (a, b) in zip(self._share, self.segments)
        ]
        return tf.add_n(parts)

    def distance_numpy(self, u: np.ndarray) -> np.ndarray:
        u = np.asarray(u, np.float64)
        distances: np.ndarray = sum(
            share * np.linalg.norm(u[..., a:b], axis=-1)
            for share, (a, b) in zip(self._share, self.segments)
        )
        return distances

    def normalise_numpy(self, v: np.ndarray) -> np.ndarray:
        """Each member's part of ``v`` scaled to unit length."""
        v = np.asarray(v, np.float64).copy()
        for a, b in self.segments:
            v[a:b] /= max(float(np.linalg.norm(v[a:b])), 1e-12)
        return v.astype(np.float32)

    def split(self, embeddings: np.ndarray) -> list[np.ndarray]:
        """The members' parts of ``(..., D)`` ensemble embeddings."""
        return [np.asarray(embeddings)[..., a:b] for a, b in self.segments]
