"""`python -m bench.reservations`: reservations per second on a single node with fsync on every write.

Starts its own nats-server (JetStream, `sync_interval: always`) and redis-server on free ports, the users,
events and reservations services (and the gateway, if present) as real processes with one uvicorn worker
each, each with only its own secrets (eventflow.system.service_env), creates the buyers (with passwords, signed
in at the token endpoint) and an organizer who creates the events, then has the buyers all reserve at once with
aiohttp, every request carrying the buyer's token. Prints one row per scenario and target: confirmed/s, p50/p99
latency, rejected, oversold (sold beyond capacity: must be 0); then what verifying tokens costs: one verification
in-process, and read rps of a public GET with and without an Authorization header and of a bearer-protected GET.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import platform
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.tables import markdown_table
from eventflow.auth import ORGANIZADOR, StaticKeys, TokenVerifier, TrustedIssuer
from eventflow.config import Settings
from eventflow.jetstream import connect
from eventflow.servers import ServerProcess, free_port, start_nats, start_redis
from eventflow.system import service_env
from services.reservations.inventory_store import JetStreamInventoryStore
from services.reservations.payments_sim import SimulatedPaymentGateway

ROOT = Path(__file__).resolve().parent.parent
CARD = {"numero_tarjeta": "4242424242424242", "vencimiento": "12/34", "cvc": "123"}
PASSWORD = "una clave de banco de pruebas larga"
ADMIN_EMAIL = "admin@bench.eventflow.example"  # RFC 2606: never a real mailbox


@dataclass
class Cuenta:
    """A signed-in account as the load generator holds it."""

    id: str
    token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Row:
    scenario: str
    target: str
    requests: int
    confirmed: int
    rejected: int
    errors: int
    elapsed_s: float
    latencies_ms: list[float]
    oversold: int
    motivos: Counter[str] = field(default_factory=Counter)  # rejections by reason (`motivo` of the answer)
    usage: str = ""  # CPU seconds per 1,000 sales and peak RSS of each process (usage_line)

    def cells(self) -> list[str]:
        lat = sorted(self.latencies_ms)
        p50 = lat[len(lat) // 2] if lat else 0.0
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else 0.0
        rate = self.confirmed / self.elapsed_s if self.elapsed_s else 0.0
        return [
            self.scenario,
            self.target,
            str(self.requests),
            f"{rate:.0f}",
            f"{p50:.0f}",
            f"{p99:.0f}",
            str(self.confirmed),
            str(self.rejected),
            ", ".join(f"{m}: {n}" for m, n in self.motivos.most_common()) or "-",
            str(self.errors),
            str(self.oversold),
        ]


HEADERS = [
    "scenario",
    "via",
    "requests",
    "confirmed/s",
    "p50 ms",
    "p99 ms",
    "confirmed",
    "rejected",
    "rejected by reason",
    "errors",
    "oversold",
]


def table(rows: list[Row]) -> str:
    return markdown_table(HEADERS, [r.cells() for r in rows])


class Services:
    def __init__(
        self, tmp: Path, latency_s: float, limit_precheck: bool, processor_nats: bool, rate_limit_per_s: float = 0
    ) -> None:
        self.tmp = tmp
        # The gateway's limits: anonymous calls per address (0 = off: every request here comes from one address,
        # so this would only measure the bound), signed-in calls per account as deployed (each buyer has one).
        self.rate_limit_per_s = rate_limit_per_s
        self.processor_nats = processor_nats
        self.latency_s = latency_s
        self.limit_precheck = limit_precheck
        self.procs: list[subprocess.Popen[bytes]] = []
        self.servers: list[ServerProcess] = []
        self.urls: dict[str, str] = {}

    def start(self, with_gateway: bool) -> dict[str, str]:
        nats = start_nats(free_port(), self.tmp / "nats", self.tmp / "nats.log")
        self.servers.append(nats)
        if self.processor_nats:
            processor = start_nats(free_port(), self.tmp / "processor", self.tmp / "processor.log")
            self.servers.append(processor)
        redis = start_redis(free_port(), self.tmp / "redis", self.tmp / "redis.log")
        self.servers.append(redis)
        ports = {name: free_port() for name in ("users", "events", "reservations", "gateway")}
        self.urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        self.admin_password = secrets.token_urlsafe(18)
        self.system = {
            "EVENTFLOW_NATS_URL": nats.url,
            "EVENTFLOW_REDIS_URL": redis.url,
            "EVENTFLOW_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
            "EVENTFLOW_PSEUDONYM_KEY": base64.b64encode(os.urandom(32)).decode(),
            "EVENTFLOW_SERVICE_KEY": base64.b64encode(os.urandom(32)).decode(),
            "EVENTFLOW_ADMIN_EMAIL": ADMIN_EMAIL,
            "EVENTFLOW_ADMIN_PASSWORD": self.admin_password,
            "EVENTFLOW_USERS_URL": self.urls["users"],
            "EVENTFLOW_EVENTS_URL": self.urls["events"],
            "EVENTFLOW_RESERVATIONS_URL": self.urls["reservations"],
            "EVENTFLOW_LOG_LEVEL": "WARNING",
            "EVENTFLOW_PAYMENTS_LATENCY_S": str(self.latency_s),
            "EVENTFLOW_RESERVAS_INSTANCIA": "bench",
            "EVENTFLOW_RESERVAS_ESPERA_S": "30",
            "EVENTFLOW_RATE_LIMIT_PER_S": str(self.rate_limit_per_s),
            "EVENTFLOW_RATE_LIMIT_BURST": str(max(1, int(self.rate_limit_per_s * 2))),
            "EVENTFLOW_RATE_LIMIT_ACCOUNT_PER_S": "50",
            "EVENTFLOW_RATE_LIMIT_ACCOUNT_BURST": "100",
            "EVENTFLOW_RESERVAS_PRECHECK_LIMITE": str(self.limit_precheck).lower(),
        }
        self.ledger_url = nats.url
        if self.processor_nats:
            self.system["EVENTFLOW_PAYMENTS_NATS_URL"] = processor.url
            self.ledger_url = processor.url
        names = ["users", "events", "reservations"] + (["gateway"] if with_gateway else [])
        for name in names:
            log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
            module = f"services.{name}.main"
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", module, "--port", str(ports[name])],
                    env={**os.environ, **service_env(name, self.system)},  # each process its own secrets only
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        self.nats_url = nats.url
        return {name: self.urls[name] for name in names}

    def processes(self) -> dict[str, int]:
        """The pid of every service and of the system's nats-server (the ledger's too, when it has its own)."""
        names = ["users", "events", "reservations", "gateway"][: len(self.procs)]
        pids = {name: proc.pid for name, proc in zip(names, self.procs, strict=True)}
        pids["nats-server"] = self.servers[0].proc.pid
        return pids

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        for server in reversed(self.servers):
            server.stop()


def proc_usage(pid: int) -> tuple[float, int]:
    """CPU seconds (user + system) so far and peak RSS in MiB of one process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    hwm = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmHWM"))
    return cpu, int(hwm.split()[1]) // 1024


def usage_line(names: list[str], pids: list[int], before: dict[int, float], confirmed: int) -> str:
    """Per process: CPU seconds per 1,000 confirmed sales in this step, and peak RSS so far."""
    parts = []
    for name, pid in zip(names, pids, strict=True):
        cpu, rss = proc_usage(pid)
        per_k = (cpu - before[pid]) / confirmed * 1000 if confirmed else 0.0
        parts.append(f"{name} {per_k:.1f} cpu-s/1k sales, peak {rss} MiB")
    return "; ".join(parts)


async def wait_ready(session: aiohttp.ClientSession, url: str) -> None:
    for _ in range(600):
        try:
            async with session.get(f"{url}/health/ready") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{url} did not become ready")


async def post(
    session: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
    status: int = 201,
) -> dict[str, Any]:
    async with session.post(url, json=body, headers=headers) as resp:
        assert resp.status == status, await resp.text()
        doc: dict[str, Any] = await resp.json()
        return doc


async def sign_in(session: aiohttp.ClientSession, users_url: str, email: str, password: str) -> dict[str, Any]:
    return await post(session, f"{users_url}/api/auth/token", {"email": email, "password": password}, status=200)


async def register(session: aiohttp.ClientSession, users_url: str, gate: asyncio.Semaphore) -> Cuenta:
    """A new comprador with a password, signed in (two argon2 hashes' worth of the users service's CPU)."""
    tag = uuid.uuid4().hex[:10]
    body = {
        "tipo_documento": "Pasaporte",
        "nro_documento": f"P{uuid.uuid4().int % 10**8:08d}",
        "nombre": f"Bench{tag}",
        "apellido": f"Buyer{tag}",
        "email": f"bench.{tag}@ejemplo.com",
        "password": PASSWORD,
    }
    async with gate:
        usuario_id = str((await post(session, f"{users_url}/api/usuarios", body))["id"])
        tokens = await sign_in(session, users_url, body["email"], PASSWORD)
    return Cuenta(usuario_id, tokens["access_token"], tokens["refresh_token"])


async def make_buyers(session: aiohttp.ClientSession, users_url: str, n: int) -> list[Cuenta]:
    gate = asyncio.Semaphore(32)
    return list(await asyncio.gather(*(register(session, users_url, gate) for _ in range(n))))


async def refresh(session: aiohttp.ClientSession, users_url: str, cuentas: list[Cuenta]) -> None:
    """Fresh access tokens (they live 15 minutes) before each scenario; a refresh costs no password hash."""
    gate = asyncio.Semaphore(32)

    async def one(cuenta: Cuenta) -> None:
        async with gate:
            body = {"refresh_token": cuenta.refresh_token}
            tokens = await post(session, f"{users_url}/api/auth/refresh", body, status=200)
        cuenta.token, cuenta.refresh_token = tokens["access_token"], tokens["refresh_token"]

    await asyncio.gather(*(one(c) for c in cuentas))


async def make_organizer(session: aiohttp.ClientSession, users_url: str, admin_password: str) -> Cuenta:
    """A new user the first admin makes an organizador, signed in again so the token carries the role."""
    boss = await sign_in(session, users_url, ADMIN_EMAIL, admin_password)
    tag = uuid.uuid4().hex[:10]
    body = {
        "tipo_documento": "Pasaporte",
        "nro_documento": f"P{uuid.uuid4().int % 10**8:08d}",
        "nombre": f"Org{tag}",
        "apellido": f"Bench{tag}",
        "email": f"org.{tag}@ejemplo.com",
        "password": PASSWORD,
    }
    usuario_id = str((await post(session, f"{users_url}/api/usuarios", body))["id"])
    roles_url = f"{users_url}/api/usuarios/{usuario_id}/roles"
    boss_headers = {"Authorization": f"Bearer {boss['access_token']}"}
    async with session.put(roles_url, json={"roles": [ORGANIZADOR]}, headers=boss_headers) as resp:
        assert resp.status == 200, await resp.text()
    tokens = await sign_in(session, users_url, body["email"], PASSWORD)
    return Cuenta(usuario_id, tokens["access_token"], tokens["refresh_token"])


async def make_event(
    session: aiohttp.ClientSession, events_url: str, organizer: Cuenta, aforo: int, **extra: Any
) -> str:
    body = {
        "nombre": f"Bench {uuid.uuid4().hex[:6]}",
        "descripcion": "benchmark",
        "fecha": "2031-01-01T21:00:00+00:00",
        "lugar": "Estadio",
        "aforo_total": aforo,
        "precio": 30.0,
        "categoria": "Musica",
        **extra,
    }
    return str((await post(session, f"{events_url}/api/eventos", body, organizer.headers))["id"])


@dataclass
class StadiumRow:
    target: str
    capacity: int
    per_request: int
    requests: int
    sold: int
    sell_out_s: float
    rate_at_1: float  # confirmed reservations/s in the 2 s around 1 % sold
    rate_at_95: float  # ... around 95 % sold
    oversold: int
    money_errors: int  # reservations breaking the ledger invariant (ledger_violations)

    HEADERS = (
        "scenario",
        "via",
        "requests",
        "sold",
        "sell-out s",
        "confirmed/s at 1 %",
        "at 95 %",
        "oversold",
        "money errors",
    )

    def cells(self) -> list[str]:
        return [
            f"stadium {self.capacity:,} GA, {self.per_request}/request",
            self.target,
            str(self.requests),
            f"{self.sold:,}",
            f"{self.sell_out_s:.1f}",
            f"{self.rate_at_1:.0f}",
            f"{self.rate_at_95:.0f}",
            str(self.oversold),
            str(self.money_errors),
        ]


def rate_around(
    confirmations: list[tuple[float, int]], sold: float, started: float, half_window_s: float = 1.0
) -> float:
    """Confirmed reservations per second in the two seconds around the moment `sold` tickets were reached."""
    crossing = next((t for t, count in confirmations if count >= sold), None)
    if crossing is None:
        return 0.0
    low = max(started, crossing - half_window_s)
    high = min(confirmations[-1][0], crossing + half_window_s)
    inside = sum(1 for t, _ in confirmations if low <= t <= high)
    return inside / (high - low) if high > low else 0.0


async def run_stadium(
    session: aiohttp.ClientSession,
    target: str,
    base_url: str,
    events_url: str,
    organizer: Cuenta,
    buyers: list[Cuenta],
    capacity: int,
    per_request: int,
    inventory: JetStreamInventoryStore,
    ledger: SimulatedPaymentGateway,
) -> StadiumRow:
    """Every buyer keeps buying `per_request` tickets until the event says sold out: a whole on-sale."""
    evento = await make_event(
        session, events_url, organizer, capacity, limite_por_usuario=1000, max_por_solicitud=per_request
    )
    confirmations: list[tuple[float, int]] = []
    outcomes: dict[str, str] = {}
    sold = 0
    requests = 0

    async def buyer(cuenta: Cuenta) -> None:
        nonlocal sold, requests
        while True:
            body = {"usuario_id": cuenta.id, "evento_id": evento, "cantidad": per_request, "pago": CARD}
            requests += 1
            headers = {"Idempotency-Key": uuid.uuid4().hex, **cuenta.headers}
            async with session.post(f"{base_url}/api/reservar", json=body, headers=headers) as resp:
                doc = await resp.json(content_type=None)
            if isinstance(doc, dict) and doc.get("id"):
                outcomes[str(doc["id"])] = str(doc.get("estado"))
            if resp.status == 201 and doc.get("estado") == "confirmada":
                sold += per_request
                confirmations.append((time.perf_counter(), sold))
            elif doc.get("motivo") in ("agotado", "limite_por_usuario"):
                return

    started = time.perf_counter()
    await asyncio.gather(*(buyer(b) for b in buyers))
    elapsed = time.perf_counter() - started
    availability = await inventory.availability(evento)
    return StadiumRow(
        target,
        capacity,
        per_request,
        requests,
        availability.vendidas,
        elapsed,
        rate_around(confirmations, capacity * 0.01, started),
        rate_around(confirmations, capacity * 0.95, started),
        max(0, availability.vendidas + availability.retenidas - capacity),
        await ledger_violations(ledger, outcomes),
    )


def stadium_table(rows: list[StadiumRow]) -> str:
    return markdown_table(StadiumRow.HEADERS, [r.cells() for r in rows])


async def ledger_violations(ledger: SimulatedPaymentGateway, outcomes: dict[str, str]) -> int:
    """The money invariant, checked in the processor's ledger: a confirmed reservation has exactly one capture,
    and no other reservation has a capture or an authorization still open."""
    bad = 0
    for reserva_id, estado in outcomes.items():
        ops = await ledger.payments_for(reserva_id)
        captures = sum(1 for op in ops if op["tipo"] == "capture")
        open_auth = any(op["tipo"] == "authorize" and op.get("estado") in ("authorized", "captured") for op in ops)
        if estado == "confirmada":
            bad += captures != 1
        else:
            bad += captures != 0 or open_auth
    if bad:
        print(f"  {bad} reservations break the money invariant", file=sys.stderr)
    return bad


async def run_scenario(
    session: aiohttp.ClientSession,
    name: str,
    target: str,
    base_url: str,
    buyers: list[Cuenta],
    events: list[str],
    per_buyer: int,
    capacity_each: int,
    inventory: JetStreamInventoryStore,
    ledger: SimulatedPaymentGateway,
    processes: dict[str, int] | None = None,
    asientos: list[str] | None = None,
) -> Row:
    """Every buyer reserves `per_buyer` times, one ticket each, on a random event (and, for a seated event given
    its `asientos`, a seat picked at random: taken seats are part of the load)."""
    latencies: list[float] = []
    counts = {"confirmed": 0, "rejected": 0, "errors": 0}
    motivos: Counter[str] = Counter()
    odd: Counter[str] = Counter()
    outcomes: dict[str, str] = {}

    async def buyer(cuenta: Cuenta) -> None:
        for _ in range(per_buyer):
            body = {"usuario_id": cuenta.id, "evento_id": random.choice(events), "cantidad": 1, "pago": CARD}
            if asientos:
                body["asientos"] = [random.choice(asientos)]
            headers = {"Idempotency-Key": uuid.uuid4().hex, **cuenta.headers}
            started = time.perf_counter()
            try:
                async with session.post(f"{base_url}/api/reservar", json=body, headers=headers) as resp:
                    doc = await resp.json(content_type=None)
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError) as err:
                counts["errors"] += 1
                odd[type(err).__name__] += 1
                continue
            latencies.append((time.perf_counter() - started) * 1000)
            if isinstance(doc, dict) and doc.get("id"):
                outcomes[str(doc["id"])] = str(doc.get("estado"))
            if status == 201 and doc.get("estado") == "confirmada":
                counts["confirmed"] += 1
            elif status in (201, 409):
                counts["rejected"] += 1
                motivos[str(doc.get("motivo") or doc.get("title"))] += 1
            else:
                counts["errors"] += 1
                odd[f"{status} {doc.get('estado') or doc.get('title')}: {doc.get('detail', '')}"] += 1

    processes = processes or {}
    before = {pid: proc_usage(pid)[0] for pid in processes.values()}
    started = time.perf_counter()
    await asyncio.gather(*(buyer(b) for b in buyers))
    elapsed = time.perf_counter() - started
    usage = usage_line(list(processes), list(processes.values()), before, counts["confirmed"])
    sold = 0
    oversold = 0
    for evento in events:
        availability = await inventory.availability(evento)
        sold += availability.vendidas
        oversold += max(0, availability.vendidas + availability.retenidas - capacity_each)
    if odd:
        print(f"  {name} via {target}: unexpected answers {dict(odd)}", file=sys.stderr)
    if sold != counts["confirmed"]:
        counts["errors"] += abs(sold - counts["confirmed"])  # a confirmation the client never saw
    counts["errors"] += await ledger_violations(ledger, outcomes)
    return Row(
        name,
        target,
        len(buyers) * per_buyer,
        **counts,
        elapsed_s=elapsed,
        latencies_ms=latencies,
        oversold=oversold,
        motivos=motivos,
        usage=usage,
    )


@dataclass
class ReadRow:
    read: str
    authorization: str
    requests: int
    elapsed_s: float
    latencies_ms: list[float]
    errors: int

    HEADERS = ("read (1 worker per service)", "Authorization", "requests", "rps", "p50 ms", "p99 ms", "errors")

    def cells(self) -> list[str]:
        lat = sorted(self.latencies_ms)
        p50 = lat[len(lat) // 2] if lat else 0.0
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else 0.0
        rate = self.requests / self.elapsed_s if self.elapsed_s else 0.0
        return [
            self.read,
            self.authorization,
            str(self.requests),
            f"{rate:.0f}",
            f"{p50:.1f}",
            f"{p99:.1f}",
            str(self.errors),
        ]


async def read_load(
    read: str, authorization: str, request_for: Callable[[int], tuple[str, dict[str, str]]], seconds: float, conns: int
) -> ReadRow:
    """`conns` connections, each GETting one request after another for `seconds`; anything but 200 is an error."""
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=conns)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        deadline = time.perf_counter() + seconds

        async def worker(k: int) -> None:
            nonlocal errors
            i = k
            while time.perf_counter() < deadline:
                url, headers = request_for(i)
                i += conns
                started = time.perf_counter()
                async with session.get(url, headers=headers) as resp:
                    await resp.read()
                    ok = resp.status == 200
                latencies.append((time.perf_counter() - started) * 1000)
                errors += not ok

        started = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(conns)))
        elapsed = time.perf_counter() - started
    return ReadRow(read, authorization, len(latencies), elapsed, latencies, errors)


async def verify_cost_us(session: aiohttp.ClientSession, users_url: str, token: str, n: int = 2_000) -> float:
    """One ES256 verification (eventflow.auth.TokenVerifier with its cache off), in µs, with the issuer's
    published keys: what a bearer-protected request pays on a token's first use (later ones hit the cache)."""
    async with session.get(f"{users_url}/.well-known/jwks.json") as resp:
        jwks = await resp.json()
    defaults = Settings.model_fields
    issuer = TrustedIssuer(defaults["auth_issuer"].default, defaults["auth_audience"].default, StaticKeys(jwks))
    verifier = TokenVerifier([issuer], cache_size=0)  # every call a real ES256 check, as on a token's first use
    await verifier.verify(token)
    started = time.perf_counter()
    for _ in range(n):
        await verifier.verify(token)
    return (time.perf_counter() - started) / n * 1e6


async def run_reads(
    session: aiohttp.ClientSession,
    urls: dict[str, str],
    organizer: Cuenta,
    buyers: list[Cuenta],
    seconds: float,
    conns: int = 32,
) -> tuple[list[ReadRow], float]:
    """A public read with and without a token (alternated, twice), a read that verifies the token, and the
    public event and listing reads again through the gateway when it runs."""
    evento = await make_event(session, urls["events"], organizer, 10_000)
    readers = buyers[:conns]
    reservas = []
    for cuenta in readers:
        body = {"evento_id": evento, "cantidad": 1, "pago": CARD}
        doc = await post(session, f"{urls['reservations']}/api/reservar", body, cuenta.headers)
        reservas.append(str(doc["id"]))
    event_url = f"{urls['events']}/api/eventos/{evento}"
    rows: list[ReadRow] = []
    for _ in range(2):
        rows.append(await read_load("GET /api/eventos/{id}", "none", lambda i: (event_url, {}), seconds, conns))
        rows.append(
            await read_load(
                "GET /api/eventos/{id}",
                "a buyer's token (public: not verified)",
                lambda i: (event_url, readers[i % len(readers)].headers),
                seconds,
                conns,
            )
        )

    def own_reservation(i: int) -> tuple[str, dict[str, str]]:
        k = i % len(readers)
        return f"{urls['reservations']}/api/reservas/{reservas[k]}", readers[k].headers

    for _ in range(2):
        rows.append(
            await read_load("GET /api/reservas/{id}", "its buyer's token (verified)", own_reservation, seconds, conns)
        )
    listing = "/api/eventos?limit=20"
    rows.append(await read_load(f"GET {listing}", "none", lambda i: (urls["events"] + listing, {}), seconds, conns))
    if "gateway" in urls:
        via_gateway = f"{urls['gateway']}/api/eventos/{evento}"
        rows.append(
            await read_load("GET /api/eventos/{id} via gateway", "none", lambda i: (via_gateway, {}), seconds, conns)
        )
        rows.append(
            await read_load(
                f"GET {listing} via gateway", "none", lambda i: (urls["gateway"] + listing, {}), seconds, conns
            )
        )
    return rows, await verify_cost_us(session, urls["users"], readers[0].token)


@dataclass
class Checks:
    """What every scenario checks after its load, and whose CPU it counts."""

    inventory: JetStreamInventoryStore
    ledger: SimulatedPaymentGateway
    processes: dict[str, int]


async def run_sales(
    session: aiohttp.ClientSession,
    events_url: str,
    target: str,
    base: str,
    organizer: Cuenta,
    buyers: list[Cuenta],
    args: argparse.Namespace,
    world: Checks,
) -> list[Row]:
    """The closed-loop scenarios through one target: one hot event, many events, one seated event. Each has
    capacity for 80 % of the demand, so 20 % must be refused and none oversold."""
    total = args.buyers * args.per_buyer
    checks = (world.inventory, world.ledger, world.processes)
    warm = await make_event(session, events_url, organizer, 10_000)
    await run_scenario(session, "warm-up", target, base, buyers[:50], [warm], 1, 10_000, world.inventory, world.ledger)
    hot_capacity = int(total * 0.8)
    hot = await make_event(session, events_url, organizer, hot_capacity)
    rows = [
        await run_scenario(session, "1 hot event", target, base, buyers, [hot], args.per_buyer, hot_capacity, *checks)
    ]
    per_event = max(1, int(total * 0.8 / args.events))
    many = [await make_event(session, events_url, organizer, per_event) for _ in range(args.events)]
    rows.append(
        await run_scenario(
            session, f"{args.events} events", target, base, buyers, many, args.per_buyer, per_event, *checks
        )
    )
    # Seated: every request names one seat picked at random, so some ask for a seat already taken.
    seated = await make_event(
        session, events_url, organizer, hot_capacity, secciones=[{"nombre": "Platea", "asientos": hot_capacity}]
    )
    seats = [f"Platea-{n}" for n in range(1, hot_capacity + 1)]
    rows.append(
        await run_scenario(
            session, "1 seated event", target, base, buyers, [seated], args.per_buyer, hot_capacity, *checks, seats
        )
    )
    return rows


@dataclass
class Results:
    rows: list[Row]
    stadium: list[StadiumRow]
    reads: list[ReadRow]
    verify_us: float | None


async def bench(args: argparse.Namespace) -> Results:
    with_gateway = (ROOT / "services" / "gateway" / "main.py").exists() and not args.direct_only
    with tempfile.TemporaryDirectory(prefix="eventflow-bench-") as tmp:
        services = Services(Path(tmp), args.latency, not args.no_limit_precheck, args.processor_nats)
        try:
            urls = services.start(with_gateway)
            connector = aiohttp.TCPConnector(limit=0)
            timeout = aiohttp.ClientTimeout(total=60)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                for url in urls.values():
                    await wait_ready(session, url)
                nc = await connect(services.nats_url, "bench")
                inventory = await JetStreamInventoryStore.create(nc.jetstream(timeout=10))
                ledger_nc = await connect(services.ledger_url, "bench-ledger")
                ledger = SimulatedPaymentGateway(ledger_nc.jetstream(timeout=10))
                world = Checks(inventory, ledger, services.processes())
                buyers = await make_buyers(session, urls["users"], args.buyers)
                organizer = await make_organizer(session, urls["users"], services.admin_password)
                targets = {"direct": urls["reservations"]}
                if with_gateway:
                    targets["gateway"] = urls["gateway"]
                rows: list[Row] = []
                for target, base in targets.items():
                    await refresh(session, urls["users"], [organizer, *buyers])
                    rows += await run_sales(session, urls["events"], target, base, organizer, buyers, args, world)
                reads: list[ReadRow] = []
                verify_us = None
                if args.read_seconds > 0:
                    await refresh(session, urls["users"], [organizer, *buyers])
                    reads, verify_us = await run_reads(session, urls, organizer, buyers, args.read_seconds)
                stadium: list[StadiumRow] = []
                if args.stadium:
                    await refresh(session, urls["users"], [organizer, *buyers])
                    stadium.append(
                        await run_stadium(
                            session,
                            "direct",
                            urls["reservations"],
                            urls["events"],
                            organizer,
                            buyers,
                            args.stadium,
                            args.stadium_per_request,
                            inventory,
                            ledger,
                        )
                    )
                await nc.drain()
                await ledger_nc.drain()
                return Results(rows, stadium, reads, verify_us)
        finally:
            services.stop()


def read_table(rows: list[ReadRow]) -> str:
    return markdown_table(ReadRow.HEADERS, [r.cells() for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--buyers", type=int, default=200, help="concurrent buyers")
    parser.add_argument("--per-buyer", type=int, default=5, help="reservations each buyer makes, one after another")
    parser.add_argument("--events", type=int, default=100, help="events in the second scenario")
    parser.add_argument("--latency", type=float, default=0.0, help="payment simulator latency per call (s)")
    parser.add_argument("--direct-only", action="store_true", help="skip the gateway")
    parser.add_argument(
        "--no-limit-precheck",
        action="store_true",
        help="drop the chain's per-user limit read (the hold still enforces it)",
    )
    parser.add_argument(
        "--processor-nats", action="store_true", help="the payment simulator's ledger on its own nats-server"
    )
    parser.add_argument("--stadium", type=int, default=100_000, help="tickets of the sell-out scenario (0: skip)")
    parser.add_argument("--stadium-per-request", type=int, default=10, help="tickets per reservation in it")
    parser.add_argument("--read-seconds", type=float, default=5.0, help="length of each read measurement (0: skip)")
    args = parser.parse_args()
    precheck = "off" if args.no_limit_precheck else "on"
    results = asyncio.run(bench(args))
    print()
    print(
        f"Settings: nats-server single node, JetStream file store, sync_interval: always; redis AOF everysec; "
        f"1 uvicorn worker per service; {args.buyers} concurrent buyers x {args.per_buyer} reservations of 1 "
        f"ticket, each request with the buyer's bearer token; capacity = 80 % of demand; payment latency "
        f"{args.latency}s; chain limit pre-check {precheck}; "
        f"simulator ledger on {'its own' if args.processor_nats else 'the same'} nats-server; "
        f"load generator on the same "
        f"machine ({os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()})."
    )
    print()
    print(table(results.rows))
    print()
    print("CPU seconds per 1,000 confirmed sales and peak RSS, per process:")
    for row in results.rows:
        print(f"- {row.scenario} via {row.target}: {row.usage}")
    if results.reads:
        print()
        print(f"Cost of verification: one ES256 token verification in-process: {results.verify_us:.0f} µs.")
        print(
            f"Reads, 32 connections, {args.read_seconds:g} s each (public reads ignore a token; the other verifies it):"
        )
        print()
        print(read_table(results.reads))
        by_kind: dict[str, list[float]] = {}
        for r in results.reads:
            by_kind.setdefault(f"{r.read} / {r.authorization}", []).append(r.requests / r.elapsed_s)
        print()
        print("  medians: " + "; ".join(f"{k}: {statistics.median(v):.0f} rps" for k, v in by_kind.items()))
    if results.stadium:
        print()
        print(f"Sell-out: {args.buyers} buyers each buying {args.stadium_per_request} tickets until sold out.")
        print()
        print(stadium_table(results.stadium))


if __name__ == "__main__":
    main()
