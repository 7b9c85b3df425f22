"""Crash recovery (issue #3 §4): the reservations service as a real process, SIGKILLed while sagas run.

After a restart every saga ends confirmada or compensated (rechazada), sold + held never exceed the
capacity, every confirmed reservation has exactly one captured payment in the processor's ledger, and no
other reservation has one.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from nats.js import JetStreamContext

from eventflow.config import Settings
from eventflow.crypto import Pseudonymizer
from eventflow.eventstore import EventStore
from eventflow.jetstream import RESERVAS
from eventflow.servers import free_port
from services.reservations.domain import Estado, reserva_id_para
from services.reservations.inventory_store import JetStreamInventoryStore
from services.reservations.payments_sim import SimulatedPaymentGateway
from services.reservations.saga_store import BUCKET, ReservationArchive, SagaStore
from tests.reservations.helpers import DECLINED, Catalog, pago, platform, reserva

pytestmark = pytest.mark.slow
BUYERS, CAPACITY = 80, 50


def start_service(settings: Settings, port: int, instancia: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "EVENTFLOW_NATS_URL": settings.nats_url,
        "EVENTFLOW_REDIS_URL": settings.redis_url,
        "EVENTFLOW_MASTER_KEY": settings.master_key,
        "EVENTFLOW_PSEUDONYM_KEY": settings.pseudonym_key,
        "EVENTFLOW_CLIENT_ID": str(settings.client_id),  # its own credential, as service_env gives it
        "EVENTFLOW_CLIENT_SECRET": str(settings.client_secret),
        "EVENTFLOW_USERS_URL": settings.users_url,
        "EVENTFLOW_EVENTS_URL": settings.events_url,
        "EVENTFLOW_RESERVAS_INSTANCIA": instancia,
        "EVENTFLOW_RESERVAS_ESPERA_S": "0.05",  # answer 202 at once: the sagas go on in the background
        "EVENTFLOW_PAYMENTS_LATENCY_S": "0.15",  # keeps sagas in flight when the process is killed
    }
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services.reservations.main", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


async def wait_ready(client: httpx.AsyncClient, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        assert proc.poll() is None, "the reservations process exited"
        try:
            if (await client.get("/health/ready")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise TimeoutError("the reservations process did not become ready")


async def frozen_with_sagas_in_flight(
    proc: subprocess.Popen[bytes], store: SagaStore, ours: set[str], timeout: float = 60.0
) -> list[str]:
    """SIGSTOP the process and look: once sagas of ours are in flight, leave it stopped (the caller kills it).

    Stopping first makes the check exact: nothing can finish between what we read and the kill.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        os.kill(proc.pid, signal.SIGSTOP)
        in_flight = [s.reserva_id for s in await store.unfinished() if s.reserva_id in ours]
        if in_flight:
            return in_flight
        os.kill(proc.pid, signal.SIGCONT)
        assert asyncio.get_running_loop().time() < deadline, "no saga was ever in flight"
        await asyncio.sleep(0.1)  # each look is a new KV consumer; nats-server 2.15 allows 1000 per stream


async def test_sigkill_mid_saga_then_restart_recovers_every_saga(
    settings: Settings, js: JetStreamContext, tmp_path: Path
) -> None:
    instancia, port = f"crash-{uuid.uuid4().hex[:8]}", free_port()
    async with platform(settings) as s:
        catalog = Catalog(s)
        buyers = await catalog.usuarios(BUYERS)
        evento = await catalog.evento(aforo=CAPACITY)
        keys = {b: uuid.uuid4().hex for b in buyers}
        cards = {b: DECLINED if i % 7 == 0 else "4242424242424242" for i, b in enumerate(buyers)}

        def body(b: str) -> dict[str, Any]:
            return reserva(b, evento, pago=pago(cards[b]))

        def headers(b: str) -> dict[str, str]:
            return {"Idempotency-Key": keys[b], **catalog.headers(b)}

        proc = start_service(s, port, instancia, tmp_path / "reservations.log")
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                await wait_ready(client, proc)
                gate = asyncio.Semaphore(16)
                answered: set[str] = set()
                refused: set[str] = set()  # sold out at the chain's pre-check: no saga at all
                half = asyncio.Event()

                async def buy(b: str) -> None:
                    async with gate:
                        resp = await client.post("/api/reservar", json=body(b), headers=headers(b))
                        answered.add(b)
                        if resp.status_code == 409:
                            refused.add(b)
                        if len(answered) >= BUYERS // 2:
                            half.set()

                shoppers = [asyncio.create_task(buy(b)) for b in buyers]
                await half.wait()
                store = await SagaStore.open(js, BUCKET)
                ids = {b: reserva_id_para(Pseudonymizer(s.pseudonym_key_bytes), b, keys[b]) for b in buyers}
                in_flight = await frozen_with_sagas_in_flight(proc, store, set(ids.values()))
                proc.kill()  # SIGKILL (of a stopped process): no shutdown hook runs, nothing moved since we looked
                proc.wait()
                await asyncio.gather(*shoppers, return_exceptions=True)

                started = asyncio.get_running_loop().time()
                proc = start_service(s, port, instancia, tmp_path / "reservations.log")
                try:
                    await wait_ready(client, proc)
                    for b in buyers:  # the buyers whose request died with the process retry with their key
                        if b not in answered:
                            resp = await client.post("/api/reservar", json=body(b), headers=headers(b))
                            assert resp.status_code in (200, 201, 202, 409), resp.text
                            if resp.status_code == 409:
                                refused.add(b)
                    sagas = {}
                    archive = ReservationArchive(EventStore(js, RESERVAS))
                    deadline = asyncio.get_running_loop().time() + 45
                    while True:
                        sagas = {b: await store.get(ids[b]) or await archive.get(ids[b]) for b in buyers}
                        if all(saga is None or saga.terminada for saga in sagas.values()):
                            break
                        assert asyncio.get_running_loop().time() < deadline, "sagas did not finish after the restart"
                        await asyncio.sleep(0.2)
                    print(
                        f"recovered in {asyncio.get_running_loop().time() - started:.1f}s; {len(in_flight)} in flight"
                    )
                    assert all(sagas[b] is not None and sagas[b].terminada for b in buyers if ids[b] in in_flight)
                finally:
                    proc.terminate()
                    proc.wait(10)
        finally:  # whatever failed: no stopped or orphaned service process outlives the test
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        await catalog.aclose()

    assert all(sagas[b] is None for b in refused) and all(sagas[b] is not None for b in buyers if b not in refused)
    estados = {b: saga.estado for b, saga in sagas.items() if saga is not None}
    assert set(estados.values()) <= {Estado.CONFIRMADA, Estado.RECHAZADA}
    confirmed = [b for b, e in estados.items() if e == Estado.CONFIRMADA]
    assert all(cards[b] != DECLINED for b in confirmed)

    availability = await (await JetStreamInventoryStore.create(js)).availability(evento)
    assert availability.vendidas + availability.retenidas <= CAPACITY
    assert availability.vendidas == len(confirmed) and availability.retenidas == 0

    pagos = SimulatedPaymentGateway(js)
    for b in buyers:
        if b in refused:
            assert await pagos.payments_for(ids[b]) == []
            continue
        captures = [op for op in await pagos.payments_for(ids[b]) if op["tipo"] == "capture"]
        assert len(captures) == (1 if b in confirmed else 0), (b, estados[b], captures)
