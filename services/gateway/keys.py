"""An issuer's public keys as the gateway fetches them: one refresh at a time, shared, and paused after a failure.

eventflow.auth.HttpJwks refreshes when a token names a key id it does not know, under a lock, and tries again
at the next such token when a fetch failed. With the key server hung, every token with a new (or made-up) key id
queued for its own fetch behind the others: six at once took 0.3, 0.6 ... 1.8 s with a 0.3 s timeout (2 s each
by default). Here callers that arrive during a refresh wait for that one, and after a refresh that brought no
new keys none is tried for `pause_s`: a flood of made-up key ids costs one fetch per pause, not one each.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

from joserfc.jwk import KeySet

from eventflow.auth import KeySource

PAUSE_AFTER_FAILURE_S = 5.0


class SharedRefresh:
    def __init__(
        self, keys: KeySource, pause_s: float = PAUSE_AFTER_FAILURE_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.keys, self.pause_s, self.clock = keys, pause_s, clock
        self._running: asyncio.Future[None] | None = None
        self._failed_at = -math.inf

    def keyset(self) -> KeySet:
        return self.keys.keyset()

    async def refresh(self) -> None:
        if self._running is None:
            if self.clock() - self._failed_at < self.pause_s:
                return
            self._running = asyncio.ensure_future(self._attempt())
        await asyncio.shield(self._running)  # a caller that goes away does not cancel the others' refresh

    async def _attempt(self) -> None:
        before = self.keys.keyset()
        try:
            await self.keys.refresh()
        finally:
            self._running = None
            if self.keys.keyset() is before:  # failed (or skipped, fetched just now): not again for a while
                self._failed_at = self.clock()
