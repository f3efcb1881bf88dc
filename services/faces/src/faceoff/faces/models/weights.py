"""Named weights of a network built in code, taken out by name with their shapes checked.

A model file is untrusted input: the architectures in :mod:`faceoff.faces.models.faceres` and
:mod:`faceoff.faces.models.mobileface` are written out layer by layer, and each layer asks a
:class:`WeightTable` for the weight it needs by name and shape. A missing weight, a weight of
another shape, or a constant (an activation's clip value, a padding, a reshape target) with
another value than the architecture's refuses the file with a ``ValueError`` naming the weight.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf

__all__ = ["WeightTable"]


class WeightTable:
    """The weights of one model file, by name.

    Args:
        weights: every array the file holds, by weight name (e.g. from
            :func:`faceoff.faces.models.tfjs.read_weights`).
        model: the model's name, for error messages.

    Weights the architecture does not ask for (a classification head it stops before) are left
    alone.
    """

    def __init__(self, weights: Mapping[str, np.ndarray], model: str) -> None:
        self._weights = weights
        self.model = model
        #: The frozen variables made by :meth:`variable`, in the order they were taken.
        self.variables: list[tf.Variable] = []

    def _get(self, name: str) -> np.ndarray:
        try:
            return np.asarray(self._weights[name])
        except KeyError:
            raise ValueError(
                f"the {self.model} weights have no {name!r}; not the {self.model} model file"
            ) from None

    def array(self, name: str, shape: Sequence[int]) -> np.ndarray:
        """Weight ``name`` as float32, which must have exactly ``shape`` and be finite.

        Raises:
            ValueError: missing, of another shape, or holding NaN or infinity.
        """
        value = self._get(name)
        if value.shape != tuple(shape):
            raise ValueError(
                f"{self.model} weight {name!r} has shape {list(value.shape)}; expected {list(shape)}"
            )
        if not np.issubdtype(value.dtype, np.number):
            raise ValueError(
                f"{self.model} weight {name!r} has dtype {value.dtype}; expected numbers"
            )
        value = value.astype(np.float32)
        if not np.isfinite(value).all():
            raise ValueError(f"{self.model} weight {name!r} holds NaN or infinite values")
        return value

    def variable(self, name: str, shape: Sequence[int]) -> tf.Variable:
        """Weight ``name`` (see :meth:`array`) as a frozen (non-trainable) float32 variable."""
        var = tf.Variable(self.array(name, shape), trainable=False, name=name.replace("/", "_"))
        self.variables.append(var)
        return var

    def expect(self, name: str, value: float | Sequence[object]) -> None:
        """Check that the constant ``name`` holds ``value`` (a scalar or a nested list).

        For constants the architecture has written into its code, e.g. relu6's 6 and 0.

        Raises:
            ValueError: missing, of another shape or another value.
        """
        want = np.asarray(value, np.float64)
        got = self.array(name, want.shape).astype(np.float64)
        if not np.array_equal(got, want):
            raise ValueError(
                f"{self.model} constant {name!r} is {got.tolist()}; this architecture has {want.tolist()}"
            )
