"""Taking the email and document claims for a new user, with take-over of claims left by crashed writers.

A claim whose owner never reached the event log within `stale_after` seconds belongs to a writer that
died between claiming and appending (a registration refuses to append once `write_deadline` has passed
since it claimed, and an append gives up within ~25 s, so `stale_after` must exceed both together).

A retry with an Idempotency-Key derives the same user id, so it finds its claims already its own; it renews
them (CAS) so that the write deadline counts from the retry, not from the attempt that died.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from eventflow.claims import Claim, UniquenessClaims

STALE_AFTER_S = 60.0
WRITE_DEADLINE_S = 15.0
TAKE_OVER_ATTEMPTS = 3
RENEW_AFTER_S = 5.0


def clave_de_solicitud(usuario_id: str) -> str:
    """The claim that pins an Idempotency-Key's user id to one request (its fingerprint is the owner)."""
    return f"solicitud.{usuario_id}"


@dataclass
class Unicidad:
    claims: UniquenessClaims
    appeared: Callable[[str], Awaitable[bool]]  # did this user id reach the event log? (the leader says)
    stale_after: float = STALE_AFTER_S

    async def take(self, key: str, owner: str) -> Claim | None:
        """Our claim on `key`, or None when a live user (or a writer still in time) holds it."""
        for _ in range(TAKE_OVER_ATTEMPTS):
            held = await self.claims.claim(key, owner)
            if held.owner == owner and time.time() - held.claimed_at < RENEW_AFTER_S:
                return held
            if held.owner == owner:  # ours from an earlier attempt with the same Idempotency-Key
                if await self.claims.take_over(held, owner):
                    mine = await self.claims.get(key)
                    if mine is not None and mine.owner == owner:
                        return mine
                continue
            if time.time() - held.claimed_at < self.stale_after or await self.appeared(held.owner):
                return None
            if await self.claims.take_over(held, owner):
                mine = await self.claims.get(key)
                if mine is not None and mine.owner == owner:
                    return mine
        return None

    async def solicitud(self, usuario_id: str, huella: str) -> bool:
        """True when this user id is free or already pinned to the same request (fingerprint `huella`)."""
        held = await self.claims.claim(clave_de_solicitud(usuario_id), huella)
        return held.owner == huella

    async def liberar_solicitud(self, usuario_id: str, huella: str) -> None:
        """After a refusal nothing was written, so the key may be used again with another body."""
        held = await self.claims.get(clave_de_solicitud(usuario_id))
        if held is not None and held.owner == huella:
            await self.claims.release(held)

    async def release(self, held: list[Claim]) -> None:
        for claim in reversed(held):
            await self.claims.release(claim)
