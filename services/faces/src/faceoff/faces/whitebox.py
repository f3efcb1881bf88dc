"""Which recognisers a protection has seen: the one white-box rule.

A recogniser's verdict on a protected photo says something about privacy only when the
protection never had access to its model. A recogniser is **white-box** for a photo when the
embedding model it is built on was one of the surrogates the attack differentiated through, or
was consulted in the adaptive-amplification loop. Surrogate names and local recogniser names
are the same models (``facenet``, ``facenet512``, ``sface``), so the rule is a name lookup;
``dlib`` and the cloud APIs are never surrogates.

The masker reports the models a protection used (``ProtectOptions.surrogates`` and, with
adaptive amplification, ``loop_recognizers``); the evaluator is told them
(``EvaluateRequest.attacked_models``) and marks each verdict with :func:`is_white_box`. A caller
that does not say which models were attacked gets the default protection's.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from faceoff.v1 import masker_pb2, schema_pb2

#: The surrogates of the masker's default profile, as the contract declares them (``option
#: (profiles)`` on ProtectOptions): what an evaluation assumes was attacked when the caller does
#: not say. The masker's default profile takes its surrogates from the same declaration.
DEFAULT_ATTACKED_MODELS: tuple[str, ...] = tuple(
    masker_pb2.ProtectOptions.DESCRIPTOR.GetOptions()
    .Extensions[schema_pb2.profiles]
    .default_surrogates
)


def attacked_models(
    surrogates: Iterable[str], loop_recognizers: Iterable[str] = ()
) -> frozenset[str]:
    """The models a protection has seen: its surrogates and the recognisers its loop consulted.

    >>> sorted(attacked_models(["facenet", "sface"], ["dlib"]))
    ['dlib', 'facenet', 'sface']
    """
    return frozenset(surrogates) | frozenset(loop_recognizers)


def is_white_box(recognizer: str, attacked: Collection[str]) -> bool:
    """True when ``recognizer``'s model is among the ``attacked`` models (empty: the default's).

    >>> is_white_box("sface", ["facenet", "sface"])
    True
    >>> is_white_box("facenet", ["facenet512"])
    False
    >>> is_white_box("facenet", [])
    True
    """
    return recognizer in (attacked or DEFAULT_ATTACKED_MODELS)
