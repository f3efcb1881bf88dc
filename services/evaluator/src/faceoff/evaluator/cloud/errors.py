"""Errors of the cloud adapters, each a :class:`~faceoff.common.errors.BackendUnavailable`.

``kind`` is a short machine-readable reason that the evaluator reports with a failed verdict
and counts in its metrics (``auth``, ``throttled``, ``timeout``, ``bad_response``, ...).
Messages name the backend and what went wrong; they never carry credentials or image bytes.
"""

from __future__ import annotations

from faceoff.common.errors import BackendUnavailable


class CloudError(BackendUnavailable):
    """A cloud API call failed. ``kind`` is a short machine-readable reason."""

    kind = "unavailable"


class CloudAuthError(CloudError):
    """The API refused the credentials (or the account may not use this operation)."""

    kind = "auth"


class CloudThrottled(CloudError):
    """The API asked us to slow down; ``retry_after`` is its hint in seconds, when it gave one."""

    kind = "throttled"

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CloudTransient(CloudError):
    """A failure worth retrying: a 5xx answer or a connection error."""

    kind = "unavailable"


class CloudTimeout(CloudError):
    """The call's deadline passed."""

    kind = "timeout"


class CloudBadResponse(CloudError):
    """The API answered with something that is not its documented response."""

    kind = "bad_response"


class CloudRejected(CloudError):
    """The API refused the request itself (a photo it cannot read, a bad argument)."""

    kind = "rejected"
