"""A surrogate that takes a larger crop and sees it through an anti-aliased resize.

The attack can then work on the face region at (close to) its own resolution: the perturbation
is a change of the photo's pixels, and the surrogate sees the crop as any recogniser would,
shrunk to its input with an anti-aliased (area-weighted) bilinear filter. The resize is
differentiable, so gradients reach every pixel of the larger crop.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from faceoff.faces.models.base import EmbeddingModel


class Resized(EmbeddingModel):
    """``model`` with input side ``size``: ``embed(x) = model.embed(resize(x, model.input_size))``.

    Args:
        model: The surrogate (or ensemble).
        size: Side of the square crops this wrapper takes, at least the model's own.

    Distances, normalisation and the embedding space are the model's.
    """

    def __init__(self, model: EmbeddingModel, size: int) -> None:
        if size < model.input_size:
            raise ValueError(f"size must be at least the model's {model.input_size}, got {size}")
        self.model = model
        self.size = int(size)
        self.name = model.name

    @property
    def input_size(self) -> int:
        return self.size

    @property
    def embedding_dim(self) -> int:
        return self.model.embedding_dim

    def shrink(self, images01: tf.Tensor) -> tf.Tensor:
        """``(N, size, size, 3)`` -> the model's ``(N, S, S, 3)``, anti-aliased, differentiable."""
        if self.size == self.model.input_size:
            return images01
        side = self.model.input_size
        return tf.image.resize(images01, [side, side], method="bilinear", antialias=True)

    def preprocess(self, images01: tf.Tensor) -> tf.Tensor:
        return self.model.preprocess(self.shrink(images01))

    def embed(self, images01: tf.Tensor, training: bool = False) -> tf.Tensor:
        return self.model.embed(self.shrink(images01), training=training)

    @property
    def aligned(self) -> bool:  # type: ignore[override]
        return self.model.aligned

    def embed_aligned(self, images01: tf.Tensor, align: tf.Tensor) -> tf.Tensor:
        # alignments are in normalised crop coordinates: the same at any size
        return self.model.embed_aligned(self.shrink(images01), align)

    def parts_aligned(self, images01: tf.Tensor, align: tf.Tensor) -> list[tf.Tensor]:
        return self.model.parts_aligned(self.shrink(images01), align)

    @property
    def segments(self) -> tuple[tuple[int, int], ...]:
        return self.model.segments

    @property
    def shares(self) -> tuple[float, ...]:
        return self.model.shares

    def distance(self, u: tf.Tensor) -> tf.Tensor:
        return self.model.distance(u)

    def distance_numpy(self, u: np.ndarray) -> np.ndarray:
        return self.model.distance_numpy(u)

    def normalise_numpy(self, v: np.ndarray) -> np.ndarray:
        return self.model.normalise_numpy(v)
