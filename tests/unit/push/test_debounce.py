"""Debouncer on a real event loop: bursts merge into one push, long bursts still push, none lost."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from istiolite.push.debounce import Debouncer

QUIET = 0.05
MAX_DELAY = 0.3
WAIT = 5.0  # generous ceiling for anything that must happen; never a timing assertion


class Flushes:
    """Records every flush; `flush` is what the Debouncer calls."""

    def __init__(self, during: Callable[[list[int]], Awaitable[None]] | None = None) -> None:
        self.batches: list[list[int]] = []
        self.during = during
        self.changed = asyncio.Event()

    async def flush(self, items: list[int]) -> None:
        self.batches.append(list(items))
        self.changed.set()
        if self.during is not None:
            await self.during(items)

    async def wait_for(self, count: int) -> None:
        async def reached() -> None:
            while len(self.batches) < count:
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(reached(), timeout=WAIT)

    @property
    def items(self) -> list[int]:
        return [item for batch in self.batches for item in batch]


@contextlib.asynccontextmanager
async def running(debouncer: Debouncer[int]) -> AsyncIterator[None]:
    task = asyncio.create_task(debouncer.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert task.done()


async def test_a_burst_flushes_once_with_all_items() -> None:
    flushes = Flushes()
    debouncer: Debouncer[int] = Debouncer(flushes.flush, quiet=QUIET, max_delay=MAX_DELAY)
    async with running(debouncer):
        for i in range(10):
            debouncer.add(i)
        await flushes.wait_for(1)
        # Several quiet periods later, nothing else has been flushed.
        await asyncio.sleep(QUIET * 4)
    assert flushes.batches == [list(range(10))]


async def test_nothing_is_flushed_without_changes() -> None:
    flushes = Flushes()
    debouncer: Debouncer[int] = Debouncer(flushes.flush, quiet=0.01, max_delay=0.02)
    async with running(debouncer):
        await asyncio.sleep(0.1)
    assert flushes.batches == []


async def test_separate_bursts_flush_separately() -> None:
    flushes = Flushes()
    debouncer: Debouncer[int] = Debouncer(flushes.flush, quiet=QUIET, max_delay=MAX_DELAY)
    async with running(debouncer):
        debouncer.add(1)
        debouncer.add(2)
        await flushes.wait_for(1)
        debouncer.add(3)
        await flushes.wait_for(2)
    assert flushes.batches == [[1, 2], [3]]


async def test_continuous_changes_still_flush_by_max_delay() -> None:
    # Changes keep arriving well within the quiet period, for several times max_delay:
    # without the ceiling nothing would be pushed until the changes stop.
    flushes = Flushes()
    debouncer: Debouncer[int] = Debouncer(flushes.flush, quiet=0.2, max_delay=MAX_DELAY)
    async with running(debouncer):
        loop = asyncio.get_running_loop()
        end = loop.time() + MAX_DELAY * 4
        i = 0
        while loop.time() < end:
            debouncer.add(i)
            i += 1
            await asyncio.sleep(0.01)
        flushed_during_burst = len(flushes.batches)
        await flushes.wait_for(flushed_during_burst + 1)
    assert flushed_during_burst >= 1
    # Nothing lost, nothing duplicated, order kept.
    assert flushes.items == list(range(i))


async def test_changes_during_a_flush_start_a_new_burst() -> None:
    debouncer: Debouncer[int]
    first_flush_running = asyncio.Event()
    release_first_flush = asyncio.Event()

    async def slow_first_flush(items: list[int]) -> None:
        if items == [1, 2]:
            first_flush_running.set()
            await release_first_flush.wait()

    flushes = Flushes(during=slow_first_flush)
    debouncer = Debouncer(flushes.flush, quiet=QUIET, max_delay=MAX_DELAY)
    async with running(debouncer):
        debouncer.add(1)
        debouncer.add(2)
        await asyncio.wait_for(first_flush_running.wait(), timeout=WAIT)
        debouncer.add(3)
        debouncer.add(4)
        release_first_flush.set()
        await flushes.wait_for(2)
        await asyncio.sleep(QUIET * 4)
    assert flushes.batches == [[1, 2], [3, 4]]


async def test_changes_during_a_long_flush_are_not_lost_even_past_max_delay() -> None:
    # The flush outlasts max_delay: the new burst is flushed right after, as one batch.
    async def slow(items: list[int]) -> None:
        if items == [1]:
            await asyncio.sleep(MAX_DELAY * 1.5)

    flushes = Flushes(during=slow)
    debouncer: Debouncer[int] = Debouncer(flushes.flush, quiet=QUIET, max_delay=MAX_DELAY)
    async with running(debouncer):
        debouncer.add(1)
        await flushes.wait_for(1)
        for i in range(2, 6):
            debouncer.add(i)
        await flushes.wait_for(2)
    assert flushes.batches == [[1], [2, 3, 4, 5]]


async def test_injected_clock_decides_when_the_burst_started() -> None:
    # With a clock that says max_delay has long passed, a burst is flushed at once,
    # even though quiet is far away.
    now = [1000.0]
    flushes = Flushes()
    debouncer: Debouncer[int] = Debouncer(
        flushes.flush, quiet=60.0, max_delay=1.0, clock=lambda: now[0]
    )
    async with running(debouncer):
        debouncer.add(1)
        now[0] += 5.0
        debouncer.add(2)
        await flushes.wait_for(1)
    assert flushes.batches == [[1, 2]]


async def test_a_failing_flush_does_not_stop_later_flushes() -> None:
    async def fail_first(items: list[int]) -> None:
        if items == [1]:
            raise RuntimeError("push failed")

    flushes = Flushes(during=fail_first)
    debouncer: Debouncer[int] = Debouncer(flushes.flush, quiet=0.01, max_delay=0.05)
    task = asyncio.create_task(debouncer.run())
    try:
        debouncer.add(1)
        await flushes.wait_for(1)
        await asyncio.sleep(0.05)
        assert not task.done(), "the debounce loop died with the failed push"
        debouncer.add(2)
        await flushes.wait_for(2)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, RuntimeError):
            await task
    assert flushes.batches == [[1], [2]]
