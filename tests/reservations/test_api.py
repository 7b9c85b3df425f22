"""The HTTP API end to end on the real servers: real users and events services (HTTP), the real inventory
store and payment simulator (JetStream), the reservations app in-process."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from nats.js import JetStreamContext

from eventflow.config import Settings
from eventflow.crypto import Pseudonymizer
from services.reservations.bootstrap import ReservasSettings, create_app
from services.reservations.domain import reserva_id_para
from services.reservations.inventory_store import JetStreamInventoryStore
from services.reservations.payments import PaymentRetryableError
from services.reservations.payments_sim import SimulatedPaymentGateway
from tests.reservations.helpers import (
    BAD_LUHN,
    DECLINED,
    INSUFFICIENT,
    PROCESSING_ERROR,
    Catalog,
    eventually,
    key,
    pago,
    platform,
    reserva,
    serve,
)
from tests.utils.app import api_client


@dataclass
class Env:
    client: httpx.AsyncClient
    catalog: Catalog
    settings: Settings
    inventario: JetStreamInventoryStore
    pagos: SimulatedPaymentGateway

    async def reservar(self, body: dict[str, Any], idem: str | None = None, como: str | None = None) -> httpx.Response:
        """As the buyer named in the body (or `como`), signed in."""
        headers = {"Idempotency-Key": idem} if idem else {}
        headers.update(self.catalog.headers(como or body["usuario_id"]))
        return await self.client.post("/api/reservar", json=body, headers=headers)

    async def ver(self, reserva_id: str, como: str, path: str = "/api/reservas/{}") -> httpx.Response:
        return await self.client.get(path.format(reserva_id), headers=self.catalog.headers(como))

    async def cancelar(self, reserva_id: str, como: str) -> httpx.Response:
        return await self.client.post(f"/api/reservas/{reserva_id}/cancelar", headers=self.catalog.headers(como))

    def reserva_id(self, usuario_id: str, idem: str) -> str:
        return reserva_id_para(Pseudonymizer(self.settings.pseudonym_key_bytes), usuario_id, idem)

    async def comprador(self, aforo: int = 10, **evento: Any) -> tuple[str, str]:
        return await self.catalog.usuario(), await self.catalog.evento(aforo, **evento)

    async def captures(self, reserva_id: str) -> list[dict[str, Any]]:
        ops = await self.pagos.payments_for(reserva_id)
        return [op for op in ops if op.get("tipo") == "capture"]


def reservas_cfg(owner: str, **overrides: Any) -> ReservasSettings:
    values: dict[str, Any] = {
        "instancia": owner,
        "retry_for_s": 0.5,
        "compensation_retry_for_s": 2.0,
        "espera_s": 10.0,
    }
    values.update(overrides)
    return ReservasSettings(**values)


@pytest.fixture
async def env(settings: Settings, js: JetStreamContext, owner: str) -> AsyncIterator[Env]:
    async with platform(settings) as s:
        catalog = Catalog(s)
        async with api_client(create_app(s, reservas=reservas_cfg(owner))) as client:
            inventario = await JetStreamInventoryStore.create(js)
            yield Env(client, catalog, s, inventario, SimulatedPaymentGateway(js))
        await catalog.aclose()


async def test_a_reservation_is_confirmed_charged_once_and_projected(env: Env) -> None:
    usuario, evento = await env.comprador(aforo=10, precio=20.0)
    resp = await env.reservar(reserva(usuario, evento, 2), idem=key())
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["estado"] == "confirmada" and body["motivo"] is None
    assert body["importe_centimos"] == 2 * (2000 + 100)
    assert body["entradas"] == {"cantidad": 2, "asientos": []}
    assert body["pago"] == {"marca": "visa", "ultimos4": "4242"}
    assert [h["paso"] for h in body["historial"]] == ["hold", "authorize", "confirm", "capture", "record"]
    assert "4242424242424242" not in resp.text and "tok_" not in resp.text
    for path in ("/api/reservas/{}", "/api/reservar/{}"):
        got = await env.ver(body["id"], usuario, path)
        assert got.status_code == 200 and got.json()["estado"] == "confirmada"
    assert len(await env.captures(body["id"])) == 1
    assert (await env.inventario.availability(evento)).vendidas == 2

    async def projected() -> bool:
        return await env.catalog.disponibles(evento) == 8

    await eventually(projected)

    async def in_history() -> bool:
        doc = (await env.catalog.users.get(f"/api/usuarios/{usuario}", headers=env.catalog.headers(usuario))).json()
        return any(c["reserva_id"] == body["id"] for c in doc.get("historial_compras", []))

    await eventually(in_history)


@pytest.mark.parametrize(
    ("numero", "motivo"),
    [(DECLINED, "card_declined"), (INSUFFICIENT, "insufficient_funds"), (PROCESSING_ERROR, "processing_error")],
)
async def test_every_failing_card_rejects_and_gives_the_tickets_back(env: Env, numero: str, motivo: str) -> None:
    usuario, evento = await env.comprador(aforo=3)
    resp = await env.reservar(reserva(usuario, evento, 3, pago=pago(numero)), idem=key())
    assert resp.status_code == 201, resp.text
    assert (resp.json()["estado"], resp.json()["motivo"]) == ("rechazada", motivo)
    assert (await env.inventario.availability(evento)).disponibles == 3
    assert await env.captures(resp.json()["id"]) == []
    other = await env.reservar(reserva(await env.catalog.usuario(), evento, 3), idem=key())
    assert other.json()["estado"] == "confirmada", "the released tickets can be sold again"


@pytest.mark.parametrize(
    ("numero", "vencimiento", "codigo"),
    [(BAD_LUHN, "12/34", "incorrect_number"), ("4242424242424242", "01/21", "expired_card")],
)
async def test_an_invalid_card_is_refused_by_the_chain(env: Env, numero: str, vencimiento: str, codigo: str) -> None:
    usuario, evento = await env.comprador()
    resp = await env.reservar(reserva(usuario, evento, pago=pago(numero, vencimiento)), idem=key())
    assert resp.status_code == 402
    assert resp.headers["content-type"].startswith("application/problem+json")
    problem = resp.json()
    assert (problem["handler"], problem["motivo"], problem["codigo"]) == (
        "TokenizadorDePago",
        "tarjeta_invalida",
        codigo,
    )
    assert numero not in resp.text
    assert (await env.inventario.availability(evento)).retenidas == 0


async def test_chain_rejections_name_the_handler(env: Env) -> None:
    usuario, evento = await env.comprador(aforo=10, limite_por_usuario=4)
    cases = [
        (reserva(usuario, "no-such-event"), 422, "ValidadorDeEvento", "evento_inexistente"),
        (reserva(usuario, evento, 0), 422, "ValidadorDeDatos", "cantidad_invalida"),
        (reserva(usuario, evento, 5), 422, "ValidadorDeEvento", "cantidad_invalida"),  # the event's max is 4
    ]
    for body, status, handler, motivo in cases:
        resp = await env.reservar(body, idem=key())
        assert resp.status_code == status, resp.text
        assert (resp.json()["handler"], resp.json()["motivo"]) == (handler, motivo)
    shape = await env.reservar({"usuario_id": usuario, "evento_id": evento}, idem=key())
    assert shape.status_code == 422 and shape.json()["type"] == "/problems/validation"


async def test_the_per_user_limit_counts_confirmed_tickets(env: Env) -> None:
    usuario, evento = await env.comprador(aforo=10, limite_por_usuario=4)
    assert (await env.reservar(reserva(usuario, evento, 3), idem=key())).json()["estado"] == "confirmada"
    resp = await env.reservar(reserva(usuario, evento, 2), idem=key())
    assert resp.status_code == 409 and resp.json()["motivo"] == "limite_por_usuario"


async def test_idempotency_key_returns_the_same_reservation(env: Env) -> None:
    usuario, evento = await env.comprador(aforo=10)
    idem = key()
    first = await env.reservar(reserva(usuario, evento, 1), idem=idem)
    again = await env.reservar(reserva(usuario, evento, 1), idem=idem)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    different = await env.reservar(reserva(usuario, evento, 2), idem=idem)
    assert different.status_code == 422 and different.json()["type"] == "/problems/idempotency-key-reused"
    assert (await env.inventario.availability(evento)).vendidas == 1


async def test_concurrent_retries_with_one_key_make_one_reservation(env: Env) -> None:
    usuario, evento = await env.comprador(aforo=10)
    idem = key()
    answers = await asyncio.gather(*(env.reservar(reserva(usuario, evento, 1), idem=idem) for _ in range(8)))
    assert {a.status_code for a in answers} <= {200, 201}
    ids = {a.json()["id"] for a in answers}
    assert len(ids) == 1
    reserva_id = ids.pop()
    authorizations = [op for op in await env.pagos.payments_for(reserva_id) if op.get("tipo") == "authorize"]
    assert len(authorizations) == 1 and len(await env.captures(reserva_id)) == 1
    assert (await env.inventario.availability(evento)).vendidas == 1


async def test_a_generated_idempotency_key_is_echoed(env: Env) -> None:
    usuario, evento = await env.comprador()
    resp = await env.reservar(reserva(usuario, evento))
    assert resp.status_code == 201 and len(resp.headers["idempotency-key"]) >= 32
    again = await env.reservar(reserva(usuario, evento), idem=resp.headers["idempotency-key"])
    assert again.json()["id"] == resp.json()["id"]


async def test_cancel_refunds_and_gives_the_tickets_back_once(env: Env) -> None:
    usuario, evento = await env.comprador(aforo=5)
    confirmed = (await env.reservar(reserva(usuario, evento, 2), idem=key())).json()
    first, again = await env.cancelar(confirmed["id"], usuario), await env.cancelar(confirmed["id"], usuario)
    assert (first.status_code, first.json()["estado"]) == (200, "cancelada")
    assert (again.status_code, again.json()["estado"]) == (200, "cancelada")
    assert [h["paso"] for h in first.json()["historial"]][-4:] == [
        "cancelacion",
        "refund",
        "return_sale",
        "record_cancel",
    ]
    ops = await env.pagos.payments_for(confirmed["id"])
    assert [op["tipo"] for op in ops if op["tipo"] == "refund"] == ["refund"]
    assert (await env.inventario.availability(evento)).disponibles == 5

    async def projected() -> bool:
        return await env.catalog.disponibles(evento) == 5

    await eventually(projected)


async def test_only_confirmed_reservations_can_be_cancelled(env: Env) -> None:
    usuario, evento = await env.comprador()
    rejected = (await env.reservar(reserva(usuario, evento, pago=pago(DECLINED)), idem=key())).json()
    resp = await env.cancelar(rejected["id"], usuario)
    assert resp.status_code == 409 and resp.json()["estado"] == "rechazada"
    assert (await env.cancelar("nope", usuario)).status_code == 404
    assert (await env.ver("nope", usuario)).status_code == 404


async def test_metrics_count_outcomes(env: Env) -> None:
    usuario, evento = await env.comprador()
    await env.reservar(reserva(usuario, evento), idem=key())
    text = (await env.client.get("/metrics")).text
    assert 'eventflow_reservas_sagas_total{resultado="confirmadas"} 1.0' in text, text
    assert 'eventflow_saga_step_duration_seconds_count{paso="authorize"} 1.0' in text
    left = await env.inventario.availability(evento)
    assert f'eventflow_inventory_available_tickets{{evento_id="{evento}"}} {float(left.disponibles)}' in text


async def test_seated_requests_are_all_or_nothing(env: Env) -> None:
    secciones = [{"nombre": "A", "asientos": 4}]
    usuario, evento = await env.comprador(aforo=4, secciones=secciones)
    other = await env.catalog.usuario()
    a, b = await asyncio.gather(
        env.reservar(reserva(usuario, evento, 2, asientos=["A-1", "A-2"]), idem=key()),
        env.reservar(reserva(other, evento, 2, asientos=["A-2", "A-3"]), idem=key()),
    )
    outcomes = sorted([a.json()["estado"], b.json()["estado"]])
    assert outcomes == ["confirmada", "rechazada"]
    loser = a.json() if a.json()["estado"] == "rechazada" else b.json()
    assert loser["motivo"] == "asientos_ocupados"
    availability = await env.inventario.availability(evento)
    assert (availability.vendidas, availability.disponibles) == (2, 2)


async def test_202_with_location_when_the_saga_outlasts_the_wait(env: Env, js: JetStreamContext, owner: str) -> None:
    usuario, evento = await env.comprador()
    cfg = reservas_cfg(f"{owner}-slow", espera_s=0.05)
    slow_pay = SimulatedPaymentGateway(js, latency_s=0.3)
    async with api_client(create_app(env.settings, reservas=cfg, pagos=slow_pay)) as slow:
        slow.headers.update(env.catalog.headers(usuario))
        resp = await slow.post("/api/reservar", json=reserva(usuario, evento), headers={"Idempotency-Key": key()})
        assert resp.status_code == 202, resp.text
        assert resp.json()["estado"] == "pendiente" and resp.json()["en_curso"] is True
        location = resp.headers["location"]
        assert location == f"/api/reservas/{resp.json()['id']}"

        async def confirmed() -> bool:
            return (await slow.get(location)).json()["estado"] == "confirmada"

        await eventually(confirmed)


class Clock:
    """The inventory's clock, moved by the test: holds expire when the test says so, not after a sleep."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


class GatedPayments:
    """The real simulator; the authorize of a chosen key waits until the test opens its gate."""

    def __init__(self, inner: SimulatedPaymentGateway) -> None:
        self.inner = inner
        self.gates: dict[str, tuple[asyncio.Event, asyncio.Event]] = {}

    def gate(self, reserva_id: str) -> tuple[asyncio.Event, asyncio.Event]:
        return self.gates.setdefault(f"{reserva_id}:authorize", (asyncio.Event(), asyncio.Event()))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def authorize(self, key: str, method_token: str, importe_centimos: int) -> Any:
        if key in self.gates:
            entered, opened = self.gates[key]
            entered.set()
            await opened.wait()
        return await self.inner.authorize(key, method_token, importe_centimos)


@asynccontextmanager
async def gated_app(
    env: Env, js: JetStreamContext, owner: str
) -> AsyncIterator[tuple[httpx.AsyncClient, Clock, GatedPayments]]:
    clock, pagos = Clock(), GatedPayments(SimulatedPaymentGateway(js))
    inventario = await JetStreamInventoryStore.create(js, clock=clock)
    cfg = reservas_cfg(f"{owner}-gated", hold_ttl_s=60)
    async with api_client(create_app(env.settings, reservas=cfg, pagos=pagos, inventario=inventario)) as client:  # type: ignore[arg-type]
        yield client, clock, pagos


async def test_an_expired_hold_whose_tickets_were_sold_is_rejected_and_voided(
    env: Env, js: JetStreamContext, owner: str
) -> None:
    slow_buyer, evento = await env.comprador(aforo=1)
    fast_buyer, idem = await env.catalog.usuario(), key()
    reserva_id = env.reserva_id(slow_buyer, idem)
    async with gated_app(env, js, owner) as (client, clock, pagos):
        entered, opened = pagos.gate(reserva_id)
        headers = {"Idempotency-Key": idem, **env.catalog.headers(slow_buyer)}
        pending = asyncio.create_task(client.post("/api/reservar", json=reserva(slow_buyer, evento), headers=headers))
        await entered.wait()  # the slow buyer holds the only ticket and waits for its bank
        clock.offset += 61  # ... longer than the hold's 60 s
        fast_headers = {"Idempotency-Key": key(), **env.catalog.headers(fast_buyer)}
        fast = await client.post("/api/reservar", json=reserva(fast_buyer, evento), headers=fast_headers)
        assert fast.json()["estado"] == "confirmada"
        opened.set()
        slow_answer = (await pending).json()
    assert (slow_answer["estado"], slow_answer["motivo"]) == ("rechazada", "reserva_expirada")
    states = {op.get("estado") for op in await env.pagos.payments_for(reserva_id) if op["tipo"] == "authorize"}
    assert states == {"voided"}
    assert (await env.inventario.availability(evento)).vendidas == 1


async def test_an_expired_hold_is_reacquired_at_confirm_when_the_tickets_are_free(
    env: Env, js: JetStreamContext, owner: str
) -> None:
    usuario, evento = await env.comprador(aforo=1)
    idem = key()
    async with gated_app(env, js, owner) as (client, clock, pagos):
        entered, opened = pagos.gate(env.reserva_id(usuario, idem))
        headers = {"Idempotency-Key": idem, **env.catalog.headers(usuario)}
        pending = asyncio.create_task(client.post("/api/reservar", json=reserva(usuario, evento), headers=headers))
        await entered.wait()
        clock.offset += 61
        opened.set()
        resp = await pending
    assert resp.json()["estado"] == "confirmada"
    assert (await env.inventario.availability(evento)).vendidas == 1


class LostAnswers:
    """The real simulator, but every answer to authorize is lost after the processor did the work: raised as
    a retryable error (`hang=False`) or never arriving, so the step timeout cancels the call (`hang=True`)."""

    def __init__(self, inner: SimulatedPaymentGateway, hang: bool = False) -> None:
        self.inner, self.hang = inner, hang
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def authorize(self, key: str, method_token: str, importe_centimos: int) -> Any:
        self.calls += 1
        await self.inner.authorize(key, method_token, importe_centimos)
        if self.hang:
            await asyncio.Event().wait()
        raise PaymentRetryableError("the answer was lost on the way back")


@pytest.mark.parametrize("hang", [False, True], ids=["answer-lost", "timeout-after-send"])
async def test_an_authorization_whose_answers_were_lost_is_voided(
    env: Env, js: JetStreamContext, owner: str, hang: bool
) -> None:
    """Issue 6 defect 1: the void was skipped when the saga never learnt the authorization id, so a rejected
    buyer's money stayed held."""
    usuario, evento = await env.comprador(aforo=3)
    pagos = LostAnswers(SimulatedPaymentGateway(js), hang=hang)
    cfg = reservas_cfg(f"{owner}-lost", step_timeout_s=0.3, retry_for_s=0.8)
    async with api_client(create_app(env.settings, reservas=cfg, pagos=pagos)) as client:  # type: ignore[arg-type]
        headers = {"Idempotency-Key": key(), **env.catalog.headers(usuario)}
        resp = await client.post("/api/reservar", json=reserva(usuario, evento, 2), headers=headers)
    body = resp.json()
    assert (body["estado"], body["motivo"]) == ("rechazada", "processing_error"), body
    assert pagos.calls >= 1
    assert ("void", "compensado") in [(h["paso"], h["resultado"]) for h in body["historial"]]
    ledger = await env.pagos.payments_for(body["id"])
    assert {op["estado"] for op in ledger if op["tipo"] == "authorize"} == {"voided"}, ledger
    assert (await env.inventario.availability(evento)).disponibles == 3


@pytest.mark.parametrize("reserva_id", ["a%20b", "a.", "..", "a*", "%00"])
async def test_a_malformed_reservation_id_is_a_404_problem(env: Env, reserva_id: str) -> None:
    headers = env.catalog.headers(await env.catalog.usuario())
    for method, path in (("GET", f"/api/reservas/{reserva_id}"), ("POST", f"/api/reservas/{reserva_id}/cancelar")):
        resp = await env.client.request(method, path, headers=headers)
        assert resp.status_code == 404, (path, resp.text)
        assert resp.headers["content-type"].startswith("application/problem+json")


async def test_a_request_that_fails_with_a_500_still_gets_its_generated_key(env: Env, owner: str) -> None:
    """Issue 6 defect 7: without an Idempotency-Key, a failed request gave the client nothing to retry with."""

    class Broken:
        async def existe(self, usuario_id: str) -> bool:
            raise RuntimeError("a bug")

    usuario, evento = await env.comprador()
    cfg = reservas_cfg(f"{owner}-broken")
    app = create_app(env.settings, reservas=cfg, usuarios=Broken())
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as client:  # a real server: a real 500
        resp = await client.post("/api/reservar", json=reserva(usuario, evento), headers=env.catalog.headers(usuario))
    assert resp.status_code == 500 and resp.headers["content-type"].startswith("application/problem+json")
    assert len(resp.headers["idempotency-key"]) >= 32
    retried = await env.reservar(reserva(usuario, evento), idem=resp.headers["idempotency-key"])
    assert retried.status_code == 201 and retried.json()["estado"] == "confirmada"


async def test_the_events_own_limits_allow_up_to_its_maximum(env: Env) -> None:
    """Issue 6 defect 7: a per-user limit (8) below the per-request maximum (10) refused 9 or 10 tickets."""
    usuario, evento = await env.comprador(aforo=30)
    resp = await env.reservar(reserva(usuario, evento, 10), idem=key())
    assert resp.json()["estado"] == "confirmada", resp.text
    again = await env.reservar(reserva(usuario, evento, 1), idem=key())
    assert (again.status_code, again.json()["motivo"], again.json()["limite"]) == (409, "limite_por_usuario", 10)
    other, big = await env.comprador(aforo=60, limite_por_usuario=20, max_por_solicitud=20)
    assert (await env.reservar(reserva(other, big, 20), idem=key())).json()["estado"] == "confirmada"
    too_many = await env.reservar(reserva(await env.catalog.usuario(), big, 21), idem=key())
    assert (too_many.status_code, too_many.json()["motivo"]) == (422, "cantidad_invalida")


async def test_a_buyer_reserves_in_their_own_name_only(env: Env) -> None:
    """Before accounts, anyone could buy in another user's name and use up their per-user limit."""
    ana, evento = await env.comprador(aforo=10, limite_por_usuario=2)
    beto = await env.catalog.usuario()
    boss = await env.catalog.con_rol("admin")
    for como in (beto, boss.id):
        refused = await env.reservar(reserva(ana, evento, 2), idem=key(), como=como)
        assert refused.status_code == 403 and refused.json()["type"] == "/problems/forbidden", refused.text
    assert (await env.inventario.availability(evento, ana)).por_usuario == 0, "nothing held in Ana's name"
    omitted = {k: v for k, v in reserva(ana, evento, 2).items() if k != "usuario_id"}
    mine = await env.reservar(omitted, idem=key(), como=ana)
    assert (mine.status_code, mine.json()["estado"], mine.json()["usuario_id"]) == (201, "confirmada", ana)
    anonymous = await env.client.post("/api/reservar", json=omitted)
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Bearer")


async def test_a_reservation_is_seen_by_its_buyer_its_organizer_and_an_admin_only(env: Env) -> None:
    ana, evento = await env.comprador()
    reserva_id = (await env.reservar(reserva(ana, evento), idem=key())).json()["id"]
    organizer = (await env.catalog.organizador()).id
    other_organizer = (await env.catalog.con_rol("organizador")).id
    stranger, boss = await env.catalog.usuario(), (await env.catalog.con_rol("admin")).id
    unknown = (await env.ver(env.reserva_id(ana, key()), ana)).json()
    for como, status in ((ana, 200), (organizer, 200), (boss, 200), (stranger, 404), (other_organizer, 404)):
        for path in ("/api/reservas/{}", "/api/reservar/{}"):
            resp = await env.ver(reserva_id, como, path)
            assert resp.status_code == status, (como, path, resp.text)
            if status == 404:  # exactly what an id that exists nowhere gets: existence is not revealed
                assert {k: v for k, v in resp.json().items() if k not in ("instance", "request_id")} == {
                    k: v for k, v in unknown.items() if k not in ("instance", "request_id")
                }
    assert (await env.client.get(f"/api/reservas/{reserva_id}")).status_code == 401


async def test_a_reservation_is_cancelled_by_its_buyer_or_an_admin(env: Env) -> None:
    ana, evento = await env.comprador(aforo=5)
    first = (await env.reservar(reserva(ana, evento), idem=key())).json()["id"]
    second = (await env.reservar(reserva(ana, evento), idem=key())).json()["id"]
    organizer, stranger = (await env.catalog.organizador()).id, await env.catalog.usuario()
    assert (await env.cancelar(first, stranger)).status_code == 404
    assert (await env.cancelar(first, organizer)).status_code == 403, "they may read it, not cancel it"
    assert (await env.ver(first, ana)).json()["estado"] == "confirmada", "a refused cancellation did nothing"
    assert (await env.cancelar(first, ana)).json()["estado"] == "cancelada"
    boss = (await env.catalog.con_rol("admin")).id
    assert (await env.cancelar(second, boss)).json()["estado"] == "cancelada"


async def test_reservation_ids_are_keyed_not_computable_from_the_key(env: Env) -> None:
    """Before, reserva_id was uuid5(NAMESPACE, usuario_id:key): anyone who knew a buyer's id and a key they used
    could compute the reservation's id."""
    ana, evento = await env.comprador()
    idem = key()
    got = (await env.reservar(reserva(ana, evento), idem=idem)).json()["id"]
    assert got == env.reserva_id(ana, idem)
    assert got != str(uuid.uuid5(uuid.UUID("6f1c0e6a-3c1b-5b8e-9a43-2f4f7c1d9e10"), f"{ana}:{idem}"))
