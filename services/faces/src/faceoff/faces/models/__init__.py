"""Embedding models the attacks run on (surrogates), behind :class:`EmbeddingModel`.

:func:`load_surrogate` builds a registered surrogate by name with its verified default weights;
adding a surrogate means adding one entry to ``_SURROGATES``.
"""

from __future__ import annotations

from collections.abc import Callable

from faceoff.faces.models.base import EmbeddingModel

__all__ = ["SURROGATES", "EmbeddingModel", "load_surrogate"]


def _facenet() -> EmbeddingModel:
    from faceoff.faces.models.facenet import FaceNet

    return FaceNet()


def _facenet512() -> EmbeddingModel:
    from faceoff.faces.models.facenet512 import FaceNet512

    return FaceNet512()


def _sface() -> EmbeddingModel:
    from faceoff.faces.models.sface import SFaceModel

    return SFaceModel()


def _faceres() -> EmbeddingModel:
    from faceoff.faces.models.faceres import FaceRes

    return FaceRes()


def _mobileface() -> EmbeddingModel:
    from faceoff.faces.models.mobileface import MobileFace

    return MobileFace()


# Factories import their module lazily so that importing this package stays cheap.
_SURROGATES: dict[str, Callable[[], EmbeddingModel]] = {
    "facenet": _facenet,
    "facenet512": _facenet512,
    "sface": _sface,
    "faceres": _faceres,
    "mobileface": _mobileface,
}

#: Names :func:`load_surrogate` accepts.
SURROGATES: tuple[str, ...] = tuple(sorted(_SURROGATES))


def load_surrogate(name: str = "facenet") -> EmbeddingModel:
    """Build the surrogate ``name`` with its default weights from the model cache.

    Raises:
        ValueError: ``name`` is not registered (the message lists those that are).
        faceoff.common.assets.AssetError: the weights are missing or fail their SHA-256 check.
    """
    try:
        factory = _SURROGATES[name]
    except KeyError:
        raise ValueError(
            f"unknown surrogate {name!r}; registered surrogates: {', '.join(SURROGATES)}"
        ) from None
    return factory()
