"""Organizer and door journeys in a real browser: create an event and see its sale; scan a ticket twice."""

from __future__ import annotations

import time
import uuid
from typing import Any

from playwright.sync_api import Page, expect

from tests.e2e.system import bearer
from tests.web.conftest import Web, sign_in_page


def buy(web: Web, event_id: str, cantidad: int) -> dict[str, Any]:
    """A buyer's confirmed purchase through the API: the reservation document (with its tickets)."""
    buyer = web.user()
    token = web.token(buyer["email"], buyer["password"])
    body = {
        "evento_id": event_id,
        "cantidad": cantidad,
        "pago": {"numero_tarjeta": "4242424242424242", "vencimiento": "12/34", "cvc": "123"},
    }
    resp = web.api.post("/api/reservar", json=body, headers=bearer(token) | {"Idempotency-Key": str(uuid.uuid4())})
    assert resp.status_code in (201, 202), resp.text
    reserva: dict[str, Any] = resp.json()
    deadline = time.monotonic() + 60  # a saga ends in bounded time: a hang fails here instead of the run
    while reserva.get("en_curso"):
        assert time.monotonic() < deadline, reserva
        time.sleep(0.1)
        reserva = web.api.get(f"/api/reservas/{reserva['id']}", headers=bearer(token)).json()
    assert reserva["estado"] == "confirmada", reserva
    return reserva


def test_the_organizer_creates_an_event_and_sees_the_sale_on_its_dashboard(page: Page, web: Web) -> None:
    organizer = web.user(["organizador"])
    sign_in_page(page, web.base, organizer)
    page.goto(f"{web.base}/#/organizador")
    form = page.locator("#nuevo-evento")
    name = f"Festival {uuid.uuid4().hex[:6]}"
    form.locator("[name=nombre]").fill(name)
    form.locator("[name=fecha]").fill("2031-07-01T20:30")
    form.locator("[name=lugar]").fill("Usina del Arte")
    form.locator("[name=precio]").fill("40")
    form.locator("[name=categoria]").fill("musica")
    form.locator("#agregar-seccion").click()
    form.locator("[name=seccion]").fill("Campo")
    form.locator("[name=asientos]").fill("8")
    form.locator("[name=limite_por_usuario]").fill("4")
    form.get_by_role("button", name="Crear evento").click()
    expect(form.get_by_role("link", name=name)).to_be_visible()

    board = page.locator("#mis-eventos details", has_text=name)
    expect(board.locator("[data-cifra=disponibles] strong")).to_have_text("8")
    event_id = board.get_attribute("data-evento")
    assert event_id
    event = web.api.get(f"/api/eventos/{event_id}").json()
    assert [(s["nombre"], s["asientos"]) for s in event["secciones"]] == [("Campo", 8)] and event[
        "limite_por_usuario"
    ] == 4

    buy(web, event_id, 2)
    expect(board.locator("[data-cifra=vendidas] strong")).to_have_text("2")
    expect(board.locator("[data-cifra=disponibles] strong")).to_have_text("6")
    # the sales projection is eventual: "Actualizar" until it has the revenue
    for _ in range(20):
        board.get_by_role("button", name="Actualizar").click()
        if "0,00" not in board.locator("[data-cifra=ingresos] strong").inner_text():
            break
        page.wait_for_timeout(250)
    expect(board.locator("[data-cifra=ingresos] strong")).not_to_contain_text("0,00")
    expect(board.locator("svg.grafico rect")).to_have_count(1)
    assert page.errors == []  # type: ignore[attr-defined]


def test_the_door_first_scan_green_second_red(page: Page, web: Web, organizer: dict[str, str]) -> None:
    event = web.event(organizer, aforo_total=5)
    code = buy(web, event["id"], 1)["tickets"][0]["codigo"]
    door = web.user(["control"])
    sign_in_page(page, web.base, door)
    page.goto(f"{web.base}/#/puerta")
    answer = page.locator("#respuesta")

    page.locator("#codigo").fill(code)
    page.get_by_role("button", name="Validar").click()
    expect(answer).to_have_class("respuesta valida")
    expect(answer).to_contain_text("VÁLIDA")
    answer.get_by_role("button", name="Siguiente").click()
    expect(answer).to_be_hidden()

    page.locator("#codigo").fill(code)
    page.get_by_role("button", name="Validar").click()
    expect(answer).to_have_class("respuesta invalida")
    expect(answer).to_contain_text("YA USADA")
    expect(answer).to_contain_text("Primera entrada")
    answer.get_by_role("button", name="Siguiente").click()

    page.locator("#codigo").fill(code[:-4] + "AAAA")
    page.get_by_role("button", name="Validar").click()
    expect(answer).to_contain_text("INVÁLIDA")


def test_the_door_queues_scans_offline_and_sends_them_on_reconnect(
    page: Page, web: Web, organizer: dict[str, str]
) -> None:
    event = web.event(organizer, aforo_total=5)
    code = buy(web, event["id"], 1)["tickets"][0]["codigo"]
    door = web.user(["control"])
    sign_in_page(page, web.base, door)
    page.goto(f"{web.base}/#/puerta")
    answer = page.locator("#respuesta")
    expect(page.locator("#red")).to_contain_text("En línea")  # the door page is loaded before the network drops
    page.context.set_offline(True)
    for _ in range(2):
        page.locator("#codigo").fill(code)
        page.get_by_role("button", name="Validar").click()
        expect(answer).to_contain_text("EN COLA")
        answer.get_by_role("button", name="Siguiente").click()
    expect(page.locator("#red")).to_contain_text("2 en cola")
    page.context.set_offline(False)
    # in order: the first queued scan enters, the second is the same ticket again
    expect(answer).to_contain_text("VÁLIDA")
    expect(answer).to_contain_text("YA USADA")
    expect(page.locator("#red")).not_to_contain_text("en cola")


def test_a_scan_queued_by_an_older_page_keeps_one_key_across_retries(
    page: Page, web: Web, organizer: dict[str, str]
) -> None:
    """A queue entry from before scans had ids gets its key once: a resend after a 503 is the same scan."""
    event = web.event(organizer, aforo_total=5)
    code = buy(web, event["id"], 1)["tickets"][0]["codigo"]
    sign_in_page(page, web.base, web.user(["control"]))
    old_entry = [{"codigo": code, "cuando": "2026-12-01T20:00:00.000Z"}]  # no "escaneo": the older format
    page.evaluate("q => localStorage.setItem('eventflow.puerta.cola', JSON.stringify(q))", old_entry)
    keys: list[str] = []

    def first_answer_lost(route: Any) -> None:
        keys.append(route.request.headers.get("idempotency-key", ""))
        if len(keys) == 1:
            route.fulfill(status=503, content_type="application/problem+json", body='{"status": 503}')
        else:
            route.continue_()

    page.route("**/api/checkin", first_answer_lost)
    page.goto(f"{web.base}/#/puerta")
    expect(page.locator("#respuesta")).to_contain_text("VÁLIDA", timeout=15_000)
    assert len(keys) == 2 and keys[0] and keys[0] == keys[1], keys
