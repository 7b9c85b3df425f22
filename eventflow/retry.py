"""Retrying by time, not by count: a NATS leader election pauses writes for 4-10 s (measured-here.md).

A retried write must be safe to repeat (a `Nats-Msg-Id`, a compare-and-set, an idempotency key): the
first attempt may have landed even though its answer was lost.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def _always(_: Exception) -> bool:
    return True


async def retry_by_time(
    call: Callable[[], Awaitable[T]],
    seconds: float,
    *,
    retry_if: Callable[[Exception], bool] = _always,
    on_retry: Callable[[Exception], None] | None = None,
    first_delay: float = 0.05,
    max_delay: float = 1.0,
) -> T:
    """Await `call()` until it succeeds. An error `retry_if` refuses is raised at once; a retryable one is
    raised when the next wait would end past `seconds` from the start. Waits double, with jitter, so
    many callers failing together do not retry together.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    delay = first_delay
    while True:
        try:
            return await call()
        except Exception as err:
            if not retry_if(err) or loop.time() + delay > deadline:
                raise
            if on_retry is not None:
                on_retry(err)
        await asyncio.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, max_delay)
