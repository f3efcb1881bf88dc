"""The Python client apps call before upload: protect a photo, detect faces, ask recognisers.

:class:`Client` (blocking) and :class:`AsyncClient` (asyncio) talk to the Face-Off services over
gRPC, with TLS, a bearer token, per-attempt deadlines and bounded retries; ``Client.local()``
and ``AsyncClient.local()`` run the same pipeline in-process. Results are typed, immutable
dataclasses; failures are :class:`FaceOffError` subclasses named after their gRPC status.
Importing the SDK does not import TensorFlow (only the embedded pipeline does, when first used).

Example::

    from faceoff.sdk import Client

    with Client("localhost:50052") as client:
        protected = client.protect("me.jpg", seed=7, on_progress=print)
    protected.save("me.protected.jpg")
    print([f.psnr for f in protected.faces])
"""

from faceoff.sdk._convert import DEFAULT_PROFILE, PROFILES, ProtectOptions
from faceoff.sdk.aio import AsyncClient
from faceoff.sdk.client import Client
from faceoff.sdk.config import RetryPolicy, TLSConfig
from faceoff.sdk.errors import (
    CancelledError,
    DeadlineExceededError,
    FaceOffError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
)
from faceoff.sdk.photos import PhotoInput
from faceoff.sdk.types import (
    AppliedOptions,
    Box,
    Detection,
    Face,
    FaceReceipt,
    IdentityScore,
    Progress,
    ProtectedPhoto,
    Verdict,
)

__all__ = [
    "AppliedOptions",
    "AsyncClient",
    "Box",
    "CancelledError",
    "Client",
    "DEFAULT_PROFILE",
    "DeadlineExceededError",
    "Detection",
    "Face",
    "FaceOffError",
    "FaceReceipt",
    "FailedPreconditionError",
    "IdentityScore",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "PROFILES",
    "PermissionDeniedError",
    "PhotoInput",
    "Progress",
    "ProtectOptions",
    "ProtectedPhoto",
    "ResourceExhaustedError",
    "RetryPolicy",
    "TLSConfig",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "Verdict",
]
