"""Batching the attacks of concurrent requests, behind a queue bounded in cost.

The surrogate's forward and backward passes are far cheaper per face in a batch than one at a
time, so the masker service does not attack each request on its own: requests put their
prepared faces in a queue, and one worker takes up to ``max_batch_faces`` faces of requests
whose attack options agree, waiting at most ``max_wait_seconds`` for a batch to fill, and runs
them as one attack on a single worker thread. Seeds and reference photos may differ: each face
is seeded by its own request's seed and its index in the photo, and attacked against its own
references, so a face gets the same perturbation in any batch (up to the float rounding of a
batched pass through the surrogates).

The queue is bounded in what its requests cost (:mod:`faceoff.masker.cost`): past
``max_queue_faces`` waiting faces (their crops are memory) or ``max_queue_work`` waiting
face-steps (their attacks are time) a request is refused with RESOURCE_EXHAUSTED instead of
growing memory and latency without bound, with a retry hint: the work that must leave the
queue times the recent seconds per face-step.

No head-of-line blocking: between two compiled chunks of a running attack (every
:data:`~faceoff.masker.attacks.base.PROGRESS_EVERY` iterations) the worker looks at the queue,
and if a waiting batch costs less than what is left of the running one, it runs that batch to
the end first, on the same thread, then goes on (shortest remaining work first, one such batch
per chunk, one level deep). A cheap call behind a huge one so waits one chunk of it, not all of
it; a stream of cheap calls still lets the huge one advance a chunk between each. A fixed seed
gives the same pixels either way (the attacks' randomness is seeded, never shared).

A request whose caller goes away (deadline passed, call cancelled) leaves the queue at once,
and a running attack whose callers have all gone stops at its next progress point instead of
running to the end.
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
from faceoff.masker import cost
from faceoff.masker.jobs import Job

log = logging.getLogger(__name__)

#: Bounds of the retry hint of a refused request, in seconds.
MIN_RETRY_SECONDS = 0.5
MAX_RETRY_SECONDS = 60.0
_SMOOTHING = 0.3
#: Face-steps allowed to wait by default: one maximal request
#: (:data:`faceoff.masker.cost.DEFAULT_MAX_REQUEST_WORK`).
DEFAULT_MAX_QUEUE_WORK = cost.DEFAULT_MAX_REQUEST_WORK
#: Seconds per face-step assumed before the first batch has been timed (about this CPU's).
_FIRST_STEP_SECONDS = 0.05
#: How long the attack thread waits for the event loop to hand it a batch to run in between.
_HANDOFF_SECONDS = 5.0


class _Abandoned(Exception):
    """Raised inside the attack thread when every caller of the batch has gone away."""


AttackFn = Callable[[Sequence[Job], Callable[[int, int], None] | None], list[np.ndarray]]


class BatchMetrics(Protocol):
    """What the batcher reports (the masker's Prometheus metrics implement it)."""

    def queued(self, faces: int, work: int) -> None: ...
    def batch_done(
        self, faces: int, iterations: int, seconds: float, *, interleaved: bool = False
    ) -> None: ...


@dataclass(eq=False)  # compared by identity: a job's arrays have no truth value
class _Pending:
    job: Job
    future: asyncio.Future[np.ndarray]
    on_progress: Callable[[int, int], None] | None
    work: int = 0  # face-steps (faceoff.masker.cost.work)

    @property
    def key(self) -> tuple[Any, ...]:
        return self.job.options.batch_key()  # not the seed: each face has its own


class AttackBatcher:
    """Collects jobs from concurrent requests and runs their attacks in batches.

    Args:
        attack: Runs one attack over a list of compatible jobs (``Protector.attack``).
        max_batch_faces: Faces per attack batch (a single request with more runs alone).
        max_wait_seconds: How long the first job of a batch waits for company.
        max_queue_faces: Faces allowed to wait; beyond it, :class:`Overloaded`.
        metrics: Optional sink for queue depth and batch figures.
        max_queue_work: Face-steps allowed to wait; beyond it, :class:`Overloaded`.
        interleave: Run a cheaper waiting batch between the chunks of a running one (see the
            module docstring); False runs batches strictly one after another.
    """

    def __init__(
        self,
        attack: AttackFn,
        max_batch_faces: int = 8,
        max_wait_seconds: float = 0.02,
        max_queue_faces: int = 64,
        metrics: BatchMetrics | None = None,
        max_queue_work: int = DEFAULT_MAX_QUEUE_WORK,
        interleave: bool = True,
    ) -> None:
        if max_batch_faces < 1 or max_queue_faces < 1 or max_queue_work < 1 or max_wait_seconds < 0:
            raise ValueError(
                "max_batch_faces, max_queue_faces and max_queue_work must be >= 1 and "
                "max_wait_seconds >= 0"
            )
        self._attack = attack
        self.max_batch_faces = max_batch_faces
        self.max_wait_seconds = max_wait_seconds
        self.max_queue_faces = max_queue_faces
        self.max_queue_work = max_queue_work
        self.interleave = interleave
        self._metrics = metrics
        self._pending: deque[_Pending] = deque()
        self._wakeup = asyncio.Event()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="attack"
        )
        self._worker: asyncio.Task[None] | None = None
        self._step_seconds: float | None = None  # moving average of recent seconds per face-step
        self._inline_seconds = 0.0  # time the running batch spent running others in between
        #: Batches run in between the chunks of another since start (tests, metrics).
        self.interleaved = 0

    def retry_after(self, faces: int, work: int = 0) -> float:
        """Seconds until ``faces`` more faces costing ``work`` face-steps would fit in the queue,
        estimated from the work that must leave it and the recent seconds per face-step."""
        queued_faces, queued_work = self.queued_faces, self.queued_work
        face_excess = queued_faces + faces - self.max_queue_faces
        work_excess = queued_work + work - self.max_queue_work
        # faces leave the queue with their work: excess faces x the queue's work per face
        per_face = queued_work / queued_faces if queued_faces else 0.0
        steps = max(1.0, work_excess, face_excess * per_face)
        per_step = self._step_seconds if self._step_seconds is not None else _FIRST_STEP_SECONDS
        return min(MAX_RETRY_SECONDS, max(MIN_RETRY_SECONDS, steps * per_step))

    @property
    def queued_faces(self) -> int:
        """Faces waiting for an attack batch."""
        return sum(p.job.size for p in self._pending)

    @property
    def queued_work(self) -> int:
        """Face-steps waiting for an attack batch."""
        return sum(p.work for p in self._pending)

    def _report(self) -> None:
        if self._metrics is not None:
            self._metrics.queued(self.queued_faces, self.queued_work)

    def refuse_if_full(self) -> None:
        """Raise :class:`Overloaded` now if not even one more face fits, before a request spends
        detection and preparation on an attack the queue would refuse anyway."""
        if self._pending and (
            self.queued_faces >= self.max_queue_faces or self.queued_work >= self.max_queue_work
        ):
            raise self._full(1, 0)

    def _full(self, faces: int, work: int) -> Overloaded:
        wait = self.retry_after(faces, work)
        return Overloaded(
            f"the masker's queue is full ({self.queued_faces} faces, {self.queued_work} "
            f"face-steps waiting; capacity {self.max_queue_faces} faces, {self.max_queue_work} "
            f"face-steps); retry in {wait:.1f} s",
            retry_after=wait,
        )

    async def submit(
        self, job: Job, on_progress: Callable[[int, int], None] | None = None
    ) -> np.ndarray:
        """Queue ``job``'s faces and wait for their perturbation ``(n, S, S, 3)``.

        Raises:
            Overloaded: the queue is full (a request arriving at an empty queue is always taken:
                its own budget was checked at admission).
        """
        if job.size == 0:
            return np.zeros((0, *job.crops.shape[1:]), np.float32)
        work = cost.work(job.size, job.options)
        if self._pending and (
            self.queued_faces + job.size > self.max_queue_faces
            or self.queued_work + work > self.max_queue_work
        ):
            raise self._full(job.size, work)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(
                self._run(), name="attack-batcher"
            )
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        pending = _Pending(job, future, on_progress, work)
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

    def _take_batch(self, below: float | None = None) -> list[_Pending]:
        """The next batch: the first waiting job and the compatible ones after it, up to
        ``max_batch_faces``; with ``below``, the first whose batch costs fewer face-steps."""
        while self._pending and self._pending[0].future.done():
            self._pending.popleft()  # cancelled while waiting
        for first in list(self._pending):
            if first.future.done():
                continue
            batch: list[_Pending] = []
            faces = 0
            for p in self._pending:
                if p.future.done() or p.key != first.key:
                    continue
                if batch and faces + p.job.size > self.max_batch_faces:
                    break
                batch.append(p)
                faces += p.job.size
            if below is None or sum(p.work for p in batch) < below:
                for p in batch:
                    self._pending.remove(p)
                return batch
        return []

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

    def _progress(
        self, loop: asyncio.AbstractEventLoop, batch: list[_Pending], outer: bool
    ) -> Callable[[int, int], None]:
        """The attack's progress callback for ``batch`` (it runs in the attack thread)."""
        listeners = [p.on_progress for p in batch if p.on_progress is not None]
        futures = [p.future for p in batch]
        work = sum(p.work for p in batch)

        def progress(i: int, n: int) -> None:
            # A peek at the futures' state, which only the event loop sets.
            if all(f.done() for f in futures):
                raise _Abandoned
            for listener in listeners:
                loop.call_soon_threadsafe(listener, i, n)
            if outer and self.interleave and 0 < i < n:
                self._run_between(loop, work * (n - i) / n)

        return progress

    def _run_between(self, loop: asyncio.AbstractEventLoop, remaining: float) -> None:
        """In the attack thread, between two chunks of a batch with ``remaining`` face-steps to
        go: run the first waiting batch that costs less, to its end."""
        handoff: concurrent.futures.Future[list[_Pending]] = concurrent.futures.Future()

        def take() -> None:  # on the event loop, which owns the queue
            try:
                handoff.set_result(self._take_batch(below=remaining))
                self._report()
            except BaseException as exc:  # noqa: BLE001 - handed back to the attack thread
                handoff.set_exception(exc)

        try:
            loop.call_soon_threadsafe(take)
            batch = handoff.result(timeout=_HANDOFF_SECONDS)
        except (RuntimeError, concurrent.futures.TimeoutError):
            return  # the loop is closing or busy: go on with the running batch
        if not batch:
            return
        started = time.perf_counter()
        outcome = self._attack_in_thread(batch, self._progress(loop, batch, outer=False))
        seconds = time.perf_counter() - started
        self._inline_seconds += seconds
        loop.call_soon_threadsafe(self._settle, batch, outcome, seconds, True)

    def _attack_in_thread(
        self, batch: list[_Pending], progress: Callable[[int, int], None]
    ) -> list[np.ndarray] | BaseException | None:
        """The batch's perturbations, its error, or None when every caller went away."""
        try:
            return self._attack([p.job for p in batch], progress)
        except _Abandoned:
            log.info(
                "stopped an attack of %d face(s): every caller went away",
                sum(p.job.size for p in batch),
            )
            return None
        except Exception as exc:  # noqa: BLE001 - handed to every caller of the batch
            return exc

    def _settle(
        self,
        batch: list[_Pending],
        outcome: list[np.ndarray] | BaseException | None,
        seconds: float,
        interleaved: bool = False,
    ) -> None:
        """On the event loop: hand each caller of ``batch`` its perturbation or the error."""
        if outcome is None:
            return
        if isinstance(outcome, BaseException):
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(outcome)
            return
        work = sum(p.work for p in batch)
        per_step = seconds / max(1, work)
        self._step_seconds = (
            per_step
            if self._step_seconds is None
            else (self._step_seconds + _SMOOTHING * (per_step - self._step_seconds))
        )
        if interleaved:
            self.interleaved += 1
        if self._metrics is not None:
            faces = sum(p.job.size for p in batch)
            self._metrics.batch_done(
                faces, batch[0].job.options.total_iterations, seconds, interleaved=interleaved
            )
        for p, delta in zip(batch, outcome):
            if not p.future.done():
                p.future.set_result(delta)

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        """Attack one batch in the worker thread and hand each caller its perturbation (or the error)."""
        progress = self._progress(loop, batch, outer=True)
        started = time.perf_counter()
        self._inline_seconds = 0.0
        outcome = await loop.run_in_executor(
            self._executor, self._attack_in_thread, batch, progress
        )
        # its own time: without the batches it ran in between
        self._settle(batch, outcome, time.perf_counter() - started - self._inline_seconds)

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
