"""The synchronous client: protect a photo before upload, detect faces, ask recognisers.

Example::

    from faceoff.sdk import Client

    with Client("localhost:50052", detector="localhost:50051", evaluator="localhost:50053") as client:
        protected = client.protect(
            "me.jpg", reference_photos=["me1.jpg", "me2.jpg"], check="dlib,mobilefacenet"
        )
        protected.save("me.protected.jpg")
        for verdict in protected.verdicts:  # rank 1 of gallery_size: still identified
            print(verdict.recognizer, verdict.identified, verdict.rank, verdict.gallery_size)

    local = Client.local()  # the same calls, in-process, no servers
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import grpc

from faceoff.sdk import _convert
from faceoff.sdk._base import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_TIMEOUT,
    DETECTOR,
    EVALUATOR,
    MASKER,
    ClientBase,
    ProtectCall,
    RemoteBase,
    check_request,
)
from faceoff.sdk._grpc import Deadline, sync_channel
from faceoff.sdk.errors import InternalError
from faceoff.sdk.types import Detection, ProtectedPhoto, Verdict
from faceoff.v1 import detector_pb2, evaluator_pb2, masker_pb2

if TYPE_CHECKING:
    from faceoff.sdk.local import LocalPipeline

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_TIMEOUT",
    "DETECTOR",
    "EVALUATOR",
    "MASKER",
    "Client",
    "check_request",
]

EventSink = Callable[[masker_pb2.ProtectProgress], None]


class _Backend(Protocol):
    """What runs the calls: the services over gRPC, or :class:`faceoff.sdk.local.LocalPipeline`."""

    def protect(
        self,
        request: masker_pb2.ProtectRequest,
        on_event: EventSink | None,
        timeout: float | None = None,
    ) -> masker_pb2.ProtectResponse: ...
    def detect(
        self, request: detector_pb2.DetectRequest, timeout: float | None = None
    ) -> detector_pb2.DetectResponse: ...
    def evaluate(
        self, request: evaluator_pb2.EvaluateRequest, timeout: float | None = None
    ) -> evaluator_pb2.EvaluateResponse: ...
    def close(self) -> None: ...


class _Remote(RemoteBase[grpc.Channel]):
    """The services over gRPC, with retries; one channel per distinct address."""

    def __init__(self, *args: Any) -> None:
        super().__init__(sync_channel, *args)

    def protect(
        self,
        request: masker_pb2.ProtectRequest,
        on_event: EventSink | None,
        timeout: float | None = None,
    ) -> masker_pb2.ProtectResponse:
        if on_event is None:
            reply: masker_pb2.ProtectResponse = self._caller.call(
                *self.unary("Protect", request), timeout
            )
            return reply

        def stream(timeout: float, md: tuple[tuple[str, str], ...]) -> masker_pb2.ProtectResponse:
            call = self._masker.ProtectStream(request, timeout=timeout, metadata=md)
            result: masker_pb2.ProtectResponse | None = None
            try:
                for event in call:  # read to the end: the stream's status follows the result
                    if event.HasField("result"):
                        result = event.result
                    else:
                        on_event(event.progress)
            except BaseException:
                call.cancel()  # the callback raised (or Ctrl-C): stop the protection on the server
                raise
            if result is None:
                raise InternalError(
                    f"the masker at {self.route('ProtectStream')[1]} ended its stream without a result"
                )
            return result

        return self._caller.call(stream, *self.route("ProtectStream"), timeout)

    def detect(
        self, request: detector_pb2.DetectRequest, timeout: float | None = None
    ) -> detector_pb2.DetectResponse:
        reply: detector_pb2.DetectResponse = self._caller.call(
            *self.unary("Detect", request), timeout
        )
        return reply

    def evaluate(
        self, request: evaluator_pb2.EvaluateRequest, timeout: float | None = None
    ) -> evaluator_pb2.EvaluateResponse:
        reply: evaluator_pb2.EvaluateResponse = self._caller.call(
            *self.unary("Evaluate", request), timeout
        )
        return reply

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()


class Client(ClientBase[_Backend, ProtectedPhoto, Detection, list[Verdict]]):
    """A client of the Face-Off services (or, from :meth:`local`, of the same pipeline in-process).

    Args:
        target: The masker's address, ``host:port``.
        detector: The detector's address, for :meth:`detect` (default: ``target``, as behind a
            gateway that routes by gRPC service name).
        evaluator: The evaluator's address, for :meth:`evaluate` and ``check=`` (default: ``target``).
        tls: None for plaintext, True for TLS with the system's roots, or a :class:`TLSConfig`
            (a CA and, for mutual TLS, a client certificate and key).
        token: A bearer token, sent as ``authorization: Bearer <token>`` with every call (use TLS).
        timeout: Budget of each call, in seconds, retries and back-off included: each attempt
            gets what is left as its deadline, and no retry starts that could not end in it.
        retries: Retries after the first attempt on UNAVAILABLE, RESOURCE_EXHAUSTED and
            DEADLINE_EXCEEDED, with exponential backoff and jitter (or after the wait the
            server's retry hint asks for); or a :class:`RetryPolicy`.
        max_message_bytes: Largest message sent or received.

    Every failed call raises a :class:`FaceOffError` subclass named after its status
    (:class:`InvalidArgumentError`, :class:`UnavailableError`, ...) carrying the server's message.

    Example::

        client = Client("localhost:50052")
        protected = client.protect("me.jpg", profile="high", seed=7)
        protected.save("me.protected.jpg")
        client.close()
    """

    _remote = _Remote

    @classmethod
    def _local(cls, pipeline: LocalPipeline) -> _Backend:
        return pipeline

    def _protect(self, call: ProtectCall) -> ProtectedPhoto:
        request = call.build()
        on_event: EventSink | None = None
        if call.on_progress is not None:
            callback = call.on_progress

            def on_event(event: masker_pb2.ProtectProgress) -> None:
                callback(_convert.progress(event))

        budget = Deadline(call.timeout)
        response = self._backend.protect(request, on_event, budget.left())
        check = call.check(request, response)
        if check is None:
            return _convert.protected_photo(response, [])
        verdicts = self._backend.evaluate(check, budget.left())
        return _convert.protected_photo(response, _convert.verdicts(verdicts))

    def _detect(
        self, build: Callable[[], detector_pb2.DetectRequest], timeout: float | None
    ) -> Detection:
        return _convert.detection(self._backend.detect(build(), timeout))

    def _evaluate(
        self, build: Callable[[], evaluator_pb2.EvaluateRequest], timeout: float | None
    ) -> list[Verdict]:
        return _convert.verdicts(self._backend.evaluate(build(), timeout))

    def close(self) -> None:
        """Close the channels (or stop the embedded pipeline's worker threads)."""
        self._backend.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
