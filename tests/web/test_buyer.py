"""Buyer journeys in a real browser: register and buy, a declined card, seats on the map, a double click."""

from __future__ import annotations

import re
import uuid

from playwright.sync_api import Browser, Page, Route, expect

from tests.web.conftest import Web, sign_in_page


def register_inline(page: Page, email: str) -> None:
    """The checkout's own register form (prefix `checkout`)."""
    alta = page.locator("form[aria-labelledby=checkout-t-alta]")
    alta.locator("[name=nombre]").fill("Lucía")
    alta.locator("[name=apellido]").fill("Fernández")
    alta.locator("[name=nro_documento]").fill(str(uuid.uuid4().int % 90_000_000 + 10_000_000))
    alta.locator("[name=email]").fill(email)
    alta.locator("[name=password]").fill(f"una frase de paso {uuid.uuid4().hex[:8]}")
    alta.get_by_role("button", name="Crear cuenta y entrar").click()


def pay(page: Page, card: str) -> None:
    page.locator("#numero").fill(card)
    page.locator("#vencimiento").fill("12/34")
    page.locator("#cvc").fill("123")


def test_register_buy_two_and_see_them_in_my_tickets(page: Page, web: Web, organizer: dict[str, str]) -> None:
    event = web.event(organizer, aforo_total=10)
    page.goto(f"{web.base}/#/evento/{event['id']}")
    expect(page.locator("h1")).to_have_text(event["nombre"])
    register_inline(page, f"ana.{uuid.uuid4().hex[:8]}@example.com")
    page.locator("#cantidad").fill("2")
    pay(page, "4242 4242 4242 4242")
    page.locator("#comprar").click()
    expect(page.locator("#confirmada")).to_contain_text("2 entradas")
    expect(page.locator("#disponibles")).to_have_text("8")

    page.get_by_role("link", name="Ver mis entradas").click()
    reserva = page.locator("li.reserva[data-estado=confirmada]")
    expect(reserva).to_have_count(1)
    expect(reserva.locator("h2")).to_have_text(event["nombre"])
    expect(reserva.locator("li.ticket")).to_have_count(2)
    expect(reserva.locator("img.qr").first).to_have_attribute("src", re.compile(r"^blob:"))
    assert page.errors == []  # type: ignore[attr-defined]


def signed_in_on_event(page: Page, web: Web, event_id: str) -> dict[str, str]:
    buyer = web.user()
    sign_in_page(page, web.base, buyer)
    page.goto(f"{web.base}/#/evento/{event_id}")
    expect(page.locator("#en-vivo")).to_have_text("● en vivo")
    return buyer


def test_a_declined_card_shows_the_reason_and_the_tickets_go_back(
    page: Page, web: Web, organizer: dict[str, str]
) -> None:
    event = web.event(organizer, aforo_total=10)
    signed_in_on_event(page, web, event["id"])
    page.locator("#cantidad").fill("3")
    pay(page, "4000 0000 0000 0002")
    page.locator("#comprar").click()
    expect(page.locator("#rechazada")).to_contain_text("La tarjeta fue rechazada por el banco.")
    expect(page.locator("#disponibles")).to_have_text("10")
    assert web.api.get(f"/api/disponibilidad/{event['id']}").json()["disponibles"] == 10


def test_a_seated_purchase_picks_its_seats_on_the_map(page: Page, web: Web, organizer: dict[str, str]) -> None:
    event = web.event(organizer, aforo_total=None, secciones=[{"nombre": "Platea", "asientos": 12}])
    signed_in_on_event(page, web, event["id"])
    for seat in ("Platea-3", "Platea-4"):
        page.locator(f"[data-asiento={seat}]").click()
        expect(page.locator(f"[data-asiento={seat}]")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#elegidos")).to_have_text("Elegiste: Platea-3, Platea-4")
    pay(page, "4242424242424242")
    page.locator("#comprar").click()
    expect(page.locator("#confirmada")).to_contain_text("Asientos: Platea-3, Platea-4")
    for seat in ("Platea-3", "Platea-4"):
        expect(page.locator(f"[data-asiento={seat}]")).to_have_attribute("data-estado", "V")
        expect(page.locator(f"[data-asiento={seat}]")).to_be_disabled()
    seats = web.api.get(f"/api/disponibilidad/{event['id']}").json()["secciones"][0]["estados"]
    assert seats[2:4] == "VV" and seats.count("V") == 2


def test_a_second_browser_sees_availability_drop_within_2_s(
    browser: Browser, page: Page, web: Web, organizer: dict[str, str]
) -> None:
    event = web.event(organizer, aforo_total=10)
    other_context = browser.new_context(locale="es-AR")
    try:
        other = other_context.new_page()
        other.goto(f"{web.base}/#/evento/{event['id']}")
        expect(other.locator("#en-vivo")).to_have_text("● en vivo")
        expect(other.locator("#disponibles")).to_have_text("10")
        signed_in_on_event(page, web, event["id"])
        page.locator("#cantidad").fill("3")
        pay(page, "4242424242424242")
        page.locator("#comprar").click()
        expect(page.locator("#confirmada")).to_be_visible()
        expect(other.locator("#disponibles")).to_have_text("7", timeout=2_000)
    finally:
        other_context.close()


def test_the_checkout_double_clicked_buys_once(page: Page, web: Web, organizer: dict[str, str]) -> None:
    event = web.event(organizer, aforo_total=10)
    signed_in_on_event(page, web, event["id"])
    page.locator("#cantidad").fill("2")
    pay(page, "4242424242424242")
    # two clicks before the page can disable the button, then a real double click on top
    page.evaluate("() => { const b = document.querySelector('#comprar'); b.click(); b.click(); }")
    page.locator("#comprar").dblclick(force=True)
    expect(page.locator("#confirmada")).to_be_visible()
    state = web.api.get(f"/api/disponibilidad/{event['id']}").json()
    assert (state["vendidas"], state["retenidas"], state["disponibles"]) == (2, 0, 8)


def test_my_tickets_cancels_a_reservation_and_shows_the_refund(page: Page, web: Web, organizer: dict[str, str]) -> None:
    event = web.event(organizer, aforo_total=10)
    signed_in_on_event(page, web, event["id"])
    page.locator("#cantidad").fill("1")
    pay(page, "4242424242424242")
    page.locator("#comprar").click()
    expect(page.locator("#confirmada")).to_be_visible()
    page.get_by_role("link", name="Ver mis entradas").click()
    reserva = page.locator("li.reserva", has_text=event["nombre"])
    expect(reserva.locator("li.ticket")).to_have_count(1)
    page.once("dialog", lambda dialog: dialog.accept())
    reserva.get_by_role("button", name="Cancelar reserva").click()
    expect(reserva).to_contain_text("Reserva cancelada. Reembolso:")
    expect(page.locator("li.reserva[data-estado=cancelada]", has_text=event["nombre"])).to_contain_text("reembolso")
    assert web.api.get(f"/api/disponibilidad/{event['id']}").json()["disponibles"] == 10


def test_a_lost_answer_then_a_reload_and_buy_again_buys_once(page: Page, web: Web, organizer: dict[str, str]) -> None:
    """The purchase reaches the server but its answer is lost; after a reload the same selection is retried with
    the page's stored Idempotency-Key, so the server answers with the reservation it already made."""
    event = web.event(organizer, aforo_total=10)
    signed_in_on_event(page, web, event["id"])

    def lose_the_answer(route: Route) -> None:
        route.fetch()  # the server does the purchase
        route.abort("connectionreset")  # the browser never hears back

    page.route("**/api/reservar", lose_the_answer)
    page.locator("#cantidad").fill("2")
    pay(page, "4242424242424242")
    page.locator("#comprar").click()
    expect(page.locator("#resultado")).to_contain_text("No sabemos si tu compra llegó")
    page.unroute("**/api/reservar")

    page.reload()
    expect(page.locator("#resultado")).to_contain_text("Tenés una compra sin resultado")
    page.locator("#cantidad").fill("2")
    pay(page, "4242424242424242")
    page.locator("#comprar").click()
    expect(page.locator("#confirmada")).to_contain_text("2 entradas")
    state = web.api.get(f"/api/disponibilidad/{event['id']}").json()
    assert (state["vendidas"], state["disponibles"]) == (2, 8)


def test_the_catalog_finds_an_event_and_shows_its_availability(page: Page, web: Web, organizer: dict[str, str]) -> None:
    tag = uuid.uuid4().hex[:6]
    event = web.event(organizer, nombre=f"Zarzuela {tag}", aforo_total=12, categoria="teatro")
    page.goto(f"{web.base}/#/")
    page.get_by_label("Buscar por nombre").fill(f"Zarzuela {tag}")
    page.get_by_role("button", name="Buscar").click()
    card = page.locator(".tarjeta", has_text=event["nombre"])
    expect(card).to_contain_text("quedan 12")
    expect(card).to_contain_text("Teatro Real · teatro")
    expect(page.locator(".tarjeta")).to_have_count(1)
