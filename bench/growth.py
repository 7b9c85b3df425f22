"""`python -m bench.growth`: read latency at 1k, 10k and 100k events and users, to see whether it stays flat.

Same system as bench.reservations (its `Services`: own nats-server with `sync_interval: always`, redis, the
services as real processes, one worker each). The data is seeded through the write path's own code, not into
Redis: EventoCreado events built by the events service's rules (`nuevo_evento`, `evento_creado`) and
UsuarioRegistrado events sealed with a fresh data key as the users service builds them (its data key in
USER_KEYS, its account in CUENTAS), appended with EventStore, many in flight; the services' own projections
build the read models, and the seeding waits for their checkpoints to reach the head of each stream. What is
left out: the uniqueness claims and the password hash of each user (no read looks at them; one hash is shared).

Sizes grow in one system (1k, then 9k more, then 90k more). At each size a fixed number of GETs with aiohttp,
64 connections, direct to the service: an event by random id, the listing, the listing with `q=` (one word,
then two: an intersection of two index sets) and with `categoria=`, a user by random id as the admin (twice:
the first read of a user fetches its data key from NATS, the second finds it cached in Redis) and
`/api/usuarios/me`. Prints p50/p99/p99.9 and req/s per size with the load average (the machine is shared: the
shape against size is the point), writes var/bench/growth.json and docs/img/perf-growth.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import aiohttp
from nats.js import JetStreamContext
from redis.asyncio import Redis

from bench.reservations import ADMIN_EMAIL, ROOT, Cuenta, Services, make_buyers, refresh, sign_in, wait_ready
from eventflow import contracts
from eventflow.config import Settings
from eventflow.crypto import Pseudonymizer
from eventflow.eventstore import EventStore, NewEvent
from eventflow.generations import checkpoint_key
from eventflow.jetstream import EVENTOS, USUARIOS, StreamSpec, connect, ensure_bucket
from eventflow.keys import key_ring
from eventflow.runtime import redis_client
from services.events.domain import CrearEvento
from services.events.handlers import evento_creado
from services.events.projections import CatalogProjection, OrganizerProjection
from services.events.rules import nuevo_evento
from services.users.contrasenas import Hasher
from services.users.cuentas import BUCKET as CUENTAS_BUCKET
from services.users.cuentas import Cuentas
from services.users.documentos import TipoDocumento
from services.users.domain import RegistrarUsuario, Usuario, nuevo_id, validar
from services.users.handlers import _pseudonyms, registered_event
from services.users.privacy import KEYS_BUCKET, DataKeys, seal
from services.users.projections import UsuariosProjection

GENEROS = ("rock", "jazz", "tango", "folklore", "cumbia", "opera", "blues", "pop", "reggae", "salsa")
CIUDADES = ("rosario", "cordoba", "mendoza", "salta", "neuquen", "tucuman", "parana", "jujuy", "posadas", "ushuaia")
CATEGORIAS = ("musica", "teatro", "deporte", "cine", "danza", "humor", "infantil", "conferencias")
PASSWORD = "frase de siembra bastante larga"
IN_FLIGHT = 200
SIZES = (1_000, 10_000, 100_000)


def comando(i: int) -> CrearEvento:
    """Event i of the seed: a genre and a city in its name (what `q=` finds), one of 8 categories."""
    return CrearEvento(
        nombre=f"{GENEROS[i % len(GENEROS)]} en {CIUDADES[i // len(GENEROS) % len(CIUDADES)]} {i}",
        fecha=(datetime(2031, 1, 1, 21, tzinfo=UTC) + timedelta(minutes=i)).isoformat(),
        lugar="Estadio",
        precio=Decimal("25.50"),
        categoria=CATEGORIAS[i % len(CATEGORIAS)],
        descripcion="crecimiento",
        aforo_total=1_000,
    )


async def pool(items: Iterable[int], work: Callable[[int], Awaitable[str]], in_flight: int) -> list[str]:
    """`work` on every item with `in_flight` running at once; results in the items' order."""
    todo = list(enumerate(items))
    results: list[str] = [""] * len(todo)
    queue: Iterator[tuple[int, int]] = iter(todo)

    async def worker() -> None:
        for k, item in queue:
            results[k] = await work(item)

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return results


async def seed_events(
    eventos: EventStore, first: int, n: int, organizadores: list[str], in_flight: int = IN_FLIGHT
) -> list[str]:
    """Events first..first+n-1, judged by the rules and appended as `crear_evento` does (expected version 0)."""
    now = datetime.now(UTC)

    async def one(i: int) -> str:
        evento = nuevo_evento(comando(i), str(uuid.uuid4()), now, organizadores[i % len(organizadores)])
        data = evento_creado(evento)
        await eventos.append(evento.id, [NewEvent(contracts.EVENTO_CREADO, dict(data))], expected_version=0)
        return evento.id

    return await pool(range(first, first + n), one, in_flight)


@dataclass(frozen=True)
class UserWrites:
    """Where a registration writes what a read needs: the log, the data key, the account."""

    store: EventStore
    data_keys: DataKeys
    cuentas: Cuentas
    pseudonyms: Pseudonymizer
    password_hash: str

    @classmethod
    async def open(cls, js: JetStreamContext, redis: Redis, settings: Settings) -> UserWrites:
        keys_kv = await ensure_bucket(js, KEYS_BUCKET, settings.replicas)
        cuentas_kv = await ensure_bucket(js, CUENTAS_BUCKET, settings.replicas)
        password_hash = await Hasher(settings.password_hash_profile).hash(PASSWORD)  # one hash for every seed user
        return cls(
            EventStore(js, USUARIOS),
            DataKeys(keys_kv, redis, key_ring(settings)),
            Cuentas(cuentas_kv),
            Pseudonymizer(settings.pseudonym_key_bytes),
            password_hash,
        )


def registro(i: int) -> RegistrarUsuario:
    tag = "".join(chr(ord("a") + int(d)) for d in f"{i:07d}")  # names need letters
    return RegistrarUsuario(
        tipo_documento=TipoDocumento.PASAPORTE,
        nro_documento=f"G{i:07d}",
        nombre=f"Nombre {tag}",
        apellido=f"Apellido {tag}",
        email=f"crecimiento.{i}@ejemplo.com",
        password=PASSWORD,
    )


async def seed_users(writes: UserWrites, first: int, n: int, in_flight: int = IN_FLIGHT) -> list[str]:
    """Users first..first+n-1 as services/users/handlers.py `_registrar` and `_store` write them, minus the
    uniqueness claims and the per-user password hash: data key, account, then the sealed event."""

    async def one(i: int) -> str:
        cmd = validar(registro(i))
        usuario = Usuario(
            nuevo_id(),
            cmd.tipo_documento,
            cmd.nro_documento,
            cmd.nombre,
            cmd.apellido,
            cmd.email,
            registrado_en=datetime.now(UTC).isoformat(),
        )
        event = registered_event(usuario, None, _pseudonyms(usuario, writes.pseudonyms))
        dek = await writes.data_keys.create(usuario.id)
        await writes.cuentas.crear(usuario.id, writes.password_hash)
        sealed = {**event.data, "cifrado": seal(dek, usuario.id, usuario.personal_data())}
        await writes.store.append(usuario.id, [NewEvent(event.type, sealed, event.id)], expected_version=0)
        return usuario.id

    return await pool(range(first, first + n), one, in_flight)


# The read models the measured reads use, by the services' own projection names (generation 0: a fresh system).
PROJECTED: tuple[tuple[StreamSpec, str], ...] = (
    (EVENTOS, CatalogProjection.name),
    (EVENTOS, OrganizerProjection.name),
    (USUARIOS, UsuariosProjection.name),
)


async def wait_projected(
    js: JetStreamContext, redis: Redis, timeout: float = 900.0, poll_s: float = 0.2
) -> dict[str, int]:
    """Until every checkpoint in PROJECTED has reached the head its stream had when called; returns the heads."""
    heads = {spec.name: int((await js.stream_info(spec.name)).state.last_seq) for spec in {s for s, _ in PROJECTED}}
    keys = [checkpoint_key(name, spec.name, 0) for spec, name in PROJECTED]
    deadline = time.monotonic() + timeout
    while True:
        positions = [int(v or 0) for v in await redis.mget(keys)]
        if all(pos >= heads[spec.name] for pos, (spec, _) in zip(positions, PROJECTED, strict=True)):
            return heads
        if time.monotonic() > deadline:
            raise TimeoutError(f"projections at {dict(zip(keys, positions, strict=True))}, heads {heads}")
        await asyncio.sleep(poll_s)  # polling a condition another process moves; no event to wait on here


@dataclass
class Reading:
    size: int
    read: str
    requests: int
    elapsed_s: float
    errors: dict[str, int]  # status (or exception) -> count
    latencies_ms: list[float] = field(repr=False)
    alone_ms: float = 0.0  # p50 of its first 50 requests again, one at a time (1 connection): no queueing
    redis_us: float = 0.0  # Redis's own time (INFO commandstats) per request of the loaded run: is it the server?

    def pct(self, q: float) -> float:
        lat = sorted(self.latencies_ms)
        return lat[min(len(lat) - 1, int(len(lat) * q))] if lat else 0.0

    HEADERS = (
        "size",
        "read (direct, 1 worker)",
        "requests",
        "req/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "alone p50 ms",
        "redis us/req",
        "errors",
    )

    def cells(self) -> list[str]:
        rate = self.requests / self.elapsed_s if self.elapsed_s else 0.0
        return [
            f"{self.size:,}",
            self.read,
            str(self.requests),
            f"{rate:.0f}",
            f"{self.pct(0.50):.1f}",
            f"{self.pct(0.99):.1f}",
            f"{self.pct(0.999):.1f}",
            f"{self.alone_ms:.1f}",
            f"{self.redis_us:.0f}",
            " ".join(f"{k}:{v}" for k, v in sorted(self.errors.items())) or "0",
        ]


Request = Callable[[int], tuple[str, dict[str, str]]]


async def measure(size: int, read: str, request_for: Request, requests: int, conns: int) -> Reading:
    """Exactly `requests` GETs over `conns` connections; anything but 200 counts as an error."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    counter = iter(range(requests))
    connector = aiohttp.TCPConnector(limit=conns)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def worker() -> None:
            for i in counter:
                url, headers = request_for(i)
                started = time.perf_counter()
                try:
                    async with session.get(url, headers=headers) as resp:
                        await resp.read()
                        status = str(resp.status)
                except (aiohttp.ClientError, TimeoutError) as err:
                    status = type(err).__name__
                latencies.append((time.perf_counter() - started) * 1000)
                if status != "200":
                    errors[status] += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(conns)))
        elapsed = time.perf_counter() - started
    return Reading(size, read, requests, elapsed, dict(errors), latencies)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


async def reads_at(
    redis: Redis,
    size: int,
    urls: dict[str, str],
    eventos: list[str],
    usuarios: list[str],
    admin: str,
    buyers: list[Cuenta],
    requests: int,
    conns: int,
    only: list[str],
) -> list[Reading]:
    events_url, users_url = urls["events"], urls["users"]
    admin_headers = {"Authorization": f"Bearer {admin}"}
    rng = random.Random(size)
    event_ids = [rng.choice(eventos) for _ in range(requests)]
    user_ids = [rng.choice(usuarios) for _ in range(requests)] if usuarios else []
    listing = f"{events_url}/api/eventos?limit=20"
    reads: list[tuple[str, Request]] = [
        ("GET /api/eventos/{id}, random id", lambda i: (f"{events_url}/api/eventos/{event_ids[i]}", {})),
        ("GET /api/eventos?limit=20", lambda i: (listing, {})),
        ("  &q=rock (1 word)", lambda i: (f"{listing}&q=rock", {})),
        ("  &q=rock rosario (2 words)", lambda i: (f"{listing}&q=rock%20rosario", {})),
        ("  &categoria=musica", lambda i: (f"{listing}&categoria=musica", {})),
    ]
    if usuarios:
        reads += [
            (
                "GET /api/usuarios/{id} (admin), random id",
                lambda i: (f"{users_url}/api/usuarios/{user_ids[i]}", admin_headers),
            ),
            ("  the same ids again", lambda i: (f"{users_url}/api/usuarios/{user_ids[i]}", admin_headers)),
            ("GET /api/usuarios/me", lambda i: (f"{users_url}/api/usuarios/me", buyers[i % len(buyers)].headers)),
        ]
    # Warm the connections and each worker's code paths on reads that leave no state behind (not the user reads).
    for _, request_for in reads[:5] + reads[-1:]:
        await measure(size, "warm-up", request_for, min(conns * 4, requests), conns)
    reads = [(name, request_for) for name, request_for in reads if not only or any(o in name for o in only)]
    out = []
    for name, request_for in reads:
        await redis.config_resetstat()
        reading = await measure(size, name, request_for, requests, conns)
        stats = await redis.info("commandstats")
        # The page script's own calls (z*, del) are inside its evalsha time already: not counted twice.
        outer = [v for name, v in stats.items() if not name.startswith(("cmdstat_z", "cmdstat_del"))]
        reading.redis_us = sum(float(v["usec"]) for v in outer) / requests
        reading.alone_ms = (await measure(size, name, request_for, 50, 1)).pct(0.5)
        print("  " + " | ".join(reading.cells()), flush=True)
        out.append(reading)
    return out


@dataclass
class Results:
    readings: list[Reading]
    seeding: list[str]
    load: list[str]


async def bench(args: argparse.Namespace) -> Results:
    results = Results([], [], [])
    with tempfile.TemporaryDirectory(prefix="eventflow-growth-") as tmp:
        services = Services(Path(tmp), 0.0, True, False)
        try:
            urls = services.start(with_gateway=False)
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
                for url in urls.values():
                    await wait_ready(session, url)
                buyers = await make_buyers(session, urls["users"], args.buyers)
                settings = Settings(
                    nats_url=services.system["EVENTFLOW_NATS_URL"],
                    redis_url=services.system["EVENTFLOW_REDIS_URL"],
                    master_key=services.system["EVENTFLOW_MASTER_KEY"],
                    pseudonym_key=services.system["EVENTFLOW_PSEUDONYM_KEY"],
                )
                nc = await connect(settings.nats_url, "bench-growth")
                js = nc.jetstream(timeout=10)
                redis = redis_client(settings.redis_url)
                writes = await UserWrites.open(js, redis, settings)
                eventos_store = EventStore(js, EVENTOS)
                organizadores = [str(uuid.uuid4()) for _ in range(50)]
                eventos: list[str] = []
                usuarios: list[str] = []
                try:
                    for size in sorted(args.sizes):
                        started = time.perf_counter()
                        # Separate streams and buckets fsync in parallel (measured-here.md): both at once.
                        nuevos_eventos, nuevos_usuarios = await asyncio.gather(
                            seed_events(eventos_store, len(eventos), size - len(eventos), organizadores),
                            seed_users(writes, len(usuarios), size - len(usuarios) if args.users else 0),
                        )
                        eventos += nuevos_eventos
                        usuarios += nuevos_usuarios
                        appended = time.perf_counter() - started
                        await wait_projected(js, redis)
                        line = (
                            f"{size:,} events and users: appended in {appended:.1f} s, "
                            f"projected {time.perf_counter() - started:.1f} s after the first append"
                        )
                        print(line, flush=True)
                        results.seeding.append(line)
                        await refresh(session, urls["users"], buyers)
                        admin = (await sign_in(session, urls["users"], ADMIN_EMAIL, services.admin_password))[
                            "access_token"
                        ]
                        before = uptime()
                        results.readings += await reads_at(
                            redis, size, urls, eventos, usuarios, admin, buyers, args.requests, args.conns, args.reads
                        )
                        results.load.append(f"{size:,}: before {before}; after {uptime()}")
                finally:
                    await redis.aclose()
                    await nc.drain()
        finally:
            services.stop()
    return results


def table(readings: list[Reading]) -> str:
    rows = [list(Reading.HEADERS), *(r.cells() for r in readings)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(Reading.HEADERS))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def plot(readings: list[Reading], path: Path) -> None:
    """p50 and p99 of each read against the size, log x: a flat line is what the issue asks for."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[Reading]] = {}
    for r in readings:
        series.setdefault(r.read.strip(), []).append(r)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8), sharex=True)
    for ax, (q, label) in zip(axes, ((0.50, "p50"), (0.99, "p99"), (0.999, "p99.9")), strict=True):
        for name, group in series.items():
            ax.plot([r.size for r in group], [r.pct(q) for r in group], "o-", label=name)
        ax.set_xscale("log")
        ax.set_xlabel("events and users in the system (log)")
        ax.set_ylabel(f"{label} latency, ms")
        ax.set_title(f"{label}, 64 connections, direct")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7)
    fig.suptitle("EventFlow reads as the data grows")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="events and users (cumulative)")
    parser.add_argument("--requests", type=int, default=4_000, help="GETs per read and size")
    parser.add_argument("--conns", type=int, default=64, help="connections")
    parser.add_argument("--buyers", type=int, default=64, help="signed-in buyers reading /api/usuarios/me")
    parser.add_argument("--reads", nargs="+", default=[], help="only the reads whose name contains one of these")
    parser.add_argument(
        "--no-users", dest="users", action="store_false", help="seed events only (and skip the user reads)"
    )
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "img" / "perf-growth.png")
    args = parser.parse_args()
    print(f"load before: {uptime()}", flush=True)
    results = asyncio.run(bench(args))
    print()
    print(
        f"Growth: {args.requests} GETs per read and size, {args.conns} connections, direct to the service "
        f"(1 uvicorn worker each); nats-server sync_interval: always; load generator on the same "
        f"{os.cpu_count()} cores."
    )
    for line in results.seeding:
        print(f"  seeded {line}")
    print()
    print(table(results.readings))
    print()
    print("Load average (uptime) around each size's reads:")
    for line in results.load:
        print(f"  {line}")
    raw = ROOT / "var" / "bench" / "growth.json"
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(json.dumps({"readings": [asdict(r) for r in results.readings], "load": results.load}))
    plot(results.readings, args.plot)
    print(f"wrote {args.plot} and {raw}")


if __name__ == "__main__":
    main()
