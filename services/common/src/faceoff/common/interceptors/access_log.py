"""One access-log line per RPC: method, request id, peer, status, duration, request size. Never payloads.

It also gives each call its request id (:mod:`faceoff.common.status`): the client's
``x-request-id`` or a new one, current while the call runs and returned in its trailers.
"""

from __future__ import annotations

import logging
from typing import Any

from faceoff.common import status
from faceoff.common.interceptors._wrap import (
    Context,
    Handler,
    HandlerInterceptor,
    code_name,
    observe,
)

log = logging.getLogger("faceoff.access")


class AccessLogInterceptor(HandlerInterceptor):
    """Logs every RPC at INFO (health checks at DEBUG, since probes call them every few seconds)."""

    def wrap(self, handler: Handler, path: str) -> Handler:
        method = path
        level = logging.DEBUG if method.startswith("/grpc.") else logging.INFO

        def on_start(context: Context) -> tuple[str, str]:
            rid = status.request_id_from(context.invocation_metadata())
            status.set_request_id(rid)
            context.set_trailing_metadata(((status.REQUEST_ID_KEY, rid),))
            return rid, context.peer()

        def on_finish(
            request: Any,
            context: Context,
            seconds: float,
            failure: str | None,
            started: tuple[str, str],
        ) -> None:
            rid, peer = started
            size = request.ByteSize() if hasattr(request, "ByteSize") else -1
            code = code_name(context, failure)
            log.log(
                level,
                "rpc %s request_id=%s peer=%s code=%s seconds=%.3f request_bytes=%d",
                method,
                rid,
                peer,
                code,
                seconds,
                size,
                # the same, as fields of a JSON log line (faceoff.common.logs)
                extra={
                    "method": method,
                    "request_id": rid,
                    "peer": peer,
                    "code": code,
                    "duration_seconds": round(seconds, 6),
                    "request_bytes": size,
                },
            )

        # The peer is read while the call is alive: a cancelled stream ends after its call is gone.
        return observe(handler, on_start, on_finish)
