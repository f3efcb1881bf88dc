"""Face-Off: adversarial face obfuscation.

The photo flows one way: :mod:`faceoff.detector` finds the faces, :mod:`faceoff.masker` computes
and pastes back the adversarial perturbation, and :mod:`faceoff.evaluator` checks whether
independent recognisers would still match the protected face. :mod:`faceoff.common` holds what the
three gRPC services share, :mod:`faceoff.v1` the generated protobuf contract and
:mod:`faceoff.sdk` the client that apps call before upload.

``faceoff.Client`` and ``faceoff.AsyncClient`` are the SDK's clients, imported on first use
(importing :mod:`faceoff` loads neither gRPC nor TensorFlow).

``FACEOFF_DETERMINISTIC=1`` makes the same seed give the same bytes in every process: it turns
off TensorFlow's oneDNN kernels (``TF_ENABLE_ONEDNN_OPTS=0``), whose multithreaded gradients
sum in an order that depends on thread scheduling, so under CPU contention two runs of one
attack can differ in a few pixel values. It must be set before TensorFlow is first imported,
and costs some speed on the CPU.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["AsyncClient", "Client", "__version__"]

if TYPE_CHECKING:
    from faceoff.sdk import AsyncClient, Client

_LAZY = {"Client", "AsyncClient"}

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def _apply_determinism() -> None:
    """Honour ``FACEOFF_DETERMINISTIC`` (see the module docstring) before TensorFlow loads."""
    value = os.environ.get("FACEOFF_DETERMINISTIC", "").strip().lower()
    if value in _FALSE:
        return
    if value not in _TRUE:
        raise ValueError(
            f"FACEOFF_DETERMINISTIC is {os.environ['FACEOFF_DETERMINISTIC']!r}; "
            f"use 1/true/yes/on, or 0/false/no/off (the default)"
        )
    if "tensorflow" in sys.modules and os.environ.get("TF_ENABLE_ONEDNN_OPTS") != "0":
        warnings.warn(
            "FACEOFF_DETERMINISTIC=1 has no effect: TensorFlow was imported before faceoff with its "
            "oneDNN kernels on; set TF_ENABLE_ONEDNN_OPTS=0 before importing TensorFlow",
            RuntimeWarning, stacklevel=3,
        )
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"


_apply_determinism()


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from faceoff import sdk

        return getattr(sdk, name)
    raise AttributeError(f"module 'faceoff' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
