"""Locust: the journeys of a sale as user classes: most browse, some buy, a few cancel.

`make locust` runs it headless against a running system (`make up`) for a fixed time and writes CSV stats and an
HTML report to var/loadtest/. Set-up: the admin (EVENTFLOW_ADMIN_EMAIL/_PASSWORD, or the generated one in
var/secrets.env) makes one organizer, who publishes the events the run uses; every buyer registers and signs in
once (on_start) and sends its bearer token and a fresh Idempotency-Key with every reservation.
"""

from __future__ import annotations

import os
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from locust import HttpUser, between, events, task
from locust.env import Environment

CARD = {"numero_tarjeta": "4242424242424242", "vencimiento": "12/34", "cvc": "123"}
PASSWORD = "frase secreta del visitante masivo"
EVENTS: list[str] = []


def admin_credentials() -> tuple[str, str]:
    email, password = os.environ.get("EVENTFLOW_ADMIN_EMAIL"), os.environ.get("EVENTFLOW_ADMIN_PASSWORD")
    if email and password:
        return email, password
    secrets = Path(os.environ.get("EVENTFLOW_VAR_DIR", "var")) / "secrets.env"
    found = dict(line.split("=", 1) for line in secrets.read_text().splitlines() if "=" in line)
    return found["EVENTFLOW_ADMIN_EMAIL"].strip(), found["EVENTFLOW_ADMIN_PASSWORD"].strip()


def registration(tag: str) -> dict[str, Any]:
    return {
        "tipo_documento": "Pasaporte",
        "nro_documento": f"L{uuid.uuid4().int % 10**8:08d}",
        "nombre": f"Carga{tag}",
        "apellido": f"Prueba{tag}",
        "email": f"carga.{tag}@ejemplo.com",
        "password": PASSWORD,
    }


@events.test_start.add_listener
def publish_events(environment: Environment, **_: Any) -> None:
    """One organizer and the events of the run, created before any user starts."""
    import requests

    base = environment.host or "http://localhost:8080"
    email, password = admin_credentials()
    admin = requests.post(f"{base}/api/auth/token", json={"email": email, "password": password}, timeout=30).json()
    tag = uuid.uuid4().hex[:10]
    body = registration(tag)
    created = requests.post(f"{base}/api/usuarios", json=body, timeout=30)
    created.raise_for_status()
    organizer = created.json()
    requests.put(
        f"{base}/api/usuarios/{organizer['id']}/roles",
        json={"roles": ["organizador"]},
        headers={"Authorization": f"Bearer {admin['access_token']}"},
        timeout=30,
    ).raise_for_status()
    token = requests.post(f"{base}/api/auth/token", json={"email": body["email"], "password": PASSWORD}, timeout=30)
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    fecha = (datetime.now(UTC) + timedelta(days=60)).isoformat()
    for n in range(int(os.environ.get("LOCUST_EVENTS", "20"))):
        evento = {
            "nombre": f"Carga {tag} {n}",
            "descripcion": "prueba de carga",
            "fecha": fecha,
            "lugar": "Estadio",
            "aforo_total": int(os.environ.get("LOCUST_CAPACITY", "100000")),
            "precio": 30,
            "categoria": "musica",
        }
        resp = requests.post(f"{base}/api/eventos", json=evento, headers=headers, timeout=30)
        resp.raise_for_status()
        EVENTS.append(resp.json()["id"])


class Browser(HttpUser):
    """Most visitors: the catalog, a search, an event page."""

    weight = 8
    wait_time = between(0.5, 2)

    @task(3)
    def catalog(self) -> None:
        self.client.get("/api/eventos?limit=20", name="/api/eventos")

    @task(1)
    def search(self) -> None:
        self.client.get("/api/eventos?q=carga&limit=20", name="/api/eventos?q")

    @task(6)
    def event_page(self) -> None:
        if EVENTS:
            self.client.get(f"/api/eventos/{random.choice(EVENTS)}", name="/api/eventos/{id}")


class Buyer(HttpUser):
    """Signs in once, then buys one or two tickets now and then and looks at the reservation."""

    weight = 3
    wait_time = between(1, 3)

    def on_start(self) -> None:
        body = registration(uuid.uuid4().hex[:10])
        self.client.post("/api/usuarios", json=body, name="/api/usuarios")
        resp = self.client.post(
            "/api/auth/token", json={"email": body["email"], "password": PASSWORD}, name="/api/auth/token"
        )
        self.headers = {"Authorization": f"Bearer {resp.json()['access_token']}"}

    def reserve(self) -> dict[str, Any] | None:
        if not EVENTS:
            return None
        body = {"evento_id": random.choice(EVENTS), "cantidad": random.randint(1, 2), "pago": CARD}
        headers = {**self.headers, "Idempotency-Key": uuid.uuid4().hex}
        with self.client.post(
            "/api/reservar", json=body, headers=headers, name="/api/reservar", catch_response=True
        ) as resp:
            doc = resp.json() if resp.content else {}
            if resp.status_code in (200, 201, 202) or (resp.status_code == 409 and doc.get("motivo") == "agotado"):
                resp.success()
                return doc if isinstance(doc, dict) else None
            resp.failure(f"{resp.status_code} {doc.get('type') if isinstance(doc, dict) else ''}")
        return None

    @task(3)
    def buy(self) -> None:
        doc = self.reserve()
        if doc and doc.get("id"):
            self.client.get(f"/api/reservas/{doc['id']}", headers=self.headers, name="/api/reservas/{id}")

    @task(1)
    def my_profile(self) -> None:
        self.client.get("/api/usuarios/me", headers=self.headers, name="/api/usuarios/me")


class Canceller(Buyer):
    """A few buy and then cancel."""

    weight = 1

    @task
    def buy_and_cancel(self) -> None:
        doc = self.reserve()
        if doc and doc.get("estado") == "confirmada":
            self.client.post(
                f"/api/reservas/{doc['id']}/cancelar", headers=self.headers, name="/api/reservas/{id}/cancelar"
            )
