"""The operator's work queue: a key queued many times is worked once, never by two workers at
once, and a failure comes back after a backoff."""

from __future__ import annotations

import asyncio
import contextlib
import itertools

from istiolite.operator.workqueue import WorkQueue


async def test_a_key_is_worked_once_and_never_twice_at_a_time() -> None:
    queue: WorkQueue[str] = WorkQueue()
    active: set[str] = set()
    done: list[str] = []
    overlap = False
    release = asyncio.Event()

    async def work(key: str) -> None:
        nonlocal overlap
        overlap = overlap or key in active
        active.add(key)
        await release.wait()
        active.discard(key)
        done.append(key)

    for key in ("a", "a", "b", "a"):
        queue.add(key)
    runner = asyncio.create_task(queue.run(work, workers=4))
    await asyncio.sleep(0.05)
    queue.add("a")  # while "a" is worked on: once more after it, not alongside
    release.set()
    for _ in range(100):
        if len(done) == 3:
            break
        await asyncio.sleep(0.01)
    runner.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await runner
    assert sorted(done) == ["a", "a", "b"] and not overlap


async def test_a_failed_key_is_retried_with_backoff() -> None:
    queue: WorkQueue[str] = WorkQueue(base=0.01, cap=0.05)
    attempts: list[float] = []
    succeeded = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def work(_key: str) -> None:
        attempts.append(loop.time())
        if len(attempts) < 4:
            raise ConnectionError("API server down")
        succeeded.set()

    queue.add("default")
    runner = asyncio.create_task(queue.run(work, workers=1))
    try:
        await asyncio.wait_for(succeeded.wait(), 5)
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
    assert len(attempts) == 4
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert all(gap >= 0.008 for gap in gaps)  # waited (0.01 s x jitter 0.8..1.2), not spun
    assert len(queue) == 0
