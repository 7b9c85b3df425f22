"""E-tickets and check-in end to end: the real users and events services, the reservations service on real uvicorn
servers (two of them for the doors' race), real NATS and Redis, callers signed in at the real token endpoint."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nats.js import JetStreamContext

from eventflow.auth import CONTROL, ORGANIZADOR
from eventflow.config import Settings
from services.reservations.bootstrap import create_app
from services.reservations.tickets import leer_codigo
from tests.reservations.helpers import Catalog, eventually, key, platform, reserva, serve
from tests.reservations.test_api import reservas_cfg
from tests.utils.auth import Cuenta


@dataclass
class Doors:
    urls: list[str]  # one reservations service per "door" (replicas on one NATS)
    catalog: Catalog
    http: httpx.AsyncClient
    control: Cuenta

    async def comprar(self, usuario: str, evento: str, cantidad: int = 1, **body: Any) -> dict[str, Any]:
        headers = {"Idempotency-Key": key(), **self.catalog.headers(usuario)}
        resp = await self.http.post(
            f"{self.urls[0]}/api/reservar", json=reserva(usuario, evento, cantidad, **body), headers=headers
        )
        assert resp.status_code == 201 and resp.json()["estado"] == "confirmada", resp.text
        return dict(resp.json())

    async def checkin(self, codigo: str, headers: dict[str, str], door: int = 0) -> httpx.Response:
        return await self.http.post(f"{self.urls[door]}/api/checkin", json={"codigo": codigo}, headers=headers)


@pytest.fixture
async def doors(settings: Settings, js: JetStreamContext, owner: str) -> AsyncIterator[Doors]:
    async with AsyncExitStack() as stack:
        s = await stack.enter_async_context(platform(settings))
        urls = [
            await stack.enter_async_context(serve(create_app(s, reservas=reservas_cfg(f"{owner}-{n}"))))
            for n in range(2)
        ]
        catalog = Catalog(s)
        stack.push_async_callback(catalog.aclose)
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=30))
        yield Doors(urls, catalog, http, await catalog.con_rol(CONTROL))


def public_key(jwk: dict[str, str]) -> Ed25519PublicKey:
    assert (jwk["kty"], jwk["crv"]) == ("OKP", "Ed25519")
    return Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(jwk["x"] + "=" * (-len(jwk["x"]) % 4)))


def forged(codigo: str) -> str:
    """The same ticket, signed with a key that is not the event's."""
    leido = leer_codigo(codigo)
    signature = Ed25519PrivateKey.generate().sign(leido.firmado)
    return f"{leido.firmado.decode()}.{base64.urlsafe_b64encode(signature).decode().rstrip('=')}"


async def test_a_confirmed_reservation_has_one_signed_ticket_per_entry_verifiable_offline(doors: Doors) -> None:
    usuario = await doors.catalog.usuario()
    evento = await doors.catalog.evento(5, secciones=[{"nombre": "Platea", "asientos": 5}])
    body = await doors.comprar(usuario, evento, 2, asientos=["Platea-2", "Platea-4"])
    tickets = body["tickets"]
    assert [(t["id"], t["asiento"]) for t in tickets] == [
        (f"{body['id']}-1", "Platea-2"),
        (f"{body['id']}-2", "Platea-4"),
    ]

    got = await doors.http.get(f"{doors.urls[1]}/api/reservas/{body['id']}", headers=doors.catalog.headers(usuario))
    assert got.json()["tickets"] == tickets, "codes are deterministic: every replica, every read, the same"
    organizer = await doors.catalog.organizador()
    seen = await doors.http.get(f"{doors.urls[0]}/api/reservas/{body['id']}", headers=organizer.headers)
    without_codes = [{k: v for k, v in t.items() if k != "codigo"} for t in tickets]
    assert seen.json()["tickets"] == without_codes, "the organizer sees the tickets, never their codes (the entry)"

    jwk = (await doors.http.get(f"{doors.urls[1]}/api/checkin/claves/{evento}")).json()
    for ticket in tickets:
        leido = leer_codigo(ticket["codigo"])
        public_key(jwk).verify(leido.firma, leido.firmado)  # raises if it does not verify
        assert (leido.ticket.id, leido.ticket.evento_id, leido.ticket.asiento) == (
            ticket["id"],
            evento,
            ticket["asiento"],
        )
    other = await doors.catalog.evento()
    other_jwk = (await doors.http.get(f"{doors.urls[0]}/api/checkin/claves/{other}")).json()
    assert other_jwk["x"] != jwk["x"], "one key pair per event"
    missing = await doors.http.get(f"{doors.urls[0]}/api/checkin/claves/{uuid.uuid4()}")
    assert missing.status_code == 404


async def test_qr_and_pdf_are_for_the_tickets_owner_only(doors: Doors) -> None:
    usuario = await doors.catalog.usuario()
    evento = await doors.catalog.evento()
    body = await doors.comprar(usuario, evento, 3)
    ticket = body["tickets"][0]["id"]
    base, mine = doors.urls[0], doors.catalog.headers(usuario)

    svg = await doors.http.get(f"{base}/api/tickets/{ticket}/qr", headers=mine)
    assert svg.status_code == 200 and svg.headers["content-type"] == "image/svg+xml"
    assert svg.content.startswith(b"<?xml") and b"<svg" in svg.content
    assert svg.headers["cache-control"] == "no-store"
    png = await doors.http.get(f"{base}/api/tickets/{ticket}/qr?formato=png", headers=mine)
    assert png.headers["content-type"] == "image/png" and png.content.startswith(b"\x89PNG")
    one = await doors.http.get(f"{base}/api/tickets/{ticket}/pdf", headers=mine)
    assert one.status_code == 200 and one.content.startswith(b"%PDF")
    assert (
        one.content.count(b"/Type /Page\n") + one.content.count(b"/Type /Page>") + one.content.count(b"/Type /Page ")
        >= 1
    )
    every = await doors.http.get(f"{base}/api/reservas/{body['id']}/pdf", headers=mine)
    assert every.status_code == 200 and _pages(every.content) == 3, "one page per ticket"
    assert _pages(one.content) == 1

    organizer = await doors.catalog.organizador()
    stranger = await doors.catalog.usuario()
    for headers in (organizer.headers, doors.catalog.headers(stranger), doors.control.headers):
        for path in (f"/api/tickets/{ticket}/qr", f"/api/tickets/{ticket}/pdf", f"/api/reservas/{body['id']}/pdf"):
            resp = await doors.http.get(base + path, headers=headers)
            assert resp.status_code == 404 and resp.json()["type"] == "/problems/ticket-no-encontrado", path
    for path in (f"/api/tickets/{body['id']}-9/qr", "/api/tickets/nada/qr"):
        assert (await doors.http.get(base + path, headers=mine)).status_code == 404
    assert (await doors.http.get(f"{base}/api/tickets/{ticket}/qr")).status_code == 401


def _pages(pdf: bytes) -> int:
    import re

    return len(re.findall(rb"/Type\s*/Page[^s]", pdf))


async def test_check_in_first_entry_then_already_used_then_bad_codes(doors: Doors) -> None:
    usuario = await doors.catalog.usuario()
    evento = await doors.catalog.evento(nombre="Concierto de la puerta")
    ticket = (await doors.comprar(usuario, evento, 1))["tickets"][0]

    first = await doors.checkin(ticket["codigo"], doors.control.headers)
    assert first.status_code == 200, first.text
    answer = first.json()
    assert answer["estado"] == "valida" and answer["ticket"] == {
        "id": ticket["id"],
        "evento_id": evento,
        "asiento": None,
    }
    assert answer["evento"]["nombre"] == "Concierto de la puerta"
    assert usuario not in first.text, "door staff never see who bought it"

    again = await doors.checkin(ticket["codigo"], doors.control.headers, door=1)
    assert again.status_code == 409
    problem = again.json()
    assert (problem["type"], problem["motivo"]) == ("/problems/ya-usado", "ya_usado")
    assert problem["primera_entrada_en"] == answer["entrada_en"]
    assert usuario not in again.text

    leido = leer_codigo(ticket["codigo"])
    tampered_payload = base64.urlsafe_b64encode(f"{ticket['id']}|{evento}|VIP-1".encode()).decode().rstrip("=")
    bad = [forged(ticket["codigo"]), f"EF1.{tampered_payload}.{ticket['codigo'].split('.')[2]}", "hola", "EF1.x.y"]
    for codigo in bad:
        resp = await doors.checkin(codigo, doors.control.headers)
        assert resp.status_code == 422 and resp.json()["type"] == "/problems/codigo-invalido", codigo
    assert leido.ticket.id == ticket["id"]

    counted = await doors.http.get(f"{doors.urls[1]}/api/checkin/eventos/{evento}", headers=doors.control.headers)
    assert counted.json() == {"evento_id": evento, "entradas_validadas": 1}


async def test_a_scan_resent_with_its_key_answers_as_the_first_time_and_only_that_scan(doors: Doors) -> None:
    """The door lost the answer of the scan that let someone in and resends it: "valid" again, the same entry.
    Any other scan of that ticket (a new key, or the same key from another account) is still "already used"."""
    usuario = await doors.catalog.usuario()
    evento = await doors.catalog.evento()
    ticket = (await doors.comprar(usuario, evento, 1))["tickets"][0]
    scan = {**doors.control.headers, "Idempotency-Key": key()}

    first = await doors.checkin(ticket["codigo"], scan)
    resent = await doors.checkin(ticket["codigo"], scan, door=1)
    assert (first.status_code, resent.status_code) == (200, 200), resent.text
    assert resent.json()["entrada_en"] == first.json()["entrada_en"]

    other_scan = await doors.checkin(ticket["codigo"], {**doors.control.headers, "Idempotency-Key": key()})
    assert other_scan.status_code == 409 and other_scan.json()["motivo"] == "ya_usado"
    other_door = await doors.catalog.con_rol(CONTROL)
    same_key_elsewhere = await doors.checkin(
        ticket["codigo"], {**other_door.headers, "Idempotency-Key": scan["Idempotency-Key"]}
    )
    assert same_key_elsewhere.status_code == 409, same_key_elsewhere.text
    counted = await doors.http.get(f"{doors.urls[0]}/api/checkin/eventos/{evento}", headers=doors.control.headers)
    assert counted.json()["entradas_validadas"] == 1


async def test_a_door_for_one_event_refuses_another_events_ticket_and_leaves_it_unused(doors: Doors) -> None:
    usuario = await doors.catalog.usuario()
    manana, hoy = await doors.catalog.evento(), await doors.catalog.evento()
    ticket = (await doors.comprar(usuario, manana, 1))["tickets"][0]
    url = f"{doors.urls[0]}/api/checkin"
    at_today = {"codigo": ticket["codigo"], "evento_id": hoy}
    wrong = await doors.http.post(url, json=at_today, headers=doors.control.headers)
    assert wrong.status_code == 409 and wrong.json()["motivo"] == "otro_evento", wrong.text
    right = await doors.http.post(
        url, json={"codigo": ticket["codigo"], "evento_id": manana}, headers=doors.control.headers
    )
    assert right.status_code == 200, right.text


async def test_who_may_check_in(doors: Doors) -> None:
    usuario = await doors.catalog.usuario()
    evento = await doors.catalog.evento()
    tickets = (await doors.comprar(usuario, evento, 3))["tickets"]
    other_organizer = await doors.catalog.con_rol(ORGANIZADOR)

    assert (await doors.checkin(tickets[0]["codigo"], doors.catalog.headers(usuario))).status_code == 403
    assert (await doors.checkin(tickets[0]["codigo"], other_organizer.headers)).status_code == 403
    assert (await doors.checkin(tickets[0]["codigo"], {})).status_code == 401
    organizer = await doors.catalog.organizador()
    assert (await doors.checkin(tickets[0]["codigo"], organizer.headers)).status_code == 200
    count = f"{doors.urls[0]}/api/checkin/eventos/{evento}"
    assert (await doors.http.get(count, headers=other_organizer.headers)).status_code == 403
    assert (await doors.http.get(count, headers=organizer.headers)).json()["entradas_validadas"] == 1


async def test_a_cancelled_reservations_tickets_do_not_enter(doors: Doors) -> None:
    usuario = await doors.catalog.usuario()
    evento = await doors.catalog.evento()
    body = await doors.comprar(usuario, evento, 2)
    cancelled = await doors.http.post(
        f"{doors.urls[0]}/api/reservas/{body['id']}/cancelar", headers=doors.catalog.headers(usuario)
    )
    assert cancelled.status_code == 200 and cancelled.json()["estado"] == "cancelada", cancelled.text
    assert cancelled.json()["tickets"] == [] and cancelled.json()["reembolso_centimos"] == body["importe_centimos"]
    for ticket in body["tickets"]:
        resp = await doors.checkin(ticket["codigo"], doors.control.headers)
        assert resp.status_code == 409 and resp.json()["motivo"] == "cancelada", resp.text
    qr = await doors.http.get(
        f"{doors.urls[0]}/api/tickets/{body['tickets'][0]['id']}/qr", headers=doors.catalog.headers(usuario)
    )
    assert qr.status_code == 404


async def test_a_reservation_someone_entered_with_is_not_cancelled_or_refunded(doors: Doors) -> None:
    usuario = await doors.catalog.usuario()
    evento = await doors.catalog.evento()
    body = await doors.comprar(usuario, evento, 2)
    entered = await doors.checkin(body["tickets"][0]["codigo"], doors.control.headers)
    assert entered.status_code == 200
    refused = await doors.http.post(
        f"{doors.urls[0]}/api/reservas/{body['id']}/cancelar", headers=doors.catalog.headers(usuario)
    )
    assert refused.status_code == 409 and refused.json()["motivo"] == "entradas_usadas", refused.text
    assert refused.json()["primera_entrada_en"] == entered.json()["entrada_en"]
    still = await doors.http.get(f"{doors.urls[1]}/api/reservas/{body['id']}", headers=doors.catalog.headers(usuario))
    assert still.json()["estado"] == "confirmada" and still.json()["reembolso_centimos"] == 0
    assert (await doors.checkin(body["tickets"][1]["codigo"], doors.control.headers)).status_code == 200


async def test_a_scan_racing_a_cancellation_has_one_winner(doors: Doors) -> None:
    """A door scan and the buyer's cancellation released together, on two replicas: either the person is in and
    the reservation stays (409 entradas_usadas), or it is cancelled and refunded and the scan is 409 cancelada.
    Never both. The count of entries leaves voided tickets out."""
    outcomes = set()
    for _ in range(4):
        usuario = await doors.catalog.usuario()
        evento = await doors.catalog.evento()
        body = await doors.comprar(usuario, evento, 1)
        go = asyncio.Event()

        async def scan(codigo: str = body["tickets"][0]["codigo"], gate: asyncio.Event = go) -> httpx.Response:
            await gate.wait()
            return await doors.checkin(codigo, doors.control.headers, door=1)

        async def cancel(reserva: str = body["id"], gate: asyncio.Event = go, who: str = usuario) -> httpx.Response:
            await gate.wait()
            url = f"{doors.urls[0]}/api/reservas/{reserva}/cancelar"
            return await doors.http.post(url, headers=doors.catalog.headers(who))

        tasks = [asyncio.create_task(scan()), asyncio.create_task(cancel())]
        await asyncio.sleep(0)
        go.set()
        scanned, cancelled = await asyncio.gather(*tasks)
        if scanned.status_code == 200:
            assert cancelled.status_code == 409 and cancelled.json()["motivo"] == "entradas_usadas", cancelled.text
        else:
            assert scanned.json()["motivo"] == "cancelada", scanned.text
            assert cancelled.status_code == 200 and cancelled.json()["estado"] == "cancelada", cancelled.text
        outcomes.add(scanned.status_code)
        count = f"{doors.urls[0]}/api/checkin/eventos/{evento}"
        entries = (await doors.http.get(count, headers=doors.control.headers)).json()["entradas_validadas"]
        assert entries == (1 if scanned.status_code == 200 else 0)
    assert outcomes <= {200, 409}


async def test_two_doors_scanning_one_ticket_at_the_same_moment_let_it_in_once(doors: Doors) -> None:
    """Real concurrency on two real servers (two replicas on one NATS): 16 scans released together."""
    usuario = await doors.catalog.usuario()
    evento = await doors.catalog.evento()
    tickets = (await doors.comprar(usuario, evento, 3))["tickets"]
    clients = [httpx.AsyncClient(timeout=30) for _ in range(16)]
    try:
        for ticket in tickets:
            go = asyncio.Event()

            async def scan(n: int, codigo: str = ticket["codigo"], gate: asyncio.Event = go) -> httpx.Response:
                await gate.wait()
                url = f"{doors.urls[n % 2]}/api/checkin"
                return await clients[n].post(url, json={"codigo": codigo}, headers=doors.control.headers)

            scans = [asyncio.create_task(scan(n)) for n in range(16)]
            await asyncio.sleep(0)  # every task is waiting at the gate
            go.set()
            answers = await asyncio.gather(*scans)
            statuses = sorted(a.status_code for a in answers)
            assert statuses == [200] + [409] * 15, statuses
            first = next(a.json() for a in answers if a.status_code == 200)
            assert {a.json()["primera_entrada_en"] for a in answers if a.status_code == 409} == {first["entrada_en"]}
    finally:
        for client in clients:
            await client.aclose()
    counted = await doors.http.get(f"{doors.urls[0]}/api/checkin/eventos/{evento}", headers=doors.control.headers)
    assert counted.json()["entradas_validadas"] == 3


async def test_my_tickets_lists_only_my_reservations_newest_first_paged_and_current(doors: Doors) -> None:
    usuario, otro = await doors.catalog.usuario(), await doors.catalog.usuario()
    evento = await doors.catalog.evento(10, secciones=[{"nombre": "Palco", "asientos": 10}])
    primera = await doors.comprar(usuario, evento, 1, asientos=["Palco-1"])
    segunda = await doors.comprar(usuario, evento, 2, asientos=["Palco-2", "Palco-3"])
    ajena = await doors.comprar(otro, evento, 1, asientos=["Palco-4"])
    url, mine = f"{doors.urls[1]}/api/reservas", doors.catalog.headers(usuario)

    async def listed() -> bool:
        return (await doors.http.get(url, headers=mine)).json()["total"] == 2

    await eventually(listed)
    page = (await doors.http.get(url, headers=mine)).json()
    assert [r["id"] for r in page["items"]] == [segunda["id"], primera["id"]], "newest first"
    assert page["items"][0]["tickets"] == segunda["tickets"] and page["next_offset"] is None
    assert ajena["id"] not in str(page), "only the caller's own"

    first = (await doors.http.get(url, params={"limit": 1}, headers=mine)).json()
    assert ([r["id"] for r in first["items"]], first["next_offset"]) == ([segunda["id"]], 1)
    rest = (await doors.http.get(url, params={"limit": 1, "offset": 1}, headers=mine)).json()
    assert ([r["id"] for r in rest["items"]], rest["next_offset"]) == ([primera["id"]], None)

    cancel = await doors.http.post(f"{doors.urls[0]}/api/reservas/{primera['id']}/cancelar", headers=mine)
    assert cancel.status_code == 200, cancel.text
    now = (await doors.http.get(url, headers=mine)).json()["items"]
    assert (now[1]["estado"], now[1]["tickets"]) == ("cancelada", []), "each item is read as it stands now"

    assert (await doors.http.get(url)).status_code == 401
    assert (await doors.http.get(url, params={"limit": 51}, headers=mine)).status_code == 422
