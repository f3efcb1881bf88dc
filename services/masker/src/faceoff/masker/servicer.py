"""The Masker RPCs: messages in, domain calls, messages out."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from faceoff.common import memory
from faceoff.common.errors import ModelNotReady, ReplyTooLarge
from faceoff.detector.detection import DetectionResult, DetectOptions
from faceoff.masker import pipeline
from faceoff.masker.batching import AttackBatcher
from faceoff.masker.convert import call_from_proto, result_to_proto
from faceoff.masker.detector_client import DetectorClient
from faceoff.masker.pipeline import DEFAULT_LIMITS, RequestLimits
from faceoff.masker.protection import Protector
from faceoff.masker.receipts import ProtectionResult
from faceoff.masker.surrogates import WEIGHTED_IDLE_SECONDS
from faceoff.v1 import masker_pb2, masker_pb2_grpc

ProgressSink = Callable[[masker_pb2.ProtectProgress], None]
ReplyT = TypeVar("ReplyT", bound=Message)


class MaskerServicer(masker_pb2_grpc.MaskerServicer):
    """Serves ``faceoff.v1.Masker``.

    Args:
        factory: Builds the :class:`Protector` (loads the surrogate); called by :meth:`load`.
        detector: Client of the detector service.
        batcher_factory: Builds the attack batcher around ``Protector.attack``.
        max_reference_photos: Most reference photos one request may carry.
        on_result: Called with every finished protection (metrics).
        max_reply_bytes: Largest reply the server may send (its ``max_send_message_length``):
            a bigger one is refused with :class:`ReplyTooLarge` instead of failing in gRPC
            after the status was counted OK; 0 is no check.
        max_faces: Most faces one request may have protected.
        max_request_pixels: Decoded pixels one request may cost (:mod:`faceoff.masker.cost`).
        max_request_work: Attack face-steps one request may cost.
    """

    def __init__(
        self,
        factory: Callable[[], Protector],
        detector: DetectorClient,
        batcher_factory: Callable[[Protector], AttackBatcher],
        limits: RequestLimits = DEFAULT_LIMITS,
        on_result: Callable[[ProtectionResult], None] | None = None,
        max_reply_bytes: int = 0,
    ) -> None:
        self._factory = factory
        self._detector = detector
        self._batcher_factory = batcher_factory
        self._limits = limits
        self._on_result = on_result
        self.max_reply_bytes = max_reply_bytes
        self._protector: Protector | None = None
        self._batcher: AttackBatcher | None = None
        self._housekeeping: set[asyncio.Future[None]] = set()

    def load(self) -> None:
        """Load the surrogate and compile the attack once (called in a thread at start-up)."""
        protector = self._factory()
        self._batcher = self._batcher_factory(protector)
        self._protector = protector

    def warm_up_rest(self) -> None:
        """Trace every loaded profile's attack (blocking; after the default one is served)."""
        if self._protector is not None:
            self._protector.warm_up()

    def _ready(self) -> tuple[Protector, AttackBatcher]:
        if self._protector is None or self._batcher is None:
            raise ModelNotReady(
                "the masker is still loading its surrogate model; retry in a few seconds"
            )
        return self._protector, self._batcher

    async def _protect(
        self,
        request: masker_pb2.ProtectRequest,
        context: grpc.aio.ServicerContext,
        sink: ProgressSink | None,
    ) -> ProtectionResult:
        protector, batcher = self._ready()
        timeout = context.time_remaining()

        async def detect(data: bytes, options: DetectOptions) -> DetectionResult:
            return await self._detector.detect(data, options, timeout)

        def progress(stage: str, faces: int, iteration: int, iterations: int) -> None:
            if sink is not None:
                sink(
                    masker_pb2.ProtectProgress(
                        stage=stage, faces=faces, iteration=iteration, iterations=iterations
                    )
                )

        call_options_weighted = bool(request.options.surrogate_weights)
        call = call_from_proto(request)
        try:
            result = await pipeline.protect(
                call,
                protector,
                detect,
                batcher.submit,
                limits=self._limits,
                progress=progress,
                # before detection: a full queue would refuse the attack anyway
                before_detect=batcher.refuse_if_full,
            )
        finally:
            del call  # the photos' arrays are garbage now: give their pages back
            await asyncio.to_thread(memory.trim)
            if call_options_weighted:
                # forget the weighted ensemble once it has been idle (and its memory with it)
                asyncio.get_running_loop().call_later(
                    WEIGHTED_IDLE_SECONDS + 1, self._expire_idle, protector
                )
        if self._on_result is not None:
            self._on_result(result)
        return result

    def _expire_idle(self, protector: Protector) -> None:
        """Forget the weighted ensembles left idle, then give their memory back."""

        async def expire() -> None:
            if await asyncio.to_thread(protector.surrogates.expire_idle):
                await asyncio.to_thread(_collect_and_trim)

        self.hold(asyncio.ensure_future(expire()))

    def hold(self, task: asyncio.Future[None]) -> None:
        """Keep a background task referenced until it is done (a bare one may be collected)."""
        self._housekeeping.add(task)
        task.add_done_callback(self._housekeeping.discard)

    async def Protect(
        self, request: masker_pb2.ProtectRequest, context: grpc.aio.ServicerContext
    ) -> masker_pb2.ProtectResponse:
        return self._sized(result_to_proto(await self._protect(request, context, None)))

    async def ProtectStream(
        self, request: masker_pb2.ProtectRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[masker_pb2.ProtectEvent]:
        events: asyncio.Queue[masker_pb2.ProtectProgress] = asyncio.Queue()
        task = asyncio.ensure_future(self._protect(request, context, events.put_nowait))
        getter: asyncio.Future[masker_pb2.ProtectProgress] | None = None
        try:
            while not task.done() or not events.empty():
                getter = asyncio.ensure_future(events.get())
                done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    yield masker_pb2.ProtectEvent(progress=getter.result())
                else:
                    getter.cancel()
            result = task.result()  # re-raises a domain error for the error interceptor
            yield self._sized(masker_pb2.ProtectEvent(result=result_to_proto(result)))
        finally:
            # A client that goes away cancels this generator mid-wait: neither task may be left
            # pending ("Task was destroyed but it is pending!"), and the protection's own error,
            # if any, is retrieved so that it is not reported as never retrieved.
            for pending in (getter, task):
                if pending is not None and not pending.done():
                    pending.cancel()
            if task.done() and not task.cancelled():
                task.exception()

    def _sized(self, reply: ReplyT) -> ReplyT:
        """``reply``, if it fits in a message; else :class:`ReplyTooLarge` naming both sizes."""
        size = reply.ByteSize()
        if self.max_reply_bytes and size > self.max_reply_bytes:
            raise ReplyTooLarge(
                f"the protected photo was made but its reply is {size / 2**20:.1f} MiB "
                f"({size} bytes), over this server's message limit of "
                f"{self.max_reply_bytes / 2**20:.1f} MiB ({self.max_reply_bytes} bytes, "
                "FACEOFF_MAX_MESSAGE_BYTES); send a smaller photo or raise the limit on the "
                "masker and the client"
            )
        return reply

    async def close(self) -> None:
        """Stop the batcher and close the detector channel."""
        if self._batcher is not None:
            await self._batcher.close()
        await self._detector.close()


def _collect_and_trim() -> None:
    """Collect the forgotten ensembles' reference cycles (traced functions hold some), then
    return their memory."""
    gc.collect()
    memory.trim(0.0)
