"""The chaos suite: a flash sale through the gateway of a `make up`-style system on a local 3-node JetStream cluster,
with one fault per run, then the invariants. `python -m tests.chaos.suite` (make chaos: 1,000 buyers for 300
tickets per run); tests/chaos/test_chaos.py runs a smaller sale in `make test`.

Faults (one per run, injected once a tenth of the buyers have an answer): SIGKILL of the reservations process (the
supervisor restarts it); SIGKILL of the node that is JetStream's meta leader and the inventory stream's leader;
SIGKILL of Redis; SIGSTOP of the events service for 5 s; a rolling restart of every NATS node.

Buyers behave like clients should: one ticket each, an Idempotency-Key per purchase, the same key again on a 5xx,
a 429 or a transport error (with backoff, for minutes), a 202 followed by polling its Location, and a new purchase
(new key) when one was rejected for anything but "sold out". After each run:
- exactly min(demand, capacity) confirmed, and the inventory (CP) agrees: sold == confirmed, no hold left, 0 oversold;
- every saga terminal within SETTLE_S after the sale, none needing intervention;
- the processor's ledger: each confirmed reservation has exactly one capture, no other has a capture or an open
  authorization;
- the read models (events: catalog and sales; users: documents and histories) equal a cold rebuild from the log;
- no client was told "confirmada" for a reservation that is not confirmed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from nats.js import JetStreamContext
from redis.asyncio import Redis

from bench.tables import markdown_table
from eventflow.eventstore import StoredEvent
from eventflow.generations import Generation
from eventflow.jetstream import connect
from eventflow.projections import ProjectionRunner
from eventflow.servers import port_open
from services.reservations.inventory_store import JetStreamInventoryStore
from services.reservations.payments_sim import SimulatedPaymentGateway
from tests.e2e.system import admin_credentials, cluster_base_port, detached, state, system_env, url
from tests.utils.rebuilding import dump

CARD = {"numero_tarjeta": "4242424242424242", "vencimiento": "12/34", "cvc": "123"}
PASSWORD = "una frase secreta bastante larga"
TERMINAL = {"confirmada", "rechazada", "cancelada", "requiere_intervencion"}
SETTLE_S = 120.0  # the bound within which every saga must be terminal once the sale is over
PURCHASE_RETRY_S = 180.0
LOGS = Path(__file__).resolve().parents[2] / "var" / "chaos"
COLD_DB = 15  # the Redis database the cold rebuild is made in (the system uses 0)
COMPARE_ATTEMPTS = 3  # comparisons of the read models with a rebuild, until one sees the log stand still
FAULTS = ("kill reservations", "kill meta+stream leader", "kill redis", "stop events 5 s", "rolling nats restart")


def say(message: str) -> None:
    print(f"chaos: {message}", flush=True)


# -- the system ------------------------------------------------------------------------------------------------
@dataclass
class System:
    env: dict[str, str]
    gateway: str
    users: str
    nats_url: str
    redis_url: str

    @classmethod
    @contextlib.contextmanager
    def running(cls, var_dir: Path) -> Iterator[System]:
        """The system for the whole suite, stopped after it (tests/e2e/system.py `detached`)."""
        env = system_env(
            var_dir,
            EVENTFLOW_NATS_CLUSTER="3",
            EVENTFLOW_PASSWORD_HASH_PROFILE="test",  # a thousand buyers sign up: not a password-hashing benchmark
            EVENTFLOW_RATE_LIMIT_PER_S="0",  # every buyer comes from 127.0.0.1
            EVENTFLOW_RATE_LIMIT_ACCOUNT_PER_S="0",  # nor per account: the suite measures the sale, not the limit
            EVENTFLOW_LOG_LEVEL="WARNING",
            EVENTFLOW_READY_TIMEOUT="120",
        )
        env["EVENTFLOW_NATS_PORT"] = str(cluster_base_port())
        with detached(env):
            nats = ",".join(p["url"] for p in state(env)["processes"] if p["name"].startswith("nats"))
            redis = next(p["url"] for p in state(env)["processes"] if p["name"] == "redis")
            yield cls(env, url(env, "gateway"), url(env, "users"), nats, redis)

    def entry(self, name: str) -> dict[str, Any]:
        return next(p for p in state(self.env)["processes"] if p["name"] == name)

    def signal(self, name: str, signum: int) -> int:
        pid = int(self.entry(name)["pid"])
        os.kill(pid, signum)
        return pid

    async def restarted(self, name: str, old_pid: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.entry(name)["pid"] == old_pid or self.entry(name).get("restarting"):
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} was not restarted within {timeout} s")
            await asyncio.sleep(0.1)

    async def not_ready(self, session: aiohttp.ClientSession) -> list[str]:
        """The processes not ready now, each with why (its readiness answer): empty when all are."""
        waiting = []
        for entry in state(self.env)["processes"]:
            if entry.get("ready_url"):
                try:
                    async with session.get(entry["ready_url"], timeout=aiohttp.ClientTimeout(total=3)) as resp:
                        if resp.status != 200:
                            waiting.append(f"{entry['name']}: {resp.status} {(await resp.text())[:200]}")
                except (aiohttp.ClientError, TimeoutError) as err:
                    waiting.append(f"{entry['name']}: {type(err).__name__}")
            elif not port_open(int(entry["port"])):
                waiting.append(f"{entry['name']}: port {entry['port']} closed")
        return waiting

    async def all_ready(self, session: aiohttp.ClientSession) -> bool:
        return not await self.not_ready(session)

    async def wait_ready(self, session: aiohttp.ClientSession, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while waiting := await self.not_ready(session):
            if time.monotonic() > deadline:
                raise AssertionError(f"the system was not ready again within {timeout} s: {waiting}")
            await asyncio.sleep(0.2)


# -- clients -----------------------------------------------------------------------------------------------------
@dataclass
class Buyer:
    n: int
    email: str = ""
    usuario_id: str = ""
    token: str = ""
    refresh_token: str = ""
    reservas: dict[str, str] = field(default_factory=dict)  # reserva_id -> last state seen
    told_confirmed: set[str] = field(default_factory=set)


async def call(
    session: aiohttp.ClientSession, method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    async with session.request(method, url, json=body, headers=headers) as resp:
        raw = await resp.read()
        try:
            return resp.status, orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            return resp.status, raw.decode(errors="replace")


async def with_retries(
    session: aiohttp.ClientSession, method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """For the setup (sign-ups, events): retried on 5xx and transport errors, as faults may be recovering."""
    deadline = time.monotonic() + 120
    while True:
        try:
            status, doc = await call(session, method, url, body, headers)
            if status < 500:
                return status, doc
        except (aiohttp.ClientError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{method} {url}: no answer but errors for 120 s")
        await asyncio.sleep(0.5)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def sign_up(session: aiohttp.ClientSession, system: System, buyer: Buyer) -> None:
    tag = uuid.uuid4().hex[:10]
    buyer.email = f"comprador.{tag}@ejemplo.com"
    body = {"tipo_documento": "Pasaporte", "nro_documento": f"C{uuid.uuid4().int % 10**8:08d}",
            "nombre": f"Nombre{tag}", "apellido": f"Apellido{tag}", "email": buyer.email,
            "password": PASSWORD}  # fmt: skip
    status, doc = await with_retries(session, "POST", f"{system.gateway}/api/usuarios", body)
    assert status == 201, doc
    buyer.usuario_id = doc["id"]
    await sign_in(session, system, buyer)


async def sign_in(session: aiohttp.ClientSession, system: System, buyer: Buyer) -> None:
    body = {"email": buyer.email, "password": PASSWORD}
    status, doc = await with_retries(session, "POST", f"{system.gateway}/api/auth/token", body)
    assert status == 200, doc
    buyer.token, buyer.refresh_token = doc["access_token"], doc["refresh_token"]


async def organizer_token(session: aiohttp.ClientSession, system: System) -> str:
    email, password = admin_credentials(system.env)
    status, doc = await with_retries(session, "POST", f"{system.gateway}/api/auth/token",
                                     {"email": email, "password": password})  # fmt: skip
    assert status == 200, doc
    return str(doc["access_token"])


async def create_event(session: aiohttp.ClientSession, system: System, token: str, aforo: int) -> str:
    body = {"nombre": f"Venta flash {uuid.uuid4().hex[:6]}", "descripcion": "caos",
            "fecha": "2031-06-01T21:00:00+00:00", "lugar": "Estadio", "aforo_total": aforo, "precio": 30,
            "categoria": "musica"}  # fmt: skip
    deadline = time.monotonic() + 60
    while True:  # a verifier that started before the first signing key refuses its first token (reported)
        status, doc = await with_retries(session, "POST", f"{system.gateway}/api/eventos", body, bearer(token))
        if status != 401 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert status == 201, doc
    return str(doc["id"])


# -- one run -----------------------------------------------------------------------------------------------------
@dataclass
class Run:
    fault: str
    buyers: int
    tickets: int
    statuses: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    recovery_s: float | None = None
    fault_detail: str = ""
    checks: dict[str, bool] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)  # the first 500 bodies (their request ids find the logs)
    sale_s: float = 0.0

    @property
    def passed(self) -> bool:
        return all(self.checks.values())


class Sale:
    """One flash sale: every buyer tries to buy one ticket of `evento`; answers counted by status."""

    def __init__(self, session: aiohttp.ClientSession, system: System, run: Run, evento: str) -> None:
        self.session, self.system, self.run, self.evento = session, system, run, evento
        self.answered = 0
        self.tenth = asyncio.Event()

    def _answer(self, status: int | str) -> None:
        self.run.requests += 1
        self.run.statuses[str(status)] += 1

    async def buy(self, buyer: Buyer) -> None:
        for _ in range(5):
            key = uuid.uuid4().hex
            doc = await self._purchase(buyer, key)
            self.answered += 1
            if self.answered >= max(1, self.run.buyers // 10):
                self.tenth.set()
            if doc is None:
                return  # sold out at the chain's pre-check: no saga
            final = await self._settle(buyer, str(doc["id"]))
            if final["estado"] != "rechazada" or final.get("motivo") == "agotado":
                return

    def _seen(self, buyer: Buyer, doc: dict[str, Any]) -> None:
        buyer.reservas[str(doc["id"])] = str(doc.get("estado"))
        if doc.get("estado") == "confirmada":
            buyer.told_confirmed.add(str(doc["id"]))

    async def _purchase(self, buyer: Buyer, key: str) -> dict[str, Any] | None:
        body = {"evento_id": self.evento, "cantidad": 1, "pago": CARD}
        headers = {"Idempotency-Key": key, **bearer(buyer.token)}
        deadline, delay = time.monotonic() + PURCHASE_RETRY_S, 0.2
        while True:
            try:
                status, doc = await call(self.session, "POST", f"{self.system.gateway}/api/reservar", body, headers)
                self._answer(status)
                if status in (200, 201, 202):
                    self._seen(buyer, doc)
                    return dict(doc)
                if status == 409 and "agotado" in orjson.dumps(doc).decode():
                    return None
                if status < 500 and status != 429:
                    raise AssertionError(f"POST /api/reservar answered {status}: {str(doc)[:300]}")
                if status == 500 and len(self.run.server_errors) < 5:
                    self.run.server_errors.append(str(doc)[:300])
            except (aiohttp.ClientError, TimeoutError) as err:
                self._answer(type(err).__name__)
            if time.monotonic() > deadline:
                raise AssertionError(f"POST /api/reservar: only errors for {PURCHASE_RETRY_S:g} s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 3.0)

    async def _settle(self, buyer: Buyer, reserva_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + SETTLE_S + PURCHASE_RETRY_S
        while True:
            if buyer.reservas.get(reserva_id) in TERMINAL:
                return {"estado": buyer.reservas[reserva_id]}
            try:
                url = f"{self.system.gateway}/api/reservas/{reserva_id}"
                status, doc = await call(self.session, "GET", url, headers=bearer(buyer.token))
                if status == 200:
                    self._seen(buyer, doc)
                    if doc["estado"] in TERMINAL and not doc.get("en_curso"):
                        return dict(doc)
            except (aiohttp.ClientError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"reservation {reserva_id} not terminal in time")
            await asyncio.sleep(0.5)


# -- faults ------------------------------------------------------------------------------------------------------
async def leaders(system: System, stream: str) -> tuple[str | None, str | None]:
    """(JetStream's meta leader, `stream`'s leader) as server names (eventflow-n<i>)."""
    nc = await connect(system.nats_url, "chaos-leaders")
    try:
        info = await nc.jetstream(timeout=10).stream_info(stream)
        stream_leader = info.cluster.leader if info.cluster else None
    finally:
        await nc.close()
    base = int(system.env["EVENTFLOW_NATS_PORT"])  # node i's monitoring port is base + 200 + i (eventflow.system)
    for i in range(3):
        try:
            meta = (await asyncio.to_thread(_jsz, base + 200 + i)).get("meta_cluster", {}).get("leader")
        except OSError:
            continue
        if meta:
            return str(meta), stream_leader
    return None, stream_leader


def _jsz(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/jsz", timeout=2) as resp:
        doc: dict[str, Any] = orjson.loads(resp.read())
        return doc


async def step_down_to(system: System, stream: str, server_name: str) -> None:
    """Move `stream`'s leadership to `server_name` (nats-server 2.11+: a preferred placement on stepdown)."""
    nc = await connect(system.nats_url, "chaos-stepdown")
    try:
        body = orjson.dumps({"placement": {"preferred": server_name}})
        await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", body, timeout=10)
    finally:
        await nc.close()


def child_of(server_name: str) -> str:
    return "nats" + server_name.rsplit("-n", 1)[1]


async def all_replicas_current(system: System, streams: tuple[str, ...]) -> bool:
    try:
        nc = await connect(system.nats_url, "chaos-current")
    except Exception:
        return False
    try:
        js = nc.jetstream(timeout=5)
        for stream in streams:
            info = await js.stream_info(stream)
            cluster = info.cluster
            if cluster is None or not cluster.leader:
                return False
            if len(cluster.replicas or []) != 2 or not all(p.current and not p.offline for p in cluster.replicas or []):
                return False
        return True
    except Exception:
        return False
    finally:
        await nc.close()


HOT_STREAMS = ("KV_INVENTARIO", "KV_SAGAS", "RESERVAS", "KV_PASARELA_SIM")


async def inject(fault: str, system: System, run: Run) -> None:
    if fault == "kill reservations":
        pid = system.signal("reservations", signal.SIGKILL)
        await system.restarted("reservations", pid)
    elif fault == "kill meta+stream leader":
        meta, leader = await leaders(system, "KV_INVENTARIO")
        if meta and leader != meta:
            with_timeout = asyncio.wait_for(step_down_to(system, "KV_INVENTARIO", meta), 15)
            try:
                await with_timeout
            except Exception as err:  # leadership stays where it is: both nodes are killed then
                run.notes.append(f"stepdown refused: {type(err).__name__}")
            for _ in range(50):
                if (await leaders(system, "KV_INVENTARIO"))[1] == meta:
                    break
                await asyncio.sleep(0.1)
            meta, leader = await leaders(system, "KV_INVENTARIO")
        victims = sorted({child_of(name) for name in (meta, leader) if name})
        run.fault_detail = f"{'+'.join(victims)} (meta {meta}, KV_INVENTARIO {leader})"
        pids = {name: system.signal(name, signal.SIGKILL) for name in victims}
        for name, pid in pids.items():
            await system.restarted(name, pid)
    elif fault == "kill redis":
        pid = system.signal("redis", signal.SIGKILL)
        await system.restarted("redis", pid)
    elif fault == "stop events 5 s":
        system.signal("events", signal.SIGSTOP)
        try:
            await asyncio.sleep(5)
        finally:
            system.signal("events", signal.SIGCONT)
    elif fault == "rolling nats restart":
        for name in ("nats1", "nats2", "nats3"):
            pid = system.signal(name, signal.SIGTERM)
            await system.restarted(name, pid)
            deadline = time.monotonic() + 120
            while not await all_replicas_current(system, HOT_STREAMS):
                if time.monotonic() > deadline:
                    raise AssertionError(f"the replicas were not current within 120 s of restarting {name}")
                await asyncio.sleep(0.2)
    else:
        raise ValueError(fault)


async def until_recovered(session: aiohttp.ClientSession, system: System, evento: str, since: float) -> float:
    """Seconds from the fault until every process is ready and the event reads through the gateway."""
    deadline = since + 300
    while True:
        if await system.all_ready(session):
            try:
                status, _ = await call(session, "GET", f"{system.gateway}/api/eventos/{evento}")
                if status == 200:
                    return time.monotonic() - since
            except (aiohttp.ClientError, TimeoutError):
                pass
        if time.monotonic() > deadline:
            raise AssertionError("not recovered within 300 s")
        await asyncio.sleep(0.1)


# -- the checks --------------------------------------------------------------------------------------------------
async def read_models_equal_a_rebuild(system: System) -> tuple[bool, str]:
    """Live read models, once caught up with the log, against a cold rebuild of the same log in another database.

    Only a comparison over a log that did not move means anything: the cold rebuild replays its read models one
    after the other, so an event appended meanwhile lands in some cold read models and not in others (an event's
    sales documents "differing" while its dashboard, from the same stream, agrees). An attempt during which a
    stream moved is made again, and what moved it is reported."""
    from services.events.bootstrap import read_models as events_models
    from services.users.bootstrap import read_models as users_models

    nc = await connect(system.nats_url, "chaos-rebuild")
    js = nc.jetstream(timeout=10)
    live = Redis.from_url(system.redis_url, decode_responses=True)
    cold = Redis.from_url(system.redis_url.rsplit("/", 1)[0] + f"/{COLD_DB}", decode_responses=True)
    try:
        problems, moved = [], []
        for models in (events_models(), users_models()):
            for _ in range(COMPARE_ATTEMPTS):
                before = await _heads(js, models)
                problem = await _compare(js, live, cold, models, before)
                after = await _heads(js, models)
                if after == before:
                    break
                moved.append(await _what_moved(js, before, after))
            if problem:
                problems.append(problem)
        notes = problems + ([f"the log moved during a comparison (made again): {'; '.join(moved)}"] if moved else [])
        return not problems, "; ".join(notes)
    finally:
        await cold.flushdb()
        await cold.aclose()
        await live.aclose()
        await nc.close()


async def _heads(js: JetStreamContext, models: list[Any]) -> dict[str, int]:
    return {spec.name: int((await js.stream_info(spec.name)).state.last_seq) for spec, _ in models}


async def _compare(
    js: JetStreamContext, live: Redis, cold: Redis, models: list[Any], heads: dict[str, int]
) -> str | None:
    """None if the family's live read models, caught up with `heads`, equal a cold rebuild; else what differs
    (every differing key, live and cold, in var/chaos/differ-<family>.json)."""
    family = models[0][1].family
    generation = Generation(live, family)
    await generation.refresh()
    current = generation.current
    for spec, projection in models:
        runner = ProjectionRunner(js, live, spec, projection.at(current))
        deadline = time.monotonic() + 120
        while int(await live.get(runner.checkpoint_key) or 0) < heads[spec.name]:
            if time.monotonic() > deadline:
                return f"{runner.checkpoint_key} did not catch up with the log"
            await asyncio.sleep(0.2)
    await cold.flushdb()
    for spec, projection in models:
        await ProjectionRunner(js, cold, spec, projection.at(0)).catch_up()
    live_keys, _ = await dump(live, [p for _, proj in models for p in proj.at(current).key_patterns])
    cold_keys, _ = await dump(cold, [p for _, proj in models for p in proj.at(0).key_patterns])
    if live_keys == cold_keys:
        return None
    differ = sorted(k for k in live_keys.keys() | cold_keys.keys() if live_keys.get(k) != cold_keys.get(k))
    detail = {k: {"live": live_keys.get(k), "cold": cold_keys.get(k)} for k in differ}
    (LOGS / f"differ-{family}.json").write_bytes(orjson.dumps(detail, option=orjson.OPT_INDENT_2))
    return f"{family}: {len(differ)} keys differ, e.g. {differ[:3]}"


async def _what_moved(js: JetStreamContext, before: dict[str, int], after: dict[str, int]) -> str:
    """The events appended between two looks at the heads (the first few of each stream), as stream seq type."""
    found = []
    for stream, head in after.items():
        for seq in range(before[stream] + 1, min(head, before[stream] + 5) + 1):
            msg = await js.get_msg(stream, seq=seq)
            event = StoredEvent.decode(stream, seq, msg.subject or "", msg.data or b"")
            found.append(f"{stream} {seq} {event.type} {event.aggregate_id}")
    return ", ".join(found)


async def check(run: Run, system: System, buyers: list[Buyer], evento: str, session: aiohttp.ClientSession) -> None:
    nc = await connect(system.nats_url, "chaos-checks")
    js = nc.jetstream(timeout=10)
    try:
        finals: dict[str, str] = {}
        motivos: Counter[str] = Counter()
        deadline = time.monotonic() + SETTLE_S
        for buyer in buyers:  # the authority: the saga's own record (CP), read back now
            for reserva_id in buyer.reservas:
                while True:
                    url = f"{system.gateway}/api/reservas/{reserva_id}"
                    status, doc = await with_retries(session, "GET", url, headers=bearer(buyer.token))
                    assert status == 200, doc
                    if (doc["estado"] in TERMINAL and not doc.get("en_curso")) or time.monotonic() > deadline:
                        finals[reserva_id] = doc["estado"] if not doc.get("en_curso") else "en_curso"
                        if doc["estado"] == "rechazada":
                            motivos[str(doc.get("motivo"))] += 1
                        break
                    await asyncio.sleep(0.5)
        outcomes = Counter(finals.values())
        confirmed = outcomes["confirmada"]
        availability = await (await JetStreamInventoryStore.create(js)).availability(evento)
        expected = min(run.buyers, run.tickets)
        run.checks["exactly min(demand, capacity) confirmed"] = confirmed == expected == availability.vendidas
        run.checks["0 oversold, no hold left"] = (
            availability.vendidas <= run.tickets and availability.retenidas == 0 and availability.disponibles >= 0
        )
        run.checks[f"every saga terminal within {SETTLE_S:g} s"] = all(v in TERMINAL for v in finals.values()) and (
            outcomes["requiere_intervencion"] == 0
        )
        ledger = SimulatedPaymentGateway(js)
        bad_money = 0
        for reserva_id, estado in finals.items():
            ops = await ledger.payments_for(reserva_id)
            captures = sum(1 for op in ops if op["tipo"] == "capture")
            open_auth = any(op["tipo"] == "authorize" and op.get("estado") in ("authorized", "captured") for op in ops)
            bad_money += captures != 1 if estado == "confirmada" else (captures != 0 or open_auth)
        run.checks["one capture per confirmed, nothing else"] = bad_money == 0
        lied = [r for b in buyers for r in b.told_confirmed if finals.get(r) != "confirmada"]
        run.checks["no client told confirmed wrongly"] = not lied
        equal, why = await read_models_equal_a_rebuild(system)
        run.checks["read models == rebuild"] = equal
        run.notes += [f"outcomes {dict(outcomes)}, rejected by motivo {dict(motivos)}", f"sold {availability.vendidas}"]
        if bad_money:
            run.notes.append(f"{bad_money} reservations break the money invariant")
        if why:
            run.notes.append(why)
    finally:
        await nc.close()


# -- a whole suite -----------------------------------------------------------------------------------------------
async def prepare_buyers(session: aiohttp.ClientSession, system: System, n: int) -> list[Buyer]:
    gate = asyncio.Semaphore(32)
    buyers = [Buyer(i) for i in range(n)]

    async def one(buyer: Buyer) -> None:
        async with gate:
            await sign_up(session, system, buyer)

    await asyncio.gather(*(one(b) for b in buyers))
    return buyers


async def refresh(session: aiohttp.ClientSession, system: System, buyers: list[Buyer]) -> None:
    """Fresh access tokens (15 minutes) before each run: signed in again, as a client whose token expired."""
    gate = asyncio.Semaphore(32)

    async def one(buyer: Buyer) -> None:
        async with gate:
            await sign_in(session, system, buyer)
            buyer.reservas.clear()
            buyer.told_confirmed.clear()

    await asyncio.gather(*(one(b) for b in buyers))


async def run_fault(
    fault: str, session: aiohttp.ClientSession, system: System, buyers: list[Buyer], tickets: int
) -> Run:
    run = Run(fault, len(buyers), tickets)
    await system.wait_ready(session)
    await refresh(session, system, buyers)
    evento = await create_event(session, system, await organizer_token(session, system), tickets)
    sale = Sale(session, system, run, evento)

    async def chaos() -> None:
        await sale.tenth.wait()
        since = time.monotonic()
        await inject(fault, system, run)
        run.recovery_s = await until_recovered(session, system, evento, since)

    say(f"{fault}: {len(buyers)} buyers for {tickets} tickets")
    started = time.monotonic()
    fault_task = asyncio.create_task(chaos())
    buying = asyncio.gather(*(sale.buy(b) for b in buyers))
    try:
        await buying
        await fault_task
    finally:
        fault_task.cancel()
    run.sale_s = time.monotonic() - started
    await check(run, system, buyers, evento, session)
    say(f"{fault}: {'passed' if run.passed else 'FAILED'} {run.checks} {run.notes}")
    return run


def table(runs: list[Run]) -> str:
    header = ["fault", "buyers/tickets", "requests", "answers by status", "recovery s", "sale s", "invariants"]
    rows = []
    for run in runs:
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(run.statuses.items()))
        failed = [name for name, ok in run.checks.items() if not ok]
        verdict = f"all {len(run.checks)} hold" if not failed else "FAILED: " + "; ".join(failed)
        recovery = f"{run.recovery_s:.1f}" if run.recovery_s is not None else "-"
        fault = run.fault + (f" ({run.fault_detail})" if run.fault_detail else "")
        rows.append([fault, f"{run.buyers}/{run.tickets}", str(run.requests), statuses, recovery,
                     f"{run.sale_s:.1f}", verdict])  # fmt: skip
    return markdown_table(header, rows)


async def suite(
    buyers_n: int,
    tickets: int,
    faults: tuple[str, ...] = FAULTS,
    on_run: Callable[[Run], Awaitable[None]] | None = None,
) -> list[Run]:
    var_dir = LOGS / "var"
    shutil.rmtree(var_dir, ignore_errors=True)  # the last run's logs stay there until the next run
    with System.running(var_dir) as system:
        connector = aiohttp.TCPConnector(limit=256)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
            started = time.monotonic()
            buyers = await prepare_buyers(session, system, buyers_n)
            say(f"{buyers_n} buyers signed up and in ({time.monotonic() - started:.1f} s)")
            runs = []
            for fault in faults:
                run = await run_fault(fault, session, system, buyers, tickets)
                runs.append(run)
                if on_run is not None:
                    await on_run(run)
            return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buyers", type=int, default=1000)
    parser.add_argument("--tickets", type=int, default=300)
    parser.add_argument("--fault", action="append", choices=FAULTS, help="only these (repeatable)")
    args = parser.parse_args()
    runs = asyncio.run(suite(args.buyers, args.tickets, tuple(args.fault or FAULTS)))
    print()
    print(table(runs))
    for run in runs:
        for note in [*run.notes, *(f"500: {body}" for body in run.server_errors)]:
            print(f"  {run.fault}: {note}")
    print(f"logs of the last run: {LOGS / 'var' / 'log'}/")
    return 0 if all(run.passed for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
