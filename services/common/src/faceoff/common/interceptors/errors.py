"""The one place where domain exceptions become gRPC statuses.

A :class:`~faceoff.common.errors.FaceOffError` aborts the RPC with its status and message, and
the rich status of :mod:`faceoff.common.status` (its reason, the field at fault, and for
:class:`~faceoff.common.errors.Overloaded` with a ``retry_after`` the retry hint); any
other exception is logged with its traceback on the server and reaches the client as INTERNAL
with a generic message (never a stack trace).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from faceoff.common import status
from faceoff.common.errors import FaceOffError
from faceoff.common.interceptors._wrap import (
    Context,
    Handler,
    HandlerInterceptor,
    StreamBehaviour,
    UnaryBehaviour,
    wrap_handler,
)

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal error; the server log has the details"


async def _abort_for(exc: BaseException, context: Context, method: str) -> None:
    if isinstance(exc, FaceOffError):
        # Overloaded: when to retry; ReplyTooLarge: never (-1)
        retry_after = getattr(exc, "retry_after", None)
        await status.abort(
            context,
            grpc.StatusCode[exc.status],
            exc.message,
            exc.reason,
            field=exc.field,
            retry_after=retry_after,
        )
    log.error(
        "unhandled error in %s (request %s)", method, status.current_request_id(), exc_info=exc
    )
    await status.abort(context, grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE, "INTERNAL")


class ErrorInterceptor(HandlerInterceptor):
    """Maps exceptions raised by servicers to status codes (see module docstring)."""

    def wrap(self, handler: Handler, path: str) -> Handler:
        method = path

        def unary(behaviour: UnaryBehaviour) -> UnaryBehaviour:
            async def wrapped(request: Any, context: Context) -> Any:
                try:
                    return await behaviour(request, context)
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:  # noqa: BLE001 - this is the mapper
                    await _abort_for(exc, context, method)

            return wrapped

        def stream(behaviour: StreamBehaviour) -> StreamBehaviour:
            async def wrapped(request: Any, context: Context) -> AsyncIterator[Any]:
                try:
                    async for item in behaviour(request, context):
                        yield item
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:  # noqa: BLE001 - this is the mapper
                    await _abort_for(exc, context, method)

            return wrapped

        return wrap_handler(handler, unary, stream)
