"""The asyncio client: the same calls as :class:`faceoff.sdk.Client`, as coroutines.

Example::

    import asyncio
    from faceoff.sdk import AsyncClient

    async def main(paths):
        async with AsyncClient("localhost:50052") as client:
            results = await asyncio.gather(*(client.protect(p, profile="low") for p in paths))
        for path, protected in zip(paths, results):
            protected.save(path + ".protected" + protected.suffix)

    asyncio.run(main(["a.jpg", "b.jpg"]))

Concurrent protections with the same options and seed share the masker's attack batches.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

import grpc

from faceoff.sdk import _convert
from faceoff.sdk._base import (
    ClientBase,
    ProtectCall,
    RemoteBase,
)
from faceoff.sdk._grpc import Deadline, aio_channel
from faceoff.sdk.errors import InternalError
from faceoff.sdk.types import Detection, ProtectedPhoto, Verdict
from faceoff.v1 import detector_pb2, evaluator_pb2, masker_pb2

if TYPE_CHECKING:
    from faceoff.sdk.local import LocalPipeline

__all__ = ["AsyncClient"]

AsyncEventSink = Callable[[masker_pb2.ProtectProgress], Awaitable[None]]


class _AsyncBackend(Protocol):
    async def protect(
        self,
        request: masker_pb2.ProtectRequest,
        on_event: AsyncEventSink | None,
        timeout: float | None = None,
    ) -> masker_pb2.ProtectResponse: ...
    async def detect(
        self, request: detector_pb2.DetectRequest, timeout: float | None = None
    ) -> detector_pb2.DetectResponse: ...
    async def evaluate(
        self, request: evaluator_pb2.EvaluateRequest, timeout: float | None = None
    ) -> evaluator_pb2.EvaluateResponse: ...
    async def close(self) -> None: ...


class _AsyncRemote(RemoteBase[grpc.aio.Channel]):
    """The services over ``grpc.aio`` channels, with retries; one channel per distinct address."""

    def __init__(self, *args: Any) -> None:
        super().__init__(aio_channel, *args)

    async def protect(
        self,
        request: masker_pb2.ProtectRequest,
        on_event: AsyncEventSink | None,
        timeout: float | None = None,
    ) -> masker_pb2.ProtectResponse:
        if on_event is None:
            reply: masker_pb2.ProtectResponse = await self._caller.acall(
                *self.unary("Protect", request), timeout
            )
            return reply

        async def stream(
            timeout: float, md: tuple[tuple[str, str], ...]
        ) -> masker_pb2.ProtectResponse:
            call = self._masker.ProtectStream(request, timeout=timeout, metadata=md)
            result: masker_pb2.ProtectResponse | None = None
            try:
                async for event in call:  # read to the end: the stream's status follows the result
                    if event.HasField("result"):
                        result = event.result
                    else:
                        await on_event(event.progress)
            except BaseException:
                call.cancel()  # the callback raised (or the task was cancelled): stop the protection
                raise
            if result is None:
                raise InternalError(
                    f"the masker at {self.route('ProtectStream')[1]} ended its stream without a result"
                )
            return result

        return await self._caller.acall(stream, *self.route("ProtectStream"), timeout)

    async def detect(
        self, request: detector_pb2.DetectRequest, timeout: float | None = None
    ) -> detector_pb2.DetectResponse:
        reply: detector_pb2.DetectResponse = await self._caller.acall(
            *self.unary("Detect", request), timeout
        )
        return reply

    async def evaluate(
        self, request: evaluator_pb2.EvaluateRequest, timeout: float | None = None
    ) -> evaluator_pb2.EvaluateResponse:
        reply: evaluator_pb2.EvaluateResponse = await self._caller.acall(
            *self.unary("Evaluate", request), timeout
        )
        return reply

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()


class _AsyncLocal:
    """:class:`~faceoff.sdk.local.LocalPipeline` on worker threads, its progress delivered on the loop."""

    def __init__(self, pipeline: LocalPipeline) -> None:
        self.pipeline = pipeline

    async def protect(
        self,
        request: masker_pb2.ProtectRequest,
        on_event: AsyncEventSink | None,
        timeout: float | None = None,  # in-process: runs to completion
    ) -> masker_pb2.ProtectResponse:
        if on_event is None:
            return await asyncio.to_thread(self.pipeline.protect, request, None)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[masker_pb2.ProtectProgress | None] = asyncio.Queue()

        async def deliver() -> None:
            while (event := await events.get()) is not None:
                await on_event(event)

        def queue(event: masker_pb2.ProtectProgress) -> None:  # on the worker thread
            loop.call_soon_threadsafe(events.put_nowait, event)

        delivering = asyncio.ensure_future(deliver())
        try:
            # Events are queued from the worker thread in order, and before the thread's result.
            return await asyncio.to_thread(self.pipeline.protect, request, queue)
        finally:
            events.put_nowait(None)
            await delivering

    async def detect(
        self, request: detector_pb2.DetectRequest, timeout: float | None = None
    ) -> detector_pb2.DetectResponse:
        return await asyncio.to_thread(self.pipeline.detect, request)

    async def evaluate(
        self, request: evaluator_pb2.EvaluateRequest, timeout: float | None = None
    ) -> evaluator_pb2.EvaluateResponse:
        return await asyncio.to_thread(self.pipeline.evaluate, request)

    async def close(self) -> None:
        self.pipeline.close()


class AsyncClient(
    ClientBase[
        _AsyncBackend,
        Coroutine[Any, Any, ProtectedPhoto],
        Coroutine[Any, Any, Detection],
        Coroutine[Any, Any, list[Verdict]],
    ]
):
    """The asyncio form of :class:`faceoff.sdk.Client`: same arguments, same results, coroutines.

    Create it inside a running event loop (gRPC's asyncio channels belong to one loop).
    ``on_progress`` may be a plain function or a coroutine function.

    Example::

        async with AsyncClient("localhost:50052", token=os.environ["FACEOFF_TOKEN"], tls=True) as client:
            protected = await client.protect("me.jpg", on_progress=lambda p: print(p.stage, p.iteration))
    """

    _remote = _AsyncRemote

    @classmethod
    def _local(cls, pipeline: LocalPipeline) -> _AsyncBackend:
        return _AsyncLocal(pipeline)

    async def _protect(self, call: ProtectCall) -> ProtectedPhoto:
        request = call.build()
        on_event: AsyncEventSink | None = None
        if call.on_progress is not None:
            callback = call.on_progress

            async def on_event(event: masker_pb2.ProtectProgress) -> None:
                result = callback(_convert.progress(event))
                if inspect.isawaitable(result):
                    await result

        budget = Deadline(call.timeout)
        response = await self._backend.protect(request, on_event, budget.left())
        check = call.check(request, response)
        if check is None:
            return _convert.protected_photo(response, [])
        verdicts = await self._backend.evaluate(check, budget.left())
        return _convert.protected_photo(response, _convert.verdicts(verdicts))

    async def _detect(
        self, build: Callable[[], detector_pb2.DetectRequest], timeout: float | None
    ) -> Detection:
        return _convert.detection(await self._backend.detect(build(), timeout))

    async def _evaluate(
        self, build: Callable[[], evaluator_pb2.EvaluateRequest], timeout: float | None
    ) -> list[Verdict]:
        return _convert.verdicts(await self._backend.evaluate(build(), timeout))

    async def close(self) -> None:
        """Close the channels (or stop the embedded pipeline's worker threads)."""
        await self._backend.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
