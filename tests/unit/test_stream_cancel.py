"""A ProtectStream that its client cancels leaves no task behind.

The stream waits on the protection and on its progress queue at once; a client that went away
mid-wait used to leave the queue's waiter pending, and asyncio reported "Task was destroyed but
it is pending!" when it was collected. grpc.aio cancels the handler's task when the client
cancels; this drives the servicer's stream the same way, with a protection that never ends.
"""

from __future__ import annotations

import asyncio
from typing import Any

from faceoff.masker.servicer import MaskerServicer
from faceoff.v1 import masker_pb2


class _Forever(MaskerServicer):
    """A servicer whose protection reports one progress event and then runs until cancelled."""

    def __init__(self) -> None:
        super().__init__(factory=lambda: None, detector=None, batcher_factory=lambda p: None)  # type: ignore[arg-type]
        self.cancelled = False

    async def _protect(self, request: Any, context: Any, sink: Any) -> Any:
        sink(masker_pb2.ProtectProgress(stage="attack", faces=1, iteration=1, iterations=9))
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise


def test_cancelled_protect_stream_leaves_no_pending_task() -> None:
    async def main() -> tuple[bool, list[asyncio.Task[Any]]]:
        servicer = _Forever()
        stream = servicer.ProtectStream(masker_pb2.ProtectRequest(), None)  # type: ignore[arg-type]
        first = await stream.__anext__()
        assert first.progress.stage == "attack"
        waiting = asyncio.ensure_future(stream.__anext__())  # the stream now waits on both
        await asyncio.sleep(0.05)
        waiting.cancel()  # what grpc.aio does when the client cancels
        await asyncio.gather(waiting, return_exceptions=True)
        await asyncio.sleep(0.05)
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
        return servicer.cancelled, left

    cancelled, left = asyncio.run(main())
    assert cancelled, "the protection itself is cancelled"
    assert not left, f"tasks left pending: {left}"
