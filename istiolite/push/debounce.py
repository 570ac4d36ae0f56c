"""Debounce: merge a burst of config changes into one push (quiet period, with a ceiling)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from istiolite.logs import get_logger

T = TypeVar("T")
log = get_logger("push")


class Debouncer(Generic[T]):
    """Calls `flush(items)` once no change has arrived for `quiet` seconds, or `max_delay` after
    the first change of a burst, whichever comes first. Changes during a flush start a new burst.
    """

    def __init__(
        self,
        flush: Callable[[list[T]], Awaitable[None]],
        *,
        quiet: float = 0.1,
        max_delay: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._flush = flush
        self._quiet = quiet
        self._max_delay = max_delay
        self._clock = clock
        self._pending: list[T] = []
        self._first_at = 0.0
        self._last_at = 0.0
        self._wakeup = asyncio.Event()

    def add(self, item: T) -> None:
        now = self._clock()
        if not self._pending:
            self._first_at = now
        self._pending.append(item)
        self._last_at = now
        self._wakeup.set()

    async def run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                now = self._clock()
                due = min(self._last_at + self._quiet, self._first_at + self._max_delay)
                if now < due:
                    try:
                        await asyncio.wait_for(self._wakeup.wait(), timeout=due - now)
                        self._wakeup.clear()
                    except TimeoutError:
                        pass
                    continue
                items, self._pending = self._pending, []
                try:
                    await self._flush(items)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # One failed push must not stop every later one; the next change retries.
                    log.exception("push failed", changes=len(items))
