"""A per-process cache of compiled (``tf.function``) steps, keyed by surrogate model.

Every numeric hyper-parameter and every per-batch tensor enters a compiled step as an argument,
so one trace per (model, attack class, loss class) serves all requests; retracing the gradient
graph of a large surrogate costs seconds, and attacks are built per request.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Hashable
from typing import Any

from faceoff.faces.models.base import EmbeddingModel

_cache_lock = threading.Lock()
_cache: dict[int, tuple[Callable[[], Any], dict[Hashable, Any]]] = {}


def compiled(
    model: EmbeddingModel, key: Hashable, build: Callable[[Callable[[], Any]], Any]
) -> Any:
    """Return the function ``build(model_ref)`` cached for ``(model, key)``, building it once.

    ``build`` receives a zero-argument callable returning the model (a weak reference where the
    model allows one), so that the cache does not keep a discarded model alive.
    """
    with _cache_lock:
        entry = _cache.get(id(model))
        if entry is None or entry[0]() is not model:
            entry = (_model_ref(model), {})
            _cache[id(model)] = entry
        functions = entry[1]
        if key not in functions:
            functions[key] = build(entry[0])
        return functions[key]


def _model_ref(model: EmbeddingModel) -> Callable[[], Any]:
    key = id(model)

    def forget(ref: object) -> None:
        with _cache_lock:
            if key in _cache and _cache[key][0] is ref:
                del _cache[key]

    try:
        return weakref.ref(model, forget)
    except TypeError:  # a model class without weak-reference support: keep it alive
        return lambda: model
