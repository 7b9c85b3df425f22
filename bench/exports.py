"""`python -m bench.exports [--users 10000 100000]`: the anonymized users export at scale (rows/s, peak RSS).

Starts its own nats-server and redis-server on free ports and the real users app (its lifespan: data keys,
generations, the EVENTOS reader). It seeds the read model the way the projections write it: each user has a
document with fields sealed under their own data key, the wrapped key in USER_KEYS and in the Redis cache, and
0-3 purchases over 50 events. It does not go through registration, which would measure argon2, not the export.
Then it runs the export code the route runs (Exportador + serializar, chunks thrown away, no HTTP buffering)
in each format. It reports rows/s and the process's peak RSS during the export alone (VmHWM reset through
/proc/self/clear_refs), with the RSS before the export as the baseline.
Not in `make bench`: seeding 100,000 users takes minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import random
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from fastapi import FastAPI

from eventflow.config import Settings
from eventflow.contracts import EVENTO_CREADO
from eventflow.eventstore import EventStore, NewEvent
from eventflow.jetstream import EVENTOS, ensure_stream
from eventflow.servers import free_port, start_nats, start_redis
from services.users import exportacion
from services.users import projections as keys
from services.users.bootstrap import create_app
from services.users.privacy import CACHE_TTL_S, cache_key, seal
from tests.utils.app import api_client

EVENTS = 50
BATCH = 1_000
DOMAINS = ["gmail.com", "hotmail.com", "yahoo.com", "outlook.com", "empresa.com.ar"]


@dataclass
class Row:
    users: int
    formato: str
    k: int
    rows: int
    suppressed: int
    seconds: float
    megabytes: float
    baseline_rss_mb: float
    peak_rss_mb: float


def _status_kb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1])
    return 0.0


def _reset_peak() -> None:
    with contextlib.suppress(OSError):  # not Linux, or not allowed: the peak then includes the seeding
        Path("/proc/self/clear_refs").write_text("5")


async def _seed(app: FastAPI, n: int, eventos: list[str]) -> None:
    redis, data_keys = app.state.redis, app.state.deps.data_keys
    start = datetime(2025, 1, 1, tzinfo=UTC)
    rng = random.Random(n)
    for first in range(0, n, BATCH):
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(first, min(first + BATCH, n)):
                usuario_id = str(uuid.uuid4())
                dek, wrapped = data_keys.ring.new_data_key()
                dominio = rng.choice(DOMAINS) if rng.random() < 0.97 else f"raro{i}.example"
                personal = {"nombre": "N", "apellido": "A", "email": f"u{i}@{dominio}", "nro_documento": str(i)}
                registrado = start + timedelta(days=rng.randrange(700))
                doc = {
                    "id": usuario_id,
                    "tipo_documento": rng.choice(("DNI", "DNI", "Pasaporte")),
                    "cifrado": seal(dek, usuario_id, personal),
                    "registrado_en": registrado.isoformat(),
                }
                pipe.set(keys.doc_key(usuario_id), orjson.dumps(doc))
                pipe.set(cache_key(usuario_id), wrapped, ex=CACHE_TTL_S)
                for _ in range(rng.randrange(4)):
                    reserva_id = str(uuid.uuid4())
                    compra = {
                        "reserva_id": reserva_id,
                        "evento_id": rng.choice(eventos),
                        "cantidad": 2,
                        "asientos": [],
                        "importe": 30.0,
                        "fecha": registrado.isoformat(),
                        "estado": rng.choice(("confirmada", "cancelada")),
                    }
                    pipe.hset(keys.historial_key(usuario_id), reserva_id, orjson.dumps(compra))
            await pipe.execute()


async def _measure(app: FastAPI, users: int, formato: exportacion.Formato, k: int) -> Row:
    exportador = exportacion.Exportador(app.state.redis, app.state.deps.data_keys, app.state.info_evento)
    baseline = _status_kb("VmRSS") / 1024
    _reset_peak()
    began = time.perf_counter()
    plan = await exportador.planificar(k)
    written, counter = 0, [0]
    async for chunk in exportacion.serializar(exportador.registros(plan), formato, plan.resumen(), counter):
        written += len(chunk)
    seconds = time.perf_counter() - began
    return Row(
        users,
        formato.value,
        k,
        counter[0],
        plan.suprimidas,
        seconds,
        written / 1e6,
        baseline,
        _status_kb("VmHWM") / 1024,
    )


async def run(sizes: list[int], root: Path) -> list[Row]:
    nats = start_nats(free_port(), root / "nats", root / "nats.log")
    redis = start_redis(free_port(), root / "redis", root / "redis.log")
    rows: list[Row] = []
    try:
        key = lambda: base64.b64encode(os.urandom(32)).decode()  # noqa: E731
        settings = Settings(
            nats_url=nats.url,
            redis_url=redis.url,
            master_key=key(),
            pseudonym_key=key(),
            service_key=key(),
            password_hash_profile="test",
        )
        app = create_app(settings)
        async with api_client(app):
            js = app.state.deps.store.js
            await ensure_stream(js, EVENTOS)
            eventos = []
            for e in range(EVENTS):
                evento_id = str(uuid.uuid4())
                data = {
                    "nombre": f"E{e}",
                    "descripcion": "",
                    "fecha": f"2026-{e % 12 + 1:02}-10T20:00:00+00:00",
                    "lugar": "X",
                    "aforo_total": 100,
                    "precio_centimos": 1500,
                    "categoria": ("musica", "teatro", "deporte")[e % 3],
                    "secciones": None,
                    "venta_desde": None,
                }
                await EventStore(js, EVENTOS).append(evento_id, [NewEvent(EVENTO_CREADO, data)], 0)
                eventos.append(evento_id)
            seeded = 0
            for size in sorted(sizes):
                await _seed(app, size - seeded, eventos)
                seeded = size
                for formato in (exportacion.Formato.NDJSON, exportacion.Formato.CSV):
                    rows.append(await _measure(app, size, formato, 5))
    finally:
        redis.stop()
        nats.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[10_000, 100_000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-exports-") as tmp:
        rows = asyncio.run(run(args.users, Path(tmp)))
    print("| users | format | k | rows | suppressed | s | rows/s | MB out | RSS before MB | peak RSS MB |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r.users:,} | {r.formato} | {r.k} | {r.rows:,} | {r.suppressed:,} | {r.seconds:.1f} | "
            f"{r.rows / r.seconds:,.0f} | {r.megabytes:.1f} | {r.baseline_rss_mb:.0f} | {r.peak_rss_mb:.0f} |"
        )


if __name__ == "__main__":
    main()
