"""The masker's client of the detector service.

Status codes from the detector become the masker's domain errors: a bad photo stays
INVALID_ARGUMENT with the detector's message, an unreachable detector (a failed TLS handshake
included) or one that refuses the masker's token is UNAVAILABLE naming the detector's address,
and the caller's remaining deadline bounds every call. The channel is plaintext, or TLS / mutual
TLS with ``credentials``; ``token`` is sent as ``authorization: Bearer <token>``.

A detector that refuses the call as overloaded (RESOURCE_EXHAUSTED with a retry hint) makes the
masker answer RESOURCE_EXHAUSTED with the same hint. A detector that went away and came back is
reached again without restarting the masker: the channel retries the connection with a short
backoff (at most :data:`MAX_RECONNECT_BACKOFF_MS`), and meanwhile calls fail at once.
"""

from __future__ import annotations

import json

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from faceoff.common import status, tracing
from faceoff.common.errors import (
    BackendUnavailable,
    DeadlineExceeded,
    FaceOffError,
    InvalidArgument,
    InvalidImage,
    Overloaded,
)
from faceoff.common.retry_hint import retry_after_from
from faceoff.detector.convert import options_to_proto, result_from_proto
from faceoff.detector.detection import DetectionResult, DetectOptions
from faceoff.v1 import common_pb2, detector_pb2, detector_pb2_grpc

#: The detector's gRPC service name, whose health :meth:`DetectorClient.serving` checks.
DETECTOR_SERVICE = "faceoff.v1.Detector"
#: Deadline of one Detect call when the caller gave none (``FACEOFF_DETECT_TIMEOUT_SECONDS``).
DEFAULT_TIMEOUT = 30.0
#: Reconnection backoff of the channel (gRPC's defaults grow to 120 s, so a detector back after
#: a minute's outage would stay unused for up to two more).
INITIAL_RECONNECT_BACKOFF_MS = 250
#: The masker pings an idle detector connection this often (ms), to notice a dead pod early.
KEEPALIVE_MS = 30_000
MAX_RECONNECT_BACKOFF_MS = 2000


class DetectorClient:
    """An asyncio client of ``faceoff.v1.Detector`` at ``address``.

    ``address`` is any gRPC target: ``host:port``, ``dns:///detector-headless:50051`` (every pod
    behind a headless Service), or ``ipv4:10.0.0.1:50051,10.0.0.2:50051``; calls are spread over
    every address it resolves to (``round_robin``).
    """

    def __init__(
        self,
        address: str,
        max_message_bytes: int = 20 * 1024 * 1024,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
        server_name: str | None = None,
        default_timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.address = address
        self.default_timeout = default_timeout
        options: list[tuple[str, object]] = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.enable_retries", 1),
            # Every address the name resolves to gets calls in turn: with a headless Service
            # (dns:///detector-headless:50051) that is every detector pod; the detectors'
            # max_connection_age makes the channel re-resolve, so new pods join.
            ("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})),
            ("grpc.keepalive_time_ms", KEEPALIVE_MS),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.initial_reconnect_backoff_ms", INITIAL_RECONNECT_BACKOFF_MS),
            ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
        ]
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(address, options=options)
        else:
            if (
                server_name
            ):  # the name the detector's certificate carries, when it differs from the address
                options.append(("grpc.ssl_target_name_override", server_name))
            self._channel = grpc.aio.secure_channel(address, credentials, options=options)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._stub = detector_pb2_grpc.DetectorStub(self._channel)

    async def detect(
        self, data: bytes, options: DetectOptions | None = None, timeout: float | None = None
    ) -> DetectionResult:
        """Detect faces in ``data``; ``timeout`` is the caller's remaining deadline in seconds."""
        request = detector_pb2.DetectRequest(
            image=common_pb2.Image(data=data), options=options_to_proto(options or DetectOptions())
        )
        try:
            response = await self._stub.Detect(
                request,
                timeout=timeout if timeout is not None else self.default_timeout,
                metadata=tracing.inject(self._metadata + status.outgoing_metadata()),
                wait_for_ready=False,
            )
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc, self.address) from None
        return result_from_proto(response)

    async def serving(self, timeout: float) -> bool:
        """Whether the detector answers its health check with SERVING within ``timeout`` s."""
        try:
            reply = await health_pb2_grpc.HealthStub(self._channel).Check(
                health_pb2.HealthCheckRequest(service=DETECTOR_SERVICE),
                timeout=timeout,
                wait_for_ready=False,
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()


def _translate(exc: grpc.aio.AioRpcError, address: str) -> FaceOffError:
    code, details = exc.code(), exc.details() or ""
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        # the detector's own message, reason and field: the photo or a detect option
        reason, field = status.parse(exc.trailing_metadata())
        return (InvalidImage if reason == "INVALID_IMAGE" else InvalidArgument)(
            details, field=field, reason=reason
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"the detector at {address} did not answer within the deadline")
    retry_after = (
        retry_after_from(exc.trailing_metadata())
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED
        else None
    )
    if retry_after is not None:
        return Overloaded(
            f"the detector at {address} is overloaded ({details})", retry_after=retry_after
        )
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return BackendUnavailable(
            f"the detector at {address} refused the masker's credentials ({code.name}: {details}); "
            "check FACEOFF_DETECTOR_TOKEN_FILE"
        )
    return BackendUnavailable(f"the detector at {address} is unavailable ({code.name}: {details})")
