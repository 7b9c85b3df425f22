from __future__ import annotations

import pytest

from eventflow.retry import retry_by_time


class Flaky:
    """Fails with `error` for the first `failures` calls, then answers `value`."""

    def __init__(self, failures: int, error: Exception, value: str = "ok") -> None:
        self.failures, self.error, self.value, self.calls = failures, error, value, 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return self.value


async def test_retries_until_the_call_succeeds_and_reports_each_retry():
    call, seen = Flaky(3, ConnectionError("down")), []
    assert await retry_by_time(call, 5, on_retry=seen.append, first_delay=0.001) == "ok"
    assert call.calls == 4 and len(seen) == 3 and all(isinstance(e, ConnectionError) for e in seen)


async def test_an_error_it_may_not_retry_is_raised_at_once():
    call = Flaky(5, KeyError("conflict"))
    with pytest.raises(KeyError):
        await retry_by_time(call, 5, retry_if=lambda e: not isinstance(e, KeyError), first_delay=0.001)
    assert call.calls == 1


async def test_it_gives_up_by_time_with_the_last_error():
    call = Flaky(10_000, TimeoutError("slow"))
    with pytest.raises(TimeoutError):
        await retry_by_time(call, 0.3, first_delay=0.01, max_delay=0.05)
    assert 3 < call.calls < 10_000  # it kept trying through the window, then stopped on its own
