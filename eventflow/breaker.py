"""A pause after a failure of a dependency a request can do without (Redis, the AP side).

A hung Redis costs every command the client's socket timeout (0.5 s, eventflow.runtime). Where a request has another
way to answer (the log, failing open), it should pay that once, not on every request: after a failure the breaker is
open for `pause_s` and callers take their other way at once; the first call after the pause asks Redis again (and a
failure opens it again).
"""

from __future__ import annotations

import time
from collections.abc import Callable

PAUSE_S = 2.0


class Breaker:
    def __init__(self, pause_s: float = PAUSE_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.pause_s = pause_s
        self.clock = clock
        self._until = 0.0

    @property
    def open(self) -> bool:
        """True while callers should not ask the dependency."""
        return self.clock() < self._until

    def failed(self) -> None:
        self._until = self.clock() + self.pause_s
