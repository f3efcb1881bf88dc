"""Face-Off: adversarial face obfuscation.

The photo flows one way: :mod:`faceoff.detector` finds the faces, :mod:`faceoff.masker` computes
and pastes back the adversarial perturbation, and :mod:`faceoff.evaluator` checks whether
independent recognisers would still match the protected face. :mod:`faceoff.common` holds what the
three gRPC services share, :mod:`faceoff.v1` the generated protobuf contract and
:mod:`faceoff.sdk` the client that apps call before upload.

``faceoff.Client`` and ``faceoff.AsyncClient`` are the SDK's clients, imported on first use
(importing :mod:`faceoff` loads neither gRPC nor TensorFlow).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["AsyncClient", "Client", "__version__"]

if TYPE_CHECKING:
    from faceoff.sdk import AsyncClient, Client

_LAZY = {"Client", "AsyncClient"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from faceoff import sdk

        return getattr(sdk, name)
    raise AttributeError(f"module 'faceoff' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
