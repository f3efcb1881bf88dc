"""The exceptions the SDK raises: one class per gRPC status, all under :class:`FaceOffError`.

Every error carries the server's message (which says what was wrong and what would be
accepted) and the status code's name, whether the call went over the network or ran in-process
(:meth:`faceoff.sdk.Client.local`): the embedded pipeline raises the same classes for the same
problems.

Example::

    from faceoff.sdk import Client, InvalidArgumentError

    try:
        Client("localhost:50052").protect("me.jpg", alpha=0)
    except InvalidArgumentError as exc:
        print(exc.code, exc.message)  # INVALID_ARGUMENT alpha must be in (0, 20], got 0.0
        print(exc.reason, exc.field)  # INVALID_OPTION options.alpha

``reason``, ``field`` and ``retry_after`` come from the server's rich status (``google.rpc``
ErrorInfo, BadRequest and RetryInfo in ``grpc-status-details-bin``; docs/errors.md lists the
reasons), so an app can act on them without reading the message.
"""

from __future__ import annotations

__all__ = [
    "CancelledError",
    "DeadlineExceededError",
    "FaceOffError",
    "FailedPreconditionError",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "error_for",
]


class FaceOffError(Exception):
    """Base of every error the SDK raises for a failed call.

    Attributes:
        code: Name of the gRPC status code, e.g. ``"INVALID_ARGUMENT"``.
        message: The server's message (never a stack trace).
        retry_after: Seconds the server asked the client to wait before trying again (its
            RetryInfo, ``grpc-retry-pushback-ms`` or ``retry-after`` hint, with
            RESOURCE_EXHAUSTED), or None when it gave none or asked not to retry at all.
        reason: The server's machine-readable reason (``ErrorInfo.reason`` of domain
            ``faceoff.v1``, e.g. ``"INVALID_OPTION"``, ``"OVERLOADED"``), or None when the
            refusal came from elsewhere (a proxy, the network).
        field: The request field at fault, as a path (``"options.epsilon"``,
            ``"reference_images[1]"``, ``"image"``), or None.
        request_id: The call's request id (sent as ``x-request-id``; the servers log it), to
            quote when reporting a problem.
    """

    #: The status code this class stands for (the base class stands for any other).
    CODE = "UNKNOWN"

    def __init__(
        self,
        message: str,
        code: str | None = None,
        retry_after: float | None = None,
        *,
        reason: str | None = None,
        field: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.CODE
        self.retry_after = retry_after
        self.reason = reason
        self.field = field
        self.request_id = request_id

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class InvalidArgumentError(FaceOffError):
    """The photo or an option is not acceptable; the message names it and what is accepted."""

    CODE = "INVALID_ARGUMENT"


class FailedPreconditionError(FaceOffError):
    """The call needs something the photo lacks (e.g. a face)."""

    CODE = "FAILED_PRECONDITION"


class NotFoundError(FaceOffError):
    """What the call names does not exist."""

    CODE = "NOT_FOUND"


class UnavailableError(FaceOffError):
    """The service (or one it depends on) cannot be reached or is still loading; retried by the client."""

    CODE = "UNAVAILABLE"


class ResourceExhaustedError(FaceOffError):
    """The service's queue is full, or the message is over its size limit; retried by the client."""

    CODE = "RESOURCE_EXHAUSTED"


class DeadlineExceededError(FaceOffError):
    """The call did not finish within the client's ``timeout``; retried by the client."""

    CODE = "DEADLINE_EXCEEDED"


class UnauthenticatedError(FaceOffError):
    """The server (or a proxy in front of it) refused the token, or wanted one."""

    CODE = "UNAUTHENTICATED"


class PermissionDeniedError(FaceOffError):
    """The token is valid but may not make this call."""

    CODE = "PERMISSION_DENIED"


class UnimplementedError(FaceOffError):
    """The address does not serve this service (e.g. ``detect`` sent to a masker-only address)."""

    CODE = "UNIMPLEMENTED"


class CancelledError(FaceOffError):
    """The call was cancelled."""

    CODE = "CANCELLED"


class InternalError(FaceOffError):
    """The server failed; its log has the details."""

    CODE = "INTERNAL"


_BY_CODE: dict[str, type[FaceOffError]] = {
    cls.CODE: cls
    for cls in (
        InvalidArgumentError,
        FailedPreconditionError,
        NotFoundError,
        UnavailableError,
        ResourceExhaustedError,
        DeadlineExceededError,
        UnauthenticatedError,
        PermissionDeniedError,
        UnimplementedError,
        CancelledError,
        InternalError,
    )
}


def error_for(
    code: str,
    message: str,
    retry_after: float | None = None,
    *,
    reason: str | None = None,
    field: str | None = None,
    request_id: str | None = None,
) -> FaceOffError:
    """The SDK exception for status ``code`` (a ``grpc.StatusCode`` name) with ``message``.

    Codes without a class of their own (``UNKNOWN``, ``ABORTED``, ``DATA_LOSS`` ...) give a
    plain :class:`FaceOffError` that still carries the code.
    """
    cls = _BY_CODE.get(code, FaceOffError)
    return cls(message, code, retry_after, reason=reason, field=field, request_id=request_id)
