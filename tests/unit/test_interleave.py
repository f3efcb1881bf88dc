"""No head-of-line blocking in the attack queue: a cheap batch runs between the chunks of a costly one.

One 10 000-iteration call without a deadline used to make a cheap call time out after 40 s: the
worker ran batches strictly one after another.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import numpy as np

from faceoff.masker.attacks import make_attack
from faceoff.masker.batching import AttackBatcher
from faceoff.masker.jobs import Job
from faceoff.masker.options import resolve
from tests.unit.test_attacks import FAST, faces, loss_for


def _job(faces: int, iterations: int, seed: int = 0) -> Job:
    return Job(
        data=b"",
        photo=None,
        options=resolve("low", seed=seed, iterations=iterations),
        faces_found=faces,
        indices=list(range(faces)),
        boxes=[(0, 0, 1, 1)] * faces,
        regions=[],
        crops=np.full((faces, 8, 8, 3), 0.5, np.float32),
        user_refs=[np.zeros((1, 4), np.float32)] * faces,
        anchors=[],
        others=[],
        targets=[None] * faces,
    )


class ChunkedAttack:
    """Stands in for ``Protector.attack``: 10 iterations a chunk, 2 ms a chunk, progress between."""

    def __init__(self) -> None:
        self.log: list[str] = []

    def __call__(self, jobs: Any, progress: Any) -> list[np.ndarray]:
        total = jobs[0].options.total_iterations
        name = f"{sum(j.size for j in jobs)}x{total}"
        self.log.append(f"start {name}")
        for done in range(10, total + 1, 10):
            time.sleep(0.002)
            progress(done, total)
        self.log.append(f"end {name}")
        return [np.full_like(j.crops, total) for j in jobs]


def _run(interleave: bool) -> tuple[list[str], bool, Any, Any]:
    attack = ChunkedAttack()

    async def scenario() -> tuple[bool, Any, Any]:
        batcher = AttackBatcher(attack, max_wait_seconds=0.0, interleave=interleave)
        try:
            big = asyncio.ensure_future(batcher.submit(_job(4, 2000)))  # 8000 face-steps
            while not attack.log:
                await asyncio.sleep(0.005)
            small = await batcher.submit(_job(1, 20))  # 20: far less than what is left
            big_running = not big.done()
            return big_running, small, await big
        finally:
            await batcher.close()

    big_running, small, big = asyncio.run(scenario())
    return attack.log, big_running, small, big


def test_a_cheap_batch_runs_between_the_chunks_of_a_costly_one() -> None:
    log, big_running, small, big = _run(interleave=True)
    assert log == ["start 4x2000", "start 1x20", "end 1x20", "end 4x2000"]
    assert big_running, "the cheap call waited for the costly one to finish"
    assert small.shape == (1, 8, 8, 3) and np.all(small == 20)  # each caller gets its own result
    assert big.shape == (4, 8, 8, 3) and np.all(big == 2000)


def test_without_interleaving_batches_run_one_after_another() -> None:
    log, big_running, _, _ = _run(interleave=False)
    assert log == ["start 4x2000", "end 4x2000", "start 1x20", "end 1x20"]
    assert not big_running


def test_a_batch_costlier_than_what_is_left_waits_its_turn() -> None:
    attack = ChunkedAttack()
    gate = threading.Event()

    def slow_start(jobs: Any, progress: Any) -> list[np.ndarray]:
        gate.wait(10)
        return attack(jobs, progress)

    async def scenario() -> None:
        batcher = AttackBatcher(slow_start, max_wait_seconds=0.0)
        try:
            first = asyncio.ensure_future(batcher.submit(_job(1, 40)))  # 40 face-steps
            while batcher.queued_faces:
                await asyncio.sleep(0.005)
            second = asyncio.ensure_future(batcher.submit(_job(2, 100)))  # 200: costlier
            await asyncio.sleep(0.02)
            gate.set()
            await asyncio.gather(first, second)
            assert batcher.interleaved == 0
        finally:
            await batcher.close()

    asyncio.run(scenario())
    assert attack.log == ["start 1x40", "end 1x40", "start 2x100", "end 2x100"]


def test_an_attack_run_in_between_another_gives_the_same_perturbations() -> None:
    """The seeded attacks share no random state, so running one inside another's progress
    callback (as the batcher does) changes neither result."""
    probes, _ = faces()
    params = {**FAST[("pgd", "linf")], "iterations": 30}

    def run(images: np.ndarray, seed: int, progress: Any = None) -> np.ndarray:
        attack = make_attack("pgd", "linf", **params)
        return attack.attack(images, loss_for("target", False), seed=seed, progress=progress).delta

    outer_alone, inner_alone = run(probes, 1), run(probes[::-1].copy(), 2)
    inner: list[np.ndarray] = []

    def progress(i: int, n: int) -> None:
        if not inner:
            inner.append(run(probes[::-1].copy(), 2))

    outer = run(probes, 1, progress)
    np.testing.assert_array_equal(outer, outer_alone)
    np.testing.assert_array_equal(inner[0], inner_alone)


def test_requests_that_differ_only_in_seed_share_a_batch() -> None:
    """Each face carries its own seed (``Protector.attack`` seeds it with its request's seed and
    its index), so the seed does not split batches; other attack options still do."""
    attack = ChunkedAttack()

    async def scenario() -> list[np.ndarray]:
        batcher = AttackBatcher(attack, max_wait_seconds=0.5, interleave=False)
        try:
            jobs = [_job(1, 20, seed=1), _job(2, 20, seed=2), _job(1, 20, seed=3), _job(1, 30)]
            return await asyncio.gather(*(batcher.submit(j) for j in jobs))
        finally:
            await batcher.close()

    results = asyncio.run(scenario())
    assert attack.log == ["start 4x20", "end 4x20", "start 1x30", "end 1x30"]
    assert [r.shape[0] for r in results] == [1, 2, 1, 1]
