"""Demo data (eventflow.demo) seeded through a real gateway in front of the real users, events and reservations
services, twice: the second run changes nothing and prints the same credentials."""

from __future__ import annotations

import asyncio
import stat
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
from nats.js import JetStreamContext

from eventflow import demo
from eventflow.config import Settings
from services.gateway.bootstrap import create_app as gateway_app
from services.gateway.config import GatewaySettings
from services.reservations.bootstrap import create_app as reservations_app
from tests.reservations.helpers import eventually, platform, serve
from tests.reservations.test_api import reservas_cfg
from tests.utils.auth import bearer
from tests.utils.servers import ADMIN_EMAIL, ADMIN_PASSWORD


async def test_make_runs_demo_data_is_seeded_once_with_every_kind_of_event_and_account(
    settings: Settings, js: JetStreamContext, owner: str, tmp_path: Path
) -> None:
    async with platform(settings) as s, serve(reservations_app(s, reservas=reservas_cfg(owner))) as reservations:
        cfg = GatewaySettings(
            redis_url=s.redis_url, users_url=s.users_url, events_url=s.events_url, reservations_url=reservations
        )
        async with serve(gateway_app(cfg)) as gateway, httpx.AsyncClient(base_url=gateway, timeout=30) as http:
            system = {
                "EVENTFLOW_NATS_URL": s.nats_url,
                "EVENTFLOW_MASTER_KEY": s.master_key,
                "EVENTFLOW_PSEUDONYM_KEY": s.pseudonym_key,
                "EVENTFLOW_ADMIN_EMAIL": ADMIN_EMAIL,
                "EVENTFLOW_ADMIN_PASSWORD": ADMIN_PASSWORD,
            }
            # Other tests share these servers: the demo's fixed e-mails get a suffix of this test's own.
            tag = uuid.uuid4().hex[:8]
            accounts = {n: (e.replace("@", f"+{tag}@"), r) for n, (e, r) in demo.ACCOUNTS.items()}
            demo.ACCOUNTS, saved = accounts, demo.ACCOUNTS
            try:
                first = await asyncio.to_thread(demo.seed, gateway, system, tmp_path)
                again = await asyncio.to_thread(demo.seed, gateway, system, tmp_path)
                on_a_terminal = await asyncio.to_thread(demo.seed, gateway, system, tmp_path, True)
            finally:
                demo.ACCOUNTS = saved
            assert "4 events, 2 purchases made now" in first and "made now" not in again, first
            creds = demo.credentials(tmp_path)
            for name, (email, _) in accounts.items():
                password = creds[f"EVENTFLOW_DEMO_{name}_PASSWORD"]
                assert email in first and f"EVENTFLOW_DEMO_{name}_PASSWORD" in again, "where it is, printed"
                assert password not in first and password not in again, "not in a log (a detached start's output)"
                assert f"password: {password}" in on_a_terminal, "shown to a person at a terminal"
            assert stat.S_IMODE((tmp_path / "secrets.env").stat().st_mode) == 0o600

            async def token(name: str) -> dict[str, str]:
                body = {"email": accounts[name][0], "password": creds[f"EVENTFLOW_DEMO_{name}_PASSWORD"]}
                got = await http.post("/api/auth/token", json=body)
                assert got.status_code == 200, got.text
                return bearer(got.json()["access_token"])

            organizer, buyer, door = await token("ORGANIZER"), await token("BUYER"), await token("CONTROL")
            me = (await http.get("/api/usuarios/me", headers=organizer)).json()["id"]
            listed = (await http.get(f"/api/eventos?organizador_id={me}&desde=2000-01-01T00:00:00Z")).json()
            by_name = {e["nombre"]: e for e in listed["items"]}
            assert listed["total"] == 4, by_name
            past = next(e for n, e in by_name.items() if "pasada" in n)
            assert datetime.fromisoformat(past["fecha"]) < datetime.now(UTC), "one in the past"

            nearly = next(e for n, e in by_name.items() if "últimas" in n)
            assert (await http.get(f"/api/disponibilidad/{nearly['id']}")).json()["disponibles"] == 2
            seated = next(e for e in by_name.values() if e["secciones"])
            seats = (await http.get(f"/api/disponibilidad/{seated['id']}")).json()["secciones"][0]
            assert (seats["nombre"], seats["estados"][4:6]) == ("Platea", "VV")

            async def both_listed() -> bool:
                return (await http.get("/api/reservas", headers=buyer)).json()["total"] == 2

            await eventually(both_listed)
            mine = (await http.get("/api/reservas", headers=buyer)).json()["items"]
            codigo = mine[0]["tickets"][0]["codigo"]
            assert (await http.post("/api/checkin", json={"codigo": codigo}, headers=door)).status_code == 200
