"""The interface every surrogate embedding model implements.

Attacks and losses depend on this interface only, never on one network, so that more surrogates
(an ensemble, another architecture family) can be added without touching the attack code.
"""

from __future__ import annotations

import abc

import tensorflow as tf


class EmbeddingModel(abc.ABC):
    """A differentiable face embedding f: images -> R^D.

    Images enter as float32 tensors of shape ``(N, S, S, 3)`` with RGB values in ``[0, 1]``
    where ``S == input_size``. :meth:`embed` applies the model's own preprocessing (for FaceNet,
    per-image standardisation) inside the graph so that gradients flow back to the [0, 1] pixels
    the attacks perturb.
    """

    #: Short name used in receipts and benchmark output (e.g. ``"facenet"``).
    name: str = "embedding"

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
