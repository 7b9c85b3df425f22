"""Regenerate the web app's screenshots in docs/img/ (catalog, event with seat map, checkout outcome, my tickets,
organizer dashboard, door) from a real system started on free ports, driven by Debian's headless chromium.

    .venv/bin/python -m scripts.screenshots        (needs `make test-deps` for /usr/bin/chromium)
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright

from eventflow.system import ROOT
from tests.e2e.system import cli, system_env, url
from tests.web.conftest import ADMIN, CHROMIUM, Web, sign_in_page
from tests.web.test_staff import buy

OUT = ROOT / "docs" / "img"


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(OUT / f"{name}.png"), full_page=False)
    print(f"docs/img/{name}.png")


def scenes(web: Web, page: Page) -> None:
    organizer = web.user(["organizador"])
    seated = web.event(
        organizer,
        nombre="Orquesta Sinfónica: Mahler 5",
        lugar="Teatro Colón",
        aforo_total=None,
        precio="45",
        secciones=[{"nombre": "Platea", "asientos": 40}, {"nombre": "Palco", "asientos": 16}],
    )
    web.event(organizer, nombre="Rock en el Parque", lugar="Parque Sarmiento", aforo_total=500, precio="25")
    web.event(organizer, nombre="Stand-up: Noche de humor", lugar="Paseo La Plaza", aforo_total=12, categoria="teatro")
    for n in (3, 2):
        buy(web, seated["id"], n)

    page.goto(f"{web.base}/#/")
    expect(page.locator(".tarjeta").first).to_be_visible()
    shot(page, "catalogo")

    buyer = web.user()
    sign_in_page(page, web.base, buyer)
    page.goto(f"{web.base}/#/evento/{seated['id']}")
    expect(page.locator("#en-vivo")).to_have_text("● en vivo")
    for seat in ("Platea-14", "Platea-15"):
        page.locator(f"[data-asiento={seat}]").click()
    page.locator("#numero").fill("4242 4242 4242 4242")
    page.locator("#vencimiento").fill("12/34")
    page.locator("#cvc").fill("123")
    shot(page, "evento")
    page.locator("#comprar").click()
    expect(page.locator("#confirmada")).to_be_visible()
    page.locator("#confirmada").scroll_into_view_if_needed()
    shot(page, "checkout")

    page.goto(f"{web.base}/#/mis-entradas")
    expect(page.locator("img.qr").first).to_have_attribute("src", re.compile("^blob:"))
    shot(page, "mis-entradas")

    page.evaluate("localStorage.clear()")  # sign the buyer out
    page.reload()
    sign_in_page(page, web.base, organizer)
    page.goto(f"{web.base}/#/organizador")
    board = page.locator("#mis-eventos details", has_text="Mahler")
    board.locator("summary").click()
    expect(board.locator("[data-cifra=vendidas] strong")).to_have_text("7")
    board.scroll_into_view_if_needed()
    shot(page, "organizador")

    door = web.user(["control"])
    code = buy(web, seated["id"], 1)["tickets"][0]["codigo"]
    page.set_viewport_size({"width": 390, "height": 780})
    page.evaluate("localStorage.clear()")
    page.reload()
    sign_in_page(page, web.base, door)
    page.goto(f"{web.base}/#/puerta")
    page.locator("#codigo").fill(code)
    page.get_by_role("button", name="Validar").click()
    expect(page.locator("#respuesta")).to_contain_text("VÁLIDA")
    shot(page, "puerta")


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        env = system_env(
            Path(tmp) / "var", EVENTFLOW_DEMO="0", EVENTFLOW_ADMIN_EMAIL=ADMIN[0], EVENTFLOW_ADMIN_PASSWORD=ADMIN[1]
        )
        started = cli(env, "--detach")
        if started.returncode != 0:
            print(started.stdout + started.stderr, file=sys.stderr)
            return 1
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
                ctx = browser.new_context(locale="es-AR", viewport={"width": 1200, "height": 860})
                ctx.set_default_timeout(15_000)
                scenes(Web(url(env, "gateway")), ctx.new_page())
                browser.close()
        finally:
            cli(env, "--down")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
