"""Embedding models the attacks run on (surrogates), behind :class:`EmbeddingModel`."""

from faceoff.masker.models.base import EmbeddingModel

__all__ = ["EmbeddingModel"]
