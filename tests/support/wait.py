"""Bounded polling: wait for an observable condition, never for a fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T], *, timeout: float = 15.0, interval: float = 0.05, what: str = ""
) -> T:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
            if result:
                return result
        except Exception as err:  # not there yet (connection refused, missing key...)
            last_error = err
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what or condition}: {last_error}"
    )


async def wait_until(
    condition: Callable[[], T],
    *,
    timeout: float = 15.0,  # noqa: ASYNC109 (a deadline for polling, not for one await)
    interval: float = 0.02,
    what: str = "",
) -> T:
    """`wait_for` for coroutines: polls without blocking the event loop."""

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
