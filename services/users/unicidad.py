"""Taking the email and document claims for a new user, with take-over of claims left by crashed writers.

A claim whose owner never reached the event log within `stale_after` seconds belongs to a writer that
died between claiming and appending (a registration refuses to append once `write_deadline` has passed
since it claimed, and an append gives up within ~25 s, so `stale_after` must exceed both together).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from eventflow.claims import Claim, UniquenessClaims

STALE_AFTER_S = 60.0
WRITE_DEADLINE_S = 15.0
TAKE_OVER_ATTEMPTS = 3


@dataclass
class Unicidad:
    claims: UniquenessClaims
    appeared: Callable[[str], Awaitable[bool]]  # did this user id reach the event log?
    stale_after: float = STALE_AFTER_S

    async def take(self, key: str, owner: str) -> Claim | None:
        """Our claim on `key`, or None when a live user (or a writer still in time) holds it."""
        for _ in range(TAKE_OVER_ATTEMPTS):
            held = await self.claims.claim(key, owner)
            if held.owner == owner:
                return held
            if time.time() - held.claimed_at < self.stale_after or await self.appeared(held.owner):
                return None
            if await self.claims.take_over(held, owner):
                mine = await self.claims.get(key)
                if mine is not None and mine.owner == owner:
                    return mine
        return None

    async def release(self, held: list[Claim]) -> None:
        for claim in reversed(held):
            await self.claims.release(claim)
