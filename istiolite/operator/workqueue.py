"""A work queue of keys, as controllers keep one: a key queued many times is worked on once,
never by two workers at a time, and a failed key comes back after an exponential backoff."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from istiolite.logs import get_logger

log = get_logger("workqueue")

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    """`add(key)` from anywhere on the loop; `run(work, workers)` calls `await work(key)`
    with at most `workers` at once. `work` raising means retry later (backoff from `base` to
    `cap` seconds, with jitter); returning means done."""

    def __init__(self, *, base: float = 0.2, cap: float = 30.0) -> None:
        self._queue: asyncio.Queue[K] = asyncio.Queue()
        self._queued: set[K] = set()  # waiting in the queue
        self._active: set[K] = set()  # being worked on
        self._again: set[K] = set()  # added while being worked on: queued when that ends
        self._failures: dict[K, int] = {}
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._base, self._cap = base, cap

    def __len__(self) -> int:
        return len(self._queued) + len(self._timers)

    def add(self, key: K) -> None:
        if key in self._active:
            self._again.add(key)
        elif key not in self._queued:
            timer = self._timers.pop(key, None)
            if timer is not None:
                timer.cancel()
            self._queued.add(key)
            self._queue.put_nowait(key)

    def _retry_later(self, key: K) -> None:
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        delay = min(self._cap, self._base * 2 ** (failures - 1)) * random.uniform(0.8, 1.2)

        def fire() -> None:
            self._timers.pop(key, None)
            self.add(key)

        if key not in self._timers:
            self._timers[key] = asyncio.get_running_loop().call_later(delay, fire)

    async def run(self, work: Callable[[K], Awaitable[None]], workers: int) -> None:
        """Until cancelled; pending retries are dropped then."""
        tasks = [asyncio.create_task(self._worker(work)) for _ in range(max(1, workers))]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            for timer in self._timers.values():
                timer.cancel()
            self._timers.clear()

    async def _worker(self, work: Callable[[K], Awaitable[None]]) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._active.add(key)
            try:
                await work(key)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                failures = self._failures.get(key, 0) + 1
                log.warning("work failed; retrying with backoff", key=str(key),
                            error=str(err)[:300], failures=failures)  # fmt: skip
                self._retry_later(key)
            else:
                self._failures.pop(key, None)
            finally:
                self._active.discard(key)
            if key in self._again:
                self._again.discard(key)
                self.add(key)
