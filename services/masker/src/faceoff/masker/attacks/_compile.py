"""A per-process cache of compiled (``tf.function``) steps, keyed by surrogate model.

Every numeric hyper-parameter and every per-batch tensor enters a compiled step as an argument,
so one trace per (model, attack class, loss class) serves all requests; retracing the gradient
graph of a large surrogate costs seconds, and attacks are built per request.

Each step is traced once, with the dimensions that vary between requests left open (see
:func:`relaxed_spec`): the first call of a process traces the same general graph whatever its
batch, so a seed gives the same pixels in every process, and no second trace is ever made for
a new number of faces, references or identities.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Hashable
from typing import Any

import tensorflow as tf

from faceoff.faces.models.base import EmbeddingModel

_cache_lock = threading.Lock()
_cache: dict[int, tuple[Callable[[], Any], dict[Hashable, Any]]] = {}


def compiled(
    model: EmbeddingModel, key: Hashable, build: Callable[[Callable[[], Any]], Any]
) -> Any:
    """Return the function ``build(model_ref)`` cached for ``(model, key)``, building it once.

    ``build`` receives a zero-argument callable returning the model (a weak reference where the
    model allows one), so that the cache does not keep a discarded model alive. The function it
    returns (a ``tf.function``) is traced with relaxed shapes (:class:`Relaxed`).
    """
    with _cache_lock:
        entry = _cache.get(id(model))
        if entry is None or entry[0]() is not model:
            entry = (_model_ref(model), {})
            _cache[id(model)] = entry
        functions = entry[1]
        if key not in functions:
            functions[key] = Relaxed(build(entry[0]))
        return functions[key]


_relaxed_dims: dict[type, dict[str, int]] = {}


def relax_dims(named_tuple: type, **fields: int) -> None:
    """Say how many leading dimensions of ``named_tuple``'s fields are open (0: exact shape)."""
    _relaxed_dims[named_tuple] = dict(fields)


def relaxed_spec(value: Any, open_dims: int = 1) -> Any:
    """The ``tf.TensorSpec`` structure ``value`` is traced for: the batch dimension left open.

    A tensor's first ``open_dims`` dimensions (faces) are open. A ``NamedTuple`` of tensors may
    say otherwise for its fields with :func:`relax_dims` (how many leading dimensions are open,
    0 for an exact shape), e.g. the reference sets, whose identities and references per identity
    vary too, or a kernel whose shape is a setting. Scalars are exact.
    """
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        dims = _relaxed_dims.get(type(value), {})
        return type(value)(
            *(
                relaxed_spec(v, dims.get(name, 1))
                for name, v in zip(value._fields, value, strict=True)
            )
        )
    tensor = value if isinstance(value, tf.Tensor) else tf.convert_to_tensor(value)
    shape = tensor.shape.as_list()
    opened = min(open_dims, len(shape))
    return tf.TensorSpec([None] * opened + shape[opened:], tensor.dtype)


class Relaxed:
    """A ``tf.function`` whose first call for an argument structure traces its relaxed shapes.

    TensorFlow traces a function once per input shape and, with ``reduce_retracing``, once more
    with the shapes generalised. The specific and the general trace may round differently, so a
    process's results would depend on the shapes it saw first. Tracing the general signature
    (:func:`relaxed_spec`) before the first call makes every call use one trace.
    """

    def __init__(self, function: Any) -> None:
        self.function = function
        self._traced: set[Any] = set()
        self._lock = threading.Lock()

    def __call__(self, *args: Any) -> Any:
        specs = tuple(relaxed_spec(a) for a in args)
        key = tuple(tf.nest.flatten(specs))
        if key not in self._traced:
            with self._lock:  # two first calls trace once
                if key not in self._traced:
                    self.function.get_concrete_function(*specs)
                    self._traced.add(key)
        return self.function(*args)

    def tracing_count(self) -> int:
        """How many traces the function has made (tests)."""
        return int(self.function.experimental_get_tracing_count())


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
