"""The breaker that lets a request skip Redis for a while after a failure (eventflow.breaker)."""

from __future__ import annotations

from eventflow.breaker import Breaker


def test_open_for_the_pause_after_each_failure_then_closed() -> None:
    now = [50.0]
    breaker = Breaker(pause_s=2.0, clock=lambda: now[0])
    assert not breaker.open
    breaker.failed()
    now[0] += 1.9
    assert breaker.open
    now[0] += 0.2
    assert not breaker.open, "the pause is over: the next call asks the dependency again"
    breaker.failed()
    assert breaker.open, "a failure after the pause opens it again"
