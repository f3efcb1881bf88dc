"""The masker's client of the detector service.

Status codes from the detector become the masker's domain errors: a bad photo stays
INVALID_ARGUMENT with the detector's message, an unreachable detector is UNAVAILABLE naming
the detector's address, and the caller's remaining deadline bounds every call.
"""

from __future__ import annotations

import grpc

from faceoff.common.errors import BackendUnavailable, DeadlineExceeded, FaceOffError, InvalidArgument
from faceoff.detector.convert import options_to_proto, result_from_proto
from faceoff.detector.detection import DetectionResult, DetectOptions
from faceoff.v1 import common_pb2, detector_pb2, detector_pb2_grpc

#: Deadline of one Detect call when the caller gave none.
DEFAULT_TIMEOUT = 30.0


class DetectorClient:
    """An asyncio client of ``faceoff.v1.Detector`` at ``address`` (``host:port``)."""

    def __init__(self, address: str, max_message_bytes: int = 20 * 1024 * 1024) -> None:
        self.address = address
        self._channel = grpc.aio.insecure_channel(
            address,
            options=[
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.enable_retries", 1),
            ],
        )
        self._stub = detector_pb2_grpc.DetectorStub(self._channel)

    async def detect(self, data: bytes, options: DetectOptions | None = None, timeout: float | None = None) -> DetectionResult:
        """Detect faces in ``data``; ``timeout`` is the caller's remaining deadline in seconds."""
        request = detector_pb2.DetectRequest(
            image=common_pb2.Image(data=data), options=options_to_proto(options or DetectOptions())
        )
        try:
            response = await self._stub.Detect(request, timeout=timeout if timeout is not None else DEFAULT_TIMEOUT,
                                               wait_for_ready=False)
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc, self.address) from None
        return result_from_proto(response)

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()


def _translate(exc: grpc.aio.AioRpcError, address: str) -> FaceOffError:
    code, details = exc.code(), exc.details() or ""
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(details)  # the detector's own message: the photo or a detect option
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"the detector at {address} did not answer within the deadline")
    return BackendUnavailable(f"the detector at {address} is unavailable ({code.name}: {details})")
