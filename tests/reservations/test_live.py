"""Live availability: the seat map and its changes (pure), the relay's ordering and resync (real NATS), and the
whole feed on a real server: a purchase seen as held, then sold, by a viewer's Server-Sent Events stream."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import orjson
import pytest
from nats.js import JetStreamContext

from eventflow.config import Settings
from eventflow.jetstream import connect
from services.reservations.bootstrap import create_app
from services.reservations.inventory import HoldRequest, Inventory, asientos_cambiados, ocupacion
from services.reservations.live import Relay, subject
from services.reservations.payments_sim import SimulatedPaymentGateway
from tests.reservations.helpers import Catalog, key, platform, reserva, serve
from tests.reservations.sse import events
from tests.reservations.test_api import reservas_cfg

T0 = 1_000.0


def seated() -> Inventory:
    return Inventory.for_event(5, [{"nombre": "A", "asientos": 3}, {"nombre": "B", "asientos": 2}])


def test_the_map_has_one_letter_per_seat_and_the_changes_name_each_seat_once() -> None:
    inv = seated()
    inv.hold(HoldRequest("r1", "ev", "u1", 2, ("A-2", "B-1"), 60.0, None), T0)
    inv.hold(HoldRequest("r2", "ev", "u2", 1, ("A-3",), 60.0, None), T0)
    inv.confirm("r2", T0)
    occ = ocupacion(inv.copy(), T0)
    assert (occ.capacidad, occ.vendidas, occ.retenidas, occ.disponibles) == (5, 1, 2, 2)
    assert occ.secciones == (("A", 3, "LRV"), ("B", 2, "RL"))

    before = inv.copy()
    inv.confirm("r1", T0)  # held -> sold
    inv.release("r2", T0)  # an unsettled sale given back -> free
    inv.hold(HoldRequest("r3", "ev", "u3", 1, ("B-2",), 60.0, None), T0)  # free -> held
    assert asientos_cambiados(before, inv) == {"L": ["A-3"], "R": ["B-2"], "V": ["A-2", "B-1"]}
    assert asientos_cambiados(inv, inv.copy()) == {"L": [], "R": [], "V": []}

    expired = inv.copy()
    expired.prune(T0 + 61)  # r3's hold ran out: its seat is free again
    assert asientos_cambiados(inv, expired) == {"L": ["B-2"], "R": [], "V": []}
    assert ocupacion(Inventory.for_event(7, None), T0).secciones is None


def test_changes_in_a_large_venue_are_found_without_looking_at_every_seat() -> None:
    inv = Inventory.for_event(100_000, [{"nombre": "S", "asientos": 100_000}])
    inv.hold(HoldRequest("big", "ev", "u", 50, (), 60.0, None), T0)
    inv.confirm("big", T0)
    before = inv.copy()
    inv.hold(HoldRequest("r", "ev", "u", 2, ("S-77777", "S-99999"), 60.0, None), T0)
    assert asientos_cambiados(before, inv) == {"L": [], "R": ["S-77777", "S-99999"], "V": []}
    letters = ocupacion(inv.copy(), T0).secciones[0][2]  # type: ignore[index]
    assert letters[:50] == "V" * 50 and letters[77776] == "R" and letters.count("L") == 100_000 - 52


class ScriptedMap:
    """The relay's map reader, answering the revision a test sets; counts how often it was asked."""

    def __init__(self, revision: int) -> None:
        self.revision = revision
        self.reads = 0

    async def __call__(self, evento_id: str) -> dict[str, Any]:
        self.reads += 1
        return {"evento_id": evento_id, "revision": self.revision, "disponibles": 100 - self.revision}


async def test_the_relay_forwards_the_chain_in_order_and_resends_the_map_when_a_link_is_missing(
    settings: Settings,
) -> None:
    nc = await connect(settings.nats_url, "relay-test")
    evento = f"ev-{uuid.uuid4().hex[:8]}"
    reader = ScriptedMap(10)
    relay = Relay(nc, reader)
    stream = relay.stream(evento)
    try:
        assert (await anext(stream)).startswith(b"retry:")
        assert b"event: estado\nid: 10\n" in await anext(stream)
        assert relay.viewers == 1

        async def publish(anterior: int, revision: int) -> None:
            message = {"evento_id": evento, "revision": revision, "anterior": anterior, "disponibles": 100 - revision}
            await nc.publish(subject(evento), orjson.dumps(message))
            await nc.flush()

        await publish(9, 10)  # already in the map: skipped
        await publish(10, 11)
        got = await anext(stream)
        assert got.startswith(b"event: cambio\nid: 11\n"), got
        reader.revision = 14
        await publish(12, 13)  # 11 -> 12 was lost: the relay sends the map instead
        got = await anext(stream)
        assert got.startswith(b"event: estado\nid: 14\n") and reader.reads == 2, got
        await publish(13, 14)  # in the map already
        await publish(14, 15)
        assert (await anext(stream)).startswith(b"event: cambio\nid: 15\n")
    finally:
        await stream.aclose()
        assert relay.viewers == 0, "a viewer that left is forgotten (and its subscription dropped)"
        await nc.drain()


async def test_the_relay_ends_its_streams_when_the_process_is_asked_to_stop(settings: Settings) -> None:
    nc = await connect(settings.nats_url, "relay-stop-test")
    stopping = asyncio.Event()
    relay = Relay(nc, ScriptedMap(1), stopping)
    chunks: list[bytes] = []
    mapped = asyncio.Event()  # the stream is past its first map, waiting for changes

    async def read_all() -> None:
        async for chunk in relay.stream("ev-stop"):
            chunks.append(chunk)
            if len(chunks) == 2:
                mapped.set()

    reader = asyncio.create_task(read_all())
    await asyncio.wait_for(mapped.wait(), 5)
    stopping.set()
    await asyncio.wait_for(reader, 5)
    assert relay.viewers == 0
    await nc.drain()


class SeatMap:
    """What a browser keeps: the map from `estado`, patched by each `cambio` (one section here)."""

    def __init__(self) -> None:
        self.states: list[str] = []
        self.names: list[str] = []  # what came: a change must come as a `cambio`, not as a fresh map

    def apply(self, name: str, data: dict[str, Any]) -> str:
        self.names.append(name)
        if name == "estado":
            self.states = list(data["secciones"][0]["estados"])
        elif name == "cambio":
            for state, seats in data["asientos"].items():
                for seat in seats:
                    self.states[int(seat.rsplit("-", 1)[1]) - 1] = state
        return "".join(self.states)


@pytest.fixture
async def live(settings: Settings, js: JetStreamContext, owner: str) -> AsyncIterator[tuple[str, Catalog]]:
    """A real reservations server whose payments take a moment, so a purchase is seen held before sold."""
    async with AsyncExitStack() as stack:
        s = await stack.enter_async_context(platform(settings))
        slow = SimulatedPaymentGateway(js, latency_s=0.3)
        url = await stack.enter_async_context(serve(create_app(s, reservas=reservas_cfg(owner), pagos=slow)))
        catalog = Catalog(s)
        stack.push_async_callback(catalog.aclose)
        yield url, catalog


async def test_a_viewer_sees_the_seats_held_then_sold_and_the_count_drop(live: tuple[str, Catalog]) -> None:
    url, catalog = live
    evento = await catalog.evento(6, secciones=[{"nombre": "Platea", "asientos": 6}])
    buyer = await catalog.usuario()
    async with (
        httpx.AsyncClient(timeout=30) as http,
        events(http, f"{url}/api/disponibilidad/{evento}/en-vivo") as feed,
    ):
        name, first = await feed.next()
        assert name == "estado" and first["disponibles"] == 6
        assert first["secciones"] == [{"nombre": "Platea", "asientos": 6, "estados": "LLLLLL"}]
        body = reserva(buyer, evento, 2, asientos=["Platea-3", "Platea-4"])
        purchase = asyncio.create_task(
            http.post(f"{url}/api/reservar", json=body, headers={"Idempotency-Key": key(), **catalog.headers(buyer)})
        )
        seen = SeatMap()
        seen.apply("estado", first)
        held = await feed.until(lambda n, d: seen.apply(n, d) == "LLRRLL")
        assert (held["retenidas"], held["disponibles"]) == (2, 4)
        sold = await feed.until(lambda n, d: seen.apply(n, d) == "LLVVLL")
        assert (sold["vendidas"], sold["retenidas"], sold["disponibles"]) == (2, 0, 4)
        assert seen.names[0] == "estado" and "cambio" in seen.names[1:], "changes are sent as changes"
        assert (await purchase).json()["estado"] == "confirmada"
    snapshot = (await httpx.AsyncClient().get(f"{url}/api/disponibilidad/{evento}")).json()
    assert snapshot["secciones"][0]["estados"] == "LLVVLL" and snapshot["disponibles"] == 4
    async with httpx.AsyncClient() as http:
        missing = await http.get(f"{url}/api/disponibilidad/{uuid.uuid4()}/en-vivo")
        assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
