"""Batching the attacks of concurrent requests, behind a bounded queue.

The surrogate's forward and backward passes are far cheaper per face in a batch than one at a
time, so the masker service does not attack each request on its own: requests put their
prepared faces in a queue, and one worker takes up to ``max_batch_faces`` faces of requests
whose attack options (and seed) agree, waiting at most ``max_wait_seconds`` for a batch to fill,
and runs them as one attack on a single worker thread. Past ``max_queue_faces`` waiting faces a
request is refused with RESOURCE_EXHAUSTED instead of growing memory without bound, with a retry
hint: the batches ahead of it times the recent time per batch. A request whose caller goes away
(deadline passed, call cancelled) leaves the queue at once, and a running attack whose callers
have all gone stops at its next progress point instead of running to the end.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from faceoff.common.errors import Overloaded
from faceoff.masker.jobs import Job

log = logging.getLogger(__name__)

#: Bounds of the retry hint of a refused request, in seconds.
MIN_RETRY_SECONDS = 0.5
MAX_RETRY_SECONDS = 60.0
_SMOOTHING = 0.3


class _Abandoned(Exception):
    """Raised inside the attack thread when every caller of the batch has gone away."""


AttackFn = Callable[[Sequence[Job], Callable[[int, int], None] | None], list[np.ndarray]]


class BatchMetrics(Protocol):
    """What the batcher reports (the masker's Prometheus metrics implement it)."""

    def queued(self, faces: int) -> None: ...
    def batch_done(self, faces: int, iterations: int, seconds: float) -> None: ...


@dataclass(eq=False)  # compared by identity: a job's arrays have no truth value
class _Pending:
    job: Job
    future: asyncio.Future[np.ndarray]
    on_progress: Callable[[int, int], None] | None

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.job.options.batch_key(), self.job.options.seed)


class AttackBatcher:
    """Collects jobs from concurrent requests and runs their attacks in batches.

    Args:
        attack: Runs one attack over a list of compatible jobs (``Protector.attack``).
        max_batch_faces: Faces per attack batch (a single request with more runs alone).
        max_wait_seconds: How long the first job of a batch waits for company.
        max_queue_faces: Faces allowed to wait; beyond it, :class:`Overloaded`.
        metrics: Optional sink for queue depth and batch figures.
    """

    def __init__(
        self,
        attack: AttackFn,
        max_batch_faces: int = 8,
        max_wait_seconds: float = 0.02,
        max_queue_faces: int = 64,
        metrics: BatchMetrics | None = None,
    ) -> None:
        if max_batch_faces < 1 or max_queue_faces < 1 or max_wait_seconds < 0:
            raise ValueError(
                "max_batch_faces and max_queue_faces must be >= 1 and max_wait_seconds >= 0"
            )
        self._attack = attack
        self.max_batch_faces = max_batch_faces
        self.max_wait_seconds = max_wait_seconds
        self.max_queue_faces = max_queue_faces
        self._metrics = metrics
        self._pending: deque[_Pending] = deque()
        self._wakeup = asyncio.Event()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="attack"
        )
        self._worker: asyncio.Task[None] | None = None
        self._batch_seconds: float | None = None  # moving average of recent batches

    def retry_after(self, faces: int) -> float:
        """Seconds until ``faces`` more faces would fit in the queue, estimated from recent batches."""
        excess = max(1, self.queued_faces + faces - self.max_queue_faces)
        batches = -(-excess // self.max_batch_faces)
        per_batch = self._batch_seconds if self._batch_seconds is not None else 1.0
        return min(MAX_RETRY_SECONDS, max(MIN_RETRY_SECONDS, batches * per_batch))

    @property
    def queued_faces(self) -> int:
        """Faces waiting for an attack batch."""
        return sum(p.job.size for p in self._pending)

    def _report(self) -> None:
        if self._metrics is not None:
            self._metrics.queued(self.queued_faces)

    def refuse_if_full(self) -> None:
        """Raise :class:`Overloaded` now if not even one more face fits, before a request spends
        detection and preparation on an attack the queue would refuse anyway."""
        if self._pending and self.queued_faces >= self.max_queue_faces:
            raise self._full(1)

    def _full(self, faces: int) -> Overloaded:
        wait = self.retry_after(faces)
        return Overloaded(
            f"the masker's queue is full ({self.queued_faces} faces waiting, capacity {self.max_queue_faces}); "
            f"retry in {wait:.1f} s",
            retry_after=wait,
        )

    async def submit(
        self, job: Job, on_progress: Callable[[int, int], None] | None = None
    ) -> np.ndarray:
        """Queue ``job``'s faces and wait for their perturbation ``(n, S, S, 3)``.

        Raises:
            Overloaded: the queue is full.
        """
        if job.size == 0:
            return np.zeros((0, *job.crops.shape[1:]), np.float32)
        if self._pending and self.queued_faces + job.size > self.max_queue_faces:
            raise self._full(job.size)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(
                self._run(), name="attack-batcher"
            )
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        pending = _Pending(job, future, on_progress)
        self._pending.append(pending)
        self._report()
        self._wakeup.set()
        try:
            return await future
        finally:
            if not future.done():
                future.cancel()
            if future.cancelled() and pending in self._pending:  # the caller went away while queued
                self._pending.remove(pending)
                self._report()

    def _take_batch(self) -> list[_Pending]:
        while self._pending and self._pending[0].future.done():
            self._pending.popleft()  # cancelled while waiting
        if not self._pending:
            return []
        key = self._pending[0].key
        batch: list[_Pending] = []
        faces = 0
        for p in list(self._pending):
            if p.future.done() or p.key != key:
                continue
            if batch and faces + p.job.size > self.max_batch_faces:
                break
            batch.append(p)
            faces += p.job.size
        for p in batch:
            self._pending.remove(p)
        return batch

    def _compatible_faces(self) -> int:
        key = self._pending[0].key
        return sum(p.job.size for p in self._pending if p.key == key and not p.future.done())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            deadline = loop.time() + self.max_wait_seconds
            while (
                self._pending
                and self._compatible_faces() < self.max_batch_faces
                and loop.time() < deadline
            ):
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), max(0.0, deadline - loop.time()))
                except TimeoutError:
                    break
            batch = self._take_batch()
            self._report()
            if not batch:
                continue
            await self._run_batch(loop, batch)
            # Drop the batch before waiting for the next one: its jobs hold the requests' photos.
            batch = []

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        """Attack one batch in the worker thread and hand each caller its perturbation (or the error)."""
        listeners = [p.on_progress for p in batch if p.on_progress is not None]
        futures = [p.future for p in batch]

        def progress(i: int, n: int) -> None:
            # Runs in the attack thread: a peek at the futures' state, which only this loop sets.
            if all(f.done() for f in futures):
                raise _Abandoned
            for listener in listeners:
                loop.call_soon_threadsafe(listener, i, n)

        started = time.perf_counter()
        try:
            deltas = await loop.run_in_executor(
                self._executor, self._attack, [p.job for p in batch], progress
            )
        except _Abandoned:
            log.info(
                "stopped an attack of %d face(s): every caller went away",
                sum(p.job.size for p in batch),
            )
            return
        except Exception as exc:  # noqa: BLE001 - handed to every caller of the batch
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        seconds = time.perf_counter() - started
        self._batch_seconds = (
            seconds
            if self._batch_seconds is None
            else (self._batch_seconds + _SMOOTHING * (seconds - self._batch_seconds))
        )
        if self._metrics is not None:
            faces = sum(p.job.size for p in batch)
            self._metrics.batch_done(faces, batch[0].job.options.total_iterations, seconds)
        for p, delta in zip(batch, deltas):
            if not p.future.done():
                p.future.set_result(delta)

    async def close(self) -> None:
        """Stop the worker; waiting callers get :class:`Overloaded`-free cancellation."""
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        for p in self._pending:
            p.future.cancel()
        self._pending.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)
