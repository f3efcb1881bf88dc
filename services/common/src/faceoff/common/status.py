"""Machine-readable refusals: every error status carries a ``google.rpc.Status`` in its trailers.

Every refusal a Face-Off server sends has, beside its English message, the standard rich status
(``grpc-status-details-bin``, as ``grpcio-status`` writes and every gRPC language reads):

- ``google.rpc.ErrorInfo``: ``reason`` (one of :data:`REASONS`, UPPER_SNAKE_CASE), ``domain``
  ``faceoff.v1`` and ``metadata`` (``request_id`` always; ``field`` and ``retry_after_ms`` when
  they apply);
- ``google.rpc.BadRequest`` with one field violation for INVALID_ARGUMENT when the field is known
  (its path in the request, e.g. ``options.epsilon``, ``reference_images[2]``, ``image``);
- ``google.rpc.RetryInfo`` for a refusal the client should retry later (RESOURCE_EXHAUSTED,
  UNAVAILABLE while models load), with the same delay as the ``grpc-retry-pushback-ms`` and
  ``retry-after`` trailers (:mod:`faceoff.common.retry_hint`).

Each call also has a request id: the client's ``x-request-id`` metadata when it is a sane token
(what a proxy or the SDK sets), else a fresh one. It is returned in the trailers, written in the
access log, passed on to the detector, and in every ErrorInfo, so a refusal a user reports can be
found in the logs of every service it crossed.
"""

from __future__ import annotations

import contextvars
import re
import uuid
from collections.abc import Iterable
from typing import Any, NoReturn

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from faceoff.common.retry_hint import retry_metadata

#: ErrorInfo's domain for every Face-Off reason.
DOMAIN = "faceoff.v1"

#: Metadata key of the request id, in both directions.
REQUEST_ID_KEY = "x-request-id"

#: What a client's request id may look like (else the server makes its own).
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")

#: Every reason a server sends, with the status it goes with and what it means (docs/errors.md
#: lists the same; a test keeps the two together).
REASONS: dict[str, tuple[str, str]] = {
    "INVALID_REQUEST": (
        "INVALID_ARGUMENT",
        "something in the request is wrong; the message says what",
    ),
    "INVALID_IMAGE": (
        "INVALID_ARGUMENT",
        "a photo cannot be used: empty, not an image, corrupt, too large",
    ),
    "INVALID_OPTION": (
        "INVALID_ARGUMENT",
        "an option is out of range or unknown; `field` names it",
    ),
    "TOO_MANY_FACES": ("INVALID_ARGUMENT", "the photo has more faces than one request may protect"),
    "TOO_MANY_PIXELS": (
        "INVALID_ARGUMENT",
        "the request's photos decode to more pixels than one request may cost",
    ),
    "TOO_MUCH_WORK": (
        "INVALID_ARGUMENT",
        "the attack would take more face-steps than one request may cost",
    ),
    "NO_FACE": (
        "FAILED_PRECONDITION",
        "the call needs a face and the photo (or a reference) has none",
    ),
    "MODELS_LOADING": ("UNAVAILABLE", "the service is still loading its models; retry shortly"),
    "BACKEND_UNAVAILABLE": (
        "UNAVAILABLE",
        "a service this one needs (the detector, a cloud API) cannot be reached",
    ),
    "OVERLOADED": ("RESOURCE_EXHAUSTED", "the attack queue is full; retry after RetryInfo's delay"),
    "RATE_LIMITED": ("RESOURCE_EXHAUSTED", "this client sent more requests per second than it may"),
    "TOO_MANY_CALLS": (
        "RESOURCE_EXHAUSTED",
        "the server is handling as many calls as it admits at once",
    ),
    "REPLY_TOO_LARGE": (
        "RESOURCE_EXHAUSTED",
        "the answer is over the message size limit; retrying cannot help",
    ),
    "DEADLINE_EXCEEDED": (
        "DEADLINE_EXCEEDED",
        "the work did not finish within the call's deadline",
    ),
    "TOKEN_MISSING": ("UNAUTHENTICATED", "the call carries no 'authorization: Bearer <token>'"),
    "TOKEN_MALFORMED": ("UNAUTHENTICATED", "the authorization metadata is not 'Bearer <token>'"),
    "TOKEN_INVALID": ("UNAUTHENTICATED", "the token is not one this server accepts"),
    "INTERNAL": ("INTERNAL", "the server failed; its log has the details under the request id"),
}

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "faceoff_request_id", default=None
)


def request_id_from(metadata: Iterable[Any] | None) -> str:
    """The request id of a call with invocation ``metadata``: the client's, or a new one."""
    for item in metadata or ():
        key, value = item[0], item[1]
        if key == REQUEST_ID_KEY:
            text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
            if _REQUEST_ID.fullmatch(text):
                return text
    return uuid.uuid4().hex


def set_request_id(value: str) -> contextvars.Token[str | None]:
    """Make ``value`` the current call's request id (for logs, errors and outgoing calls)."""
    return _request_id.set(value)


def current_request_id() -> str | None:
    """The request id of the call being served, or None outside one."""
    return _request_id.get()


def outgoing_metadata() -> tuple[tuple[str, str], ...]:
    """Metadata that carries the current request id on to another service."""
    rid = current_request_id()
    return ((REQUEST_ID_KEY, rid),) if rid else ()


def rich_status(
    code: grpc.StatusCode,
    message: str,
    reason: str,
    *,
    field: str | None = None,
    retry_after: float | None = None,
) -> status_pb2.Status:
    """The ``google.rpc.Status`` of a refusal (see the module docstring)."""
    if reason not in REASONS:
        raise ValueError(f"unknown reason {reason!r}; add it to REASONS and docs/errors.md")
    info: dict[str, str] = {}
    rid = current_request_id()
    if rid:
        info["request_id"] = rid
    if field:
        info["field"] = field
    delay_s = retry_after if retry_after is not None and retry_after >= 0 else None
    if delay_s is not None:
        info["retry_after_ms"] = str(int(round(delay_s * 1000)))
    details: list[Any] = [error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=info)]
    if field and code == grpc.StatusCode.INVALID_ARGUMENT:
        violation = error_details_pb2.BadRequest.FieldViolation(field=field, description=message)
        details.append(error_details_pb2.BadRequest(field_violations=[violation]))
    if delay_s is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(round(delay_s * 1e9)))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=message)
    for detail in details:
        status.details.add().Pack(detail)
    return status


def parse(trailing: Iterable[Any] | None) -> tuple[str | None, str | None]:
    """``(reason, field)`` from another service's trailers (its rich status), or ``(None, None)``."""
    for item in trailing or ():
        if item[0] == rpc_status.GRPC_DETAILS_METADATA_KEY:
            raw = item[1] if isinstance(item[1], bytes) else str(item[1]).encode("latin-1")
            found = status_pb2.Status()
            try:
                found.ParseFromString(raw)
            except Exception:  # noqa: BLE001 - another service's bytes: ignore what does not parse
                return None, None
            reason = field = None
            for detail in found.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Is(info.DESCRIPTOR) and detail.Unpack(info) and info.domain == DOMAIN:
                    reason, field = info.reason or None, info.metadata.get("field") or None
            return (reason if reason in REASONS else None), field
    return None, None


async def abort(
    context: grpc.aio.ServicerContext[Any, Any],
    code: grpc.StatusCode,
    message: str,
    reason: str,
    *,
    field: str | None = None,
    retry_after: float | None = None,
) -> NoReturn:
    """End the call with ``code`` and ``message``; its trailers carry the rich status, the retry
    hint (:mod:`faceoff.common.retry_hint`) and the request id."""
    status = rpc_status.to_status(
        rich_status(code, message, reason, field=field, retry_after=retry_after)
    )
    trailing: list[tuple[str, str | bytes]] = list(status.trailing_metadata)
    if retry_after is not None:
        trailing.extend(retry_metadata(retry_after))
    trailing.extend(outgoing_metadata())
    await context.abort(code, message, trailing_metadata=tuple(trailing))
    raise AssertionError("unreachable: abort raises")  # pragma: no cover
