"""Finishing registrations whose outcome is unknown (NATS did not answer, a request may still land).

nats-py buffers requests while it reconnects, so a claim or an append that timed out here can still be
applied once NATS is back. Until then nothing can be decided; afterwards, either the user is in the log
(keep everything) or it is not (give back the claims it owns, delete its data key). Retried with backoff
for a while; if this process dies first, the stale-claim take-over is the last resort.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from eventflow.claims import UniquenessClaims
from services.users.cuentas import Cuentas
from services.users.privacy import DataKeys

log = logging.getLogger(__name__)
RETRY_FOR_S = 120.0
MAX_DELAY_S = 2.0


@dataclass
class Reconciler:
    claims: UniquenessClaims
    data_keys: DataKeys
    appeared: Callable[[str], Awaitable[bool]]  # asks the stream leader: a lagging replica's "no" would shred
    cuentas: Cuentas | None = None
    retry_for: float = RETRY_FOR_S
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def undo(self, usuario_id: str, keys: list[str]) -> None:
        """Compensation of a registration known not to be in the log: reverse order of the steps."""
        if self.cuentas is not None:
            await self.cuentas.borrar(usuario_id)
        await self.data_keys.delete(usuario_id)
        for key in reversed(keys):
            claim = await self.claims.get(key)
            if claim is not None and claim.owner == usuario_id:
                await self.claims.release(claim)

    def later(self, usuario_id: str, keys: list[str]) -> None:
        task = asyncio.create_task(self._settle(usuario_id, keys), name=f"reconcile:{usuario_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _settle(self, usuario_id: str, keys: list[str]) -> None:
        loop = asyncio.get_running_loop()
        deadline, delay = loop.time() + self.retry_for, 0.25
        while True:
            try:
                if await self.appeared(usuario_id):
                    log.info("registration had landed; kept", extra={"usuario_id": usuario_id})
                else:
                    await self.undo(usuario_id, keys)
                    log.info("registration did not land; compensated", extra={"usuario_id": usuario_id})
                return
            except Exception as err:
                if loop.time() > deadline:
                    log.error("gave up reconciling; claims left to the take-over", extra={"usuario_id": usuario_id})
                    return
                log.debug("reconcile retry", extra={"usuario_id": usuario_id, "error": type(err).__name__})
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_DELAY_S)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def pending(self) -> int:
        return len(self._tasks)
