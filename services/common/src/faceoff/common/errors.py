"""Domain exceptions, each carrying the gRPC status it maps to.

Core code (decoding, detection, attacks, recognisers) raises these without importing grpc: the
status is kept as the name of a ``grpc.StatusCode`` member, and the servers' error interceptor
(:mod:`faceoff.common.interceptors.errors`) turns it into ``context.abort(code, message)`` at
the edge. Messages are for the client: they say what was wrong and what would be accepted, and
never carry a stack trace, image bytes or embeddings.
"""

from __future__ import annotations


class FaceOffError(Exception):
    """Base of every error a client may see."""

    #: Name of the ``grpc.StatusCode`` member this error maps to.
    status: str = "INTERNAL"
    #: The machine-readable reason (``ErrorInfo.reason``; see :data:`faceoff.common.status.REASONS`).
    reason: str = "INTERNAL"

    def __init__(
        self, message: str, *, field: str | None = None, reason: str | None = None
    ) -> None:
        """``field``: the request field at fault, as a path (``options.epsilon``,
        ``reference_images[2]``), when there is one; ``reason`` overrides the class's."""
        super().__init__(message)
        self.message = message
        self.field = field
        if reason is not None:
            self.reason = reason

    def again(self, message: str, *, field: str | None = None) -> FaceOffError:
        """The same error (class, reason) with another message and field, e.g. prefixed."""
        return type(self)(message, field=field or self.field, reason=self.reason)


class InvalidArgument(FaceOffError):
    """Something in the request is wrong; the message says what and what is accepted."""

    status = "INVALID_ARGUMENT"
    reason = "INVALID_REQUEST"


class InvalidImage(InvalidArgument):
    """The photo cannot be used: empty, not an image, corrupt, too large, unsupported.

    Its field is the request's photo, ``image`` (every Face-Off request carries it so), unless
    the raiser names another (``reference_images[2]``).
    """

    reason = "INVALID_IMAGE"

    def __init__(
        self, message: str, *, field: str | None = None, reason: str | None = None
    ) -> None:
        super().__init__(message, field=field or "image", reason=reason)


class InvalidOption(InvalidArgument):
    """A request option is out of range or unknown; the message names the field."""

    reason = "INVALID_OPTION"


class NoFaceFound(FaceOffError):
    """An operation needs a face and the photo has none (detection itself returns an empty list)."""

    status = "FAILED_PRECONDITION"
    reason = "NO_FACE"


class ModelNotReady(FaceOffError):
    """The service's models are still loading; retry shortly."""

    status = "UNAVAILABLE"
    reason = "MODELS_LOADING"


class Overloaded(FaceOffError):
    """The service's queue is full; retry later.

    ``retry_after`` is when to retry, in seconds, if the service can tell: it reaches the
    client as the trailing metadata ``grpc-retry-pushback-ms`` and ``retry-after`` (the message
    should say it too).
    """

    status = "RESOURCE_EXHAUSTED"
    reason = "OVERLOADED"

    def __init__(
        self,
        message: str,
        retry_after: float | None = None,
        *,
        field: str | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message, field=field, reason=reason)
        self.retry_after = retry_after

    def again(self, message: str, *, field: str | None = None) -> Overloaded:
        return type(self)(message, self.retry_after, field=field or self.field, reason=self.reason)


class ReplyTooLarge(FaceOffError):
    """The work is done but its reply is over the message size limit: retrying cannot help.

    It reaches the client as RESOURCE_EXHAUSTED (what gRPC itself says of an over-size message)
    with the retry hint ``grpc-retry-pushback-ms: -1``, which in gRPC's retry design (A6) means
    "do not retry".
    """

    status = "RESOURCE_EXHAUSTED"
    reason = "REPLY_TOO_LARGE"
    retry_after = -1.0


class BackendUnavailable(FaceOffError):
    """A service this one depends on (the detector, a cloud API) cannot be reached."""

    status = "UNAVAILABLE"
    reason = "BACKEND_UNAVAILABLE"


class DeadlineExceeded(FaceOffError):
    """The client's deadline passed before the work finished."""

    status = "DEADLINE_EXCEEDED"
    reason = "DEADLINE_EXCEEDED"


class SettingsError(ValueError):
    """A setting is malformed or out of range; the message names the variable.

    Raised at start-up (a server's or the command line's), never in answer to a request; also
    importable as :class:`faceoff.common.settings.SettingsError`.
    """
