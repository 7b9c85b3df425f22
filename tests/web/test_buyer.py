"""Buyer journeys in a real browser: register and buy, a declined card, seats on the map, a double click."""

from __future__ import annotations

import re
import uuid

from playwright.sync_api import Page, expect

from tests.web.conftest import Web


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
