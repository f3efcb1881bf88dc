"""Local recognisers, behind :class:`~faceoff.faces.recognizers.base.Recognizer`.

:func:`get_local` returns the process-wide instance of a local recogniser by name, so that each
model is loaded once per process however many servers, evaluators or tests ask for it. Adding a
recogniser means adding one entry to ``_LOCAL``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from faceoff.common.errors import InvalidOption
from faceoff.faces.recognizers.base import (
    EmbeddingRecognizer,
    FacePhoto,
    IdentityScore,
    Recognizer,
    Verification,
)

__all__ = [
    "DEFAULT_LOCAL_RECOGNIZERS",
    "LOCAL_RECOGNIZERS",
    "EmbeddingRecognizer",
    "FacePhoto",
    "IdentityScore",
    "Recognizer",
    "Verification",
    "get_local",
]


def _dlib() -> EmbeddingRecognizer:
    from faceoff.faces.recognizers.dlib_resnet import DlibRecognizer

    return DlibRecognizer()


def _sface() -> EmbeddingRecognizer:
    from faceoff.faces.recognizers.sface import SFaceRecognizer

    return SFaceRecognizer()


def _facenet() -> EmbeddingRecognizer:
    from faceoff.faces.recognizers.facenet import FaceNetRecognizer

    return FaceNetRecognizer()


def _facenet512() -> EmbeddingRecognizer:
    from faceoff.faces.recognizers.facenet512 import FaceNet512Recognizer

    return FaceNet512Recognizer()


def _mobilefacenet() -> EmbeddingRecognizer:
    from faceoff.faces.recognizers.mobilefacenet import MobileFaceNetRecognizer

    return MobileFaceNetRecognizer()


# Factories import their module lazily: importing this package loads no model library.
_LOCAL: dict[str, Callable[[], EmbeddingRecognizer]] = {
    "dlib": _dlib,
    "sface": _sface,
    "facenet": _facenet,
    "facenet512": _facenet512,
    "mobilefacenet": _mobilefacenet,
}

#: Names of the local recognisers, in the order they are reported.
LOCAL_RECOGNIZERS: tuple[str, ...] = ("dlib", "sface", "facenet", "facenet512", "mobilefacenet")
#: The local recognisers an evaluator runs when not told which. ``facenet512`` runs only when
#: named: it is a second FaceNet, and loading it costs every evaluator start its memory and time.
#: ``mobilefacenet`` (an independent judge: no surrogate shares its model) runs only when named,
#: so that the default verdicts stay those the published figures were measured with.
DEFAULT_LOCAL_RECOGNIZERS: tuple[str, ...] = ("dlib", "sface", "facenet")

_instances: dict[str, EmbeddingRecognizer] = {}
_instances_lock = threading.Lock()


def get_local(name: str) -> EmbeddingRecognizer:
    """The process-wide instance of local recogniser ``name`` (models load on first use or ``load()``).

    Raises:
        InvalidOption: ``name`` is not a local recogniser (the message lists those that are).
    """
    if name not in _LOCAL:
        raise InvalidOption(
            f"unknown local recogniser {name!r}; accepted: {', '.join(LOCAL_RECOGNIZERS)}"
        )
    with _instances_lock:
        if name not in _instances:
            _instances[name] = _LOCAL[name]()
        return _instances[name]
