"""Live availability: what the inventory's group commits change, pushed to browsers as Server-Sent Events.

- Publisher: after each committed write of an event's inventory, a small core-NATS message on
  `disponibilidad.<evento_id>`: the counts, the seats that changed (by their new state), the key's revision and
  the revision it replaced. Core NATS, not JetStream: it is a notification, not a fact (the inventory key is the
  fact), so it costs no fsync on the hot path.
- Relay (every replica): one NATS subscription per event that has viewers in this process, fanned out to their
  SSE streams. Each stream starts with the whole map (`estado`), then forwards changes (`cambio`) in revision
  order. The revisions form a chain (each write names the one it replaced), so a stream that sees a link
  missing (a message lost, two replicas' messages crossing, a slow viewer whose queue overflowed) sends a fresh
  map instead: what a viewer sees always converges to the inventory.

Holds that expire with no other activity on the event show as held until the event's next write or the
viewer's next map (a reconnect): the inventory only prunes them when it writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from services.reservations.inventory import Inventory, Ocupacion, asientos_cambiados, ocupacion

log = logging.getLogger(__name__)
SUBJECT = "disponibilidad"
HEARTBEAT_S = 15.0
QUEUE_SIZE = 64
RETRY_MS = 1000  # EventSource reconnects after this once a stream ends

LeerEstado = Callable[[str], Awaitable[dict[str, Any]]]


def subject(evento_id: str) -> str:
    return f"{SUBJECT}.{evento_id}"


def counts(inv: Inventory) -> dict[str, int]:
    return {
        "capacidad": inv.capacidad,
        "vendidas": inv.n_vendidas,
        "retenidas": inv.n_retenidas,
        "disponibles": inv.disponibles,
    }


def cambio(evento_id: str, antes: Inventory, despues: Inventory, anterior: int, revision: int) -> dict[str, Any]:
    return {
        "evento_id": evento_id,
        "revision": revision,
        "anterior": anterior,
        **counts(despues),
        "asientos": asientos_cambiados(antes, despues),
    }


def estado_doc(evento_id: str, revision: int, occ: Ocupacion) -> dict[str, Any]:
    secciones = None
    if occ.secciones is not None:
        secciones = [{"nombre": n, "asientos": a, "estados": e} for n, a, e in occ.secciones]
    return {
        "evento_id": evento_id,
        "revision": revision,
        "capacidad": occ.capacidad,
        "vendidas": occ.vendidas,
        "retenidas": occ.retenidas,
        "disponibles": occ.disponibles,
        "secciones": secciones,
    }


@runtime_checkable
class InventarioLegible(Protocol):
    async def estado(self, evento_id: str) -> tuple[Inventory, int]: ...


def lector(store: InventarioLegible, clock: Callable[[], float] = time.time) -> LeerEstado:
    """The map as the relay and `GET /api/disponibilidad/{id}` serve it: read from the inventory's leader."""

    async def leer(evento_id: str) -> dict[str, Any]:
        inv, revision = await store.estado(evento_id)
        return estado_doc(evento_id, revision, ocupacion(inv, clock()))

    return leer


class Publisher:
    """The inventory store's `on_commit`: one message per committed write."""

    def __init__(self, nc: NATS) -> None:
        self.nc = nc

    async def __call__(self, evento_id: str, antes: Inventory, despues: Inventory, anterior: int, rev: int) -> None:
        await self.nc.publish(subject(evento_id), orjson.dumps(cambio(evento_id, antes, despues, anterior, rev)))


def sse(event: str, data: dict[str, Any], event_id: int | None = None) -> bytes:
    head = f"event: {event}\n" + (f"id: {event_id}\n" if event_id is not None else "")
    return head.encode() + b"data: " + orjson.dumps(data) + b"\n\n"


class _Viewer:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_SIZE)
        self.overflowed = False


class Relay:
    def __init__(self, nc: NATS, leer_estado: LeerEstado, stopping: asyncio.Event | None = None) -> None:
        self.nc = nc
        self.leer_estado = leer_estado
        self.stopping = stopping or asyncio.Event()
        self._viewers: dict[str, set[_Viewer]] = {}
        self._subs: dict[str, Subscription] = {}

    @property
    def viewers(self) -> int:
        return sum(len(v) for v in self._viewers.values())

    async def stream(self, evento_id: str) -> AsyncIterator[bytes]:
        viewer = _Viewer()
        await self._join(evento_id, viewer)
        try:
            yield f"retry: {RETRY_MS}\n\n".encode()
            estado = await self.leer_estado(evento_id)
            last = int(estado["revision"])
            yield sse("estado", estado, last)
            while not self.stopping.is_set():
                message = await self._next(viewer)
                if message is None:
                    yield b": latido\n\n"  # keeps proxies from closing an idle stream; finds gone clients
                    continue
                if viewer.overflowed or (message["revision"] > last and message["anterior"] != last):
                    viewer.overflowed = False
                    _drain(viewer.queue)
                    estado = await self.leer_estado(evento_id)  # a link is missing: start again from the map
                    if int(estado["revision"]) > last:
                        last = int(estado["revision"])
                        yield sse("estado", estado, last)
                    continue
                if message["revision"] <= last:
                    continue  # already in the map we sent
                last = int(message["revision"])
                yield sse("cambio", message, last)
        finally:
            await self._leave(evento_id, viewer)

    async def _next(self, viewer: _Viewer) -> dict[str, Any] | None:
        get = asyncio.ensure_future(viewer.queue.get())
        stop = asyncio.ensure_future(self.stopping.wait())
        done, _ = await asyncio.wait({get, stop}, timeout=HEARTBEAT_S, return_when=asyncio.FIRST_COMPLETED)
        for task in (get, stop):
            if not task.done():
                task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(get, stop, return_exceptions=True)
        if get in done and not get.cancelled():
            return get.result()
        return None

    async def _join(self, evento_id: str, viewer: _Viewer) -> None:
        self._viewers.setdefault(evento_id, set()).add(viewer)
        if evento_id not in self._subs:
            self._subs[evento_id] = await self.nc.subscribe(subject(evento_id), cb=self._on_message)

    async def _leave(self, evento_id: str, viewer: _Viewer) -> None:
        viewers = self._viewers.get(evento_id, set())
        viewers.discard(viewer)
        if not viewers:
            self._viewers.pop(evento_id, None)
            sub = self._subs.pop(evento_id, None)
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    async def _on_message(self, msg: Msg) -> None:
        try:
            message = orjson.loads(msg.data)
            evento_id = str(message["evento_id"])
            int(message["revision"]), int(message["anterior"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("a malformed availability message was dropped", extra={"subject": msg.subject})
            return
        for viewer in self._viewers.get(evento_id, ()):
            try:
                viewer.queue.put_nowait(message)
            except asyncio.QueueFull:
                viewer.overflowed = True  # a slow viewer gets a fresh map instead of the backlog


def _drain(queue: asyncio.Queue[dict[str, Any]]) -> None:
    while not queue.empty():
        queue.get_nowait()
