"""One whole system (as `make up` starts it) and one headless Debian chromium for every browser journey."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from tests.e2e.system import bearer, detached, sign_in, system_env, url

CHROMIUM = Path("/usr/bin/chromium")
ADMIN = ("jefa@example.com", "tres lunas sobre el rio quieto")


class Web:
    """The running system: its page address and an API client for setting the scene (roles, events)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.api = httpx.Client(base_url=base, timeout=30)

    def token(self, email: str, password: str) -> str:
        return str(sign_in(self.api, email, password)["access_token"])

    def user(self, roles: list[str] | None = None) -> dict[str, str]:
        """A registered account (with `roles` granted by the admin): its form data."""
        tag = uuid.uuid4().hex[:10]
        data = {
            "tipo_documento": "DNI",
            "nro_documento": str(random.randint(10_000_000, 99_999_999)),
            "nombre": "Lucía",
            "apellido": "Fernández",
            "email": f"lucia.{tag}@example.com",
            "password": f"una frase de paso {uuid.uuid4().hex[:8]}",
        }
        resp = self.api.post("/api/usuarios", json=data, headers={"Idempotency-Key": str(uuid.uuid4())})
        assert resp.status_code == 201, resp.text
        if roles:
            admin = self.token(*ADMIN)
            user_id = resp.json()["id"]
            put = self.api.put(f"/api/usuarios/{user_id}/roles", json={"roles": roles}, headers=bearer(admin))
            assert put.status_code == 200, put.text
        return data

    def event(self, organizer: dict[str, str], **fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "nombre": f"Concierto {uuid.uuid4().hex[:6]}",
            "descripcion": "Prueba en el navegador",
            "fecha": "2031-06-01T21:00:00+02:00",
            "lugar": "Teatro Real",
            "aforo_total": 20,
            "precio": "30",
            "categoria": "musica",
        }
        body.update(fields)
        token = self.token(organizer["email"], organizer["password"])
        resp = self.api.post("/api/eventos", json=body, headers=bearer(token) | {"Idempotency-Key": str(uuid.uuid4())})
        assert resp.status_code == 201, resp.text
        event: dict[str, Any] = resp.json()
        return event


@pytest.fixture(scope="session")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    env = system_env(
        tmp_path_factory.mktemp("web") / "var",
        EVENTFLOW_DEMO="0",
        EVENTFLOW_ADMIN_EMAIL=ADMIN[0],
        EVENTFLOW_ADMIN_PASSWORD=ADMIN[1],
    )
    with detached(env):
        yield Web(url(env, "gateway"))


@pytest.fixture(scope="session")
def organizer(web: Web) -> dict[str, str]:
    return web.user(["organizador"])


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: make test-deps (as root) installs it")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield launched
        launched.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(locale="es-AR", viewport={"width": 1100, "height": 900})
    ctx.set_default_timeout(15_000)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: BrowserContext, web: Web) -> Page:
    """A fresh page; JavaScript errors fail the test."""
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    p.errors = errors  # type: ignore[attr-defined]
    return p


def sign_in_page(page: Page, base: str, user: dict[str, str]) -> None:
    """Through the sign-in page, as a person would."""
    page.goto(f"{base}/#/entrar")
    page.locator("#pagina-email").fill(user["email"])
    page.locator("#pagina-password").fill(user["password"])
    page.locator("form[aria-labelledby=pagina-t-entrar] button[type=submit]").click()
    page.wait_for_function("() => !location.hash.startsWith('#/entrar')")  # signed in: the page moved on
    page.locator("#sesion button", has_text="Salir").wait_for()
