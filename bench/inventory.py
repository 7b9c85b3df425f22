"""`python -m bench.inventory`: the inventory store alone, on stadium-size events at 1 % and at 95 % sold.

Starts its own nats-server (JetStream file store, `sync_interval: always`) on a free port, creates a
100,000-ticket general-admission event and a 20,000-seat seated event (20 sections x 1,000) per row, sells the
first part quickly (big holds of many tickets, confirmed and settled), then has concurrent buyers each do the
saga's inventory steps, hold -> confirm -> settle of one ticket, one reservation after another. What it shows:
the cost of a reservation does not grow with the tickets already sold, and the stored document stays the same
size. Also times the pure domain on a 100,000-seat venue (the old seat search scanned every seat per hold).

`inventory_rows(nats_url)` returns the rows for another benchmark (bench/reservations.py) to print.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from nats.js import JetStreamContext

from bench.tables import markdown_table
from eventflow.contracts import EVENTO_CREADO
from eventflow.eventstore import EventStore, NewEvent
from eventflow.jetstream import EVENTOS, connect, ensure_stream
from eventflow.servers import free_port, start_nats
from services.reservations.inventory import (
    Confirmed,
    ConfirmOp,
    Held,
    HoldRequest,
    Inventory,
    InventoryOp,
    SettleOp,
    apply_batch,
)
from services.reservations.inventory_store import JetStreamInventoryStore

GA = ("100,000 GA", 100_000, None)
SEATED = ("20,000 seated", 20_000, {f"S{k:02}": 1_000 for k in range(20)})
SCENARIOS: tuple[tuple[str, int, Mapping[str, int] | None], ...] = (GA, SEATED)


@dataclass
class Row:
    scenario: str
    sold_pct: int
    limit: int | None
    buyers: int
    reservations: int
    elapsed_s: float
    latencies_ms: list[float]
    document_bytes: int
    oversold: int  # sold beyond capacity, or sold that no buyer was told about: must be 0

    def cells(self) -> list[str]:
        lat = sorted(self.latencies_ms)
        p50 = lat[len(lat) // 2] if lat else 0.0
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else 0.0
        rate = self.reservations / self.elapsed_s if self.elapsed_s else 0.0
        return [
            self.scenario,
            f"{self.sold_pct} %",
            "none" if self.limit is None else str(self.limit),
            str(self.buyers),
            str(self.reservations),
            f"{rate:,.0f}",
            f"{p50:.1f}",
            f"{p99:.1f}",
            f"{self.document_bytes:,}",
            str(self.oversold),
        ]


HEADERS = ["scenario", "% sold", "per-user limit", "buyers", "reservations", "reservations/s", "p50 ms", "p99 ms"]
HEADERS += ["document bytes", "oversold"]


async def create_event(js: JetStreamContext, aforo: int, secciones: Mapping[str, int] | None) -> str:
    evento_id = str(uuid.uuid4())
    data = {
        "nombre": "Bench",
        "descripcion": "",
        "fecha": "2031-01-01T21:00:00+00:00",
        "lugar": "Estadio",
        "aforo_total": aforo,
        "precio_centimos": 3000,
        "categoria": "musica",
        "secciones": None if secciones is None else [{"nombre": n, "asientos": s} for n, s in secciones.items()],
        "venta_desde": None,
    }
    await EventStore(js, EVENTOS).append(evento_id, [NewEvent(EVENTO_CREADO, data)], expected_version=0)
    return evento_id


async def sell(store: JetStreamInventoryStore, evento_id: str, usuario: str, n: int, limit: int | None) -> bool:
    """The saga's inventory steps for one reservation; False if it could not be held."""
    rid = str(uuid.uuid4())
    if not isinstance(await store.hold(HoldRequest(rid, evento_id, usuario, n, (), 600.0, limit)), Held):
        return False
    if not isinstance(await store.confirm(evento_id, rid), Confirmed):
        raise AssertionError(f"a live hold was not confirmed: {rid}")
    await store.settle(evento_id, rid)
    return True


async def prefill(store: JetStreamInventoryStore, evento_id: str, tickets: int, chunk: int) -> None:
    sizes = [chunk] * (tickets // chunk) + ([tickets % chunk] if tickets % chunk else [])
    done = await asyncio.gather(*(sell(store, evento_id, f"prefill-{k}", n, None) for k, n in enumerate(sizes)))
    assert all(done), "the pre-fill must fit"


async def run_row(
    store: JetStreamInventoryStore,
    js: JetStreamContext,
    scenario: tuple[str, int, Mapping[str, int] | None],
    sold_pct: int,
    buyers: int,
    per_buyer: int,
    limit: int | None,
) -> Row:
    name, capacity, secciones = scenario
    evento_id = await create_event(js, capacity, secciones)
    before = capacity * sold_pct // 100
    await prefill(store, evento_id, before, 500 if secciones else 2_000)
    latencies: list[float] = []

    async def buyer(k: int) -> None:
        for _ in range(per_buyer):
            started = time.perf_counter()
            if await sell(store, evento_id, f"buyer-{k}", 1, limit):
                latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(buyer(k) for k in range(buyers)))
    elapsed = time.perf_counter() - started
    vendidas = (await store.availability(evento_id)).vendidas
    oversold = max(0, vendidas - capacity) + abs(vendidas - before - len(latencies))
    size = await store.document_size(evento_id)
    return Row(name, sold_pct, limit, buyers, len(latencies), elapsed, latencies, size, oversold)


async def inventory_rows(
    nats_url: str, *, buyers: int = 200, per_buyer: int = 5, limits: tuple[int | None, ...] = (None, 8)
) -> list[Row]:
    """Every scenario at 1 % and 95 % sold, with and without a per-user limit, on the given nats-server."""
    nc = await connect(nats_url, "bench-inventory")
    try:
        js = nc.jetstream(timeout=30)
        await ensure_stream(js, EVENTOS)
        store = await JetStreamInventoryStore.create(js)
        await run_row(store, js, GA, 1, 50, 2, None)  # warm-up: connections, buckets, code paths
        rows = []
        for limit in limits:
            for scenario in SCENARIOS:
                for pct in (1, 95):
                    rows.append(await run_row(store, js, scenario, pct, buyers, per_buyer, limit))
        await store.drain()
        return rows
    finally:
        await nc.drain()


def sales(rids: list[str], n: int) -> list[InventoryOp]:
    """Holds of `n` tickets (seats assigned), then their confirms, then their settles."""
    ops: list[InventoryOp] = [HoldRequest(r, "ev", "u", n, (), 600, None) for r in rids]
    return ops + [ConfirmOp("ev", r) for r in rids] + [SettleOp("ev", r) for r in rids]


def domain_rows(seats: int = 100_000, batch: int = 256) -> list[list[str]]:
    """CPU of one group commit on a seated venue, no I/O: `batch` quantity-only holds of 4, their confirms and
    settles, and the document's serialization, at 1 % and 95 % sold. The v1 inventory took 3.95 s for 256 holds
    on a 90 %-sold venue (its seat search looped over every seat in Python)."""
    out = []
    for pct in (1, 95):
        inv = Inventory(seats, {f"S{k:03}": 1_000 for k in range(seats // 1_000)})
        inv, _ = apply_batch(inv, sales([f"pre{k}" for k in range(seats * pct // 100 // 1_000)], 1_000), 0.0)
        rids = [f"r{k}" for k in range(batch)]
        steps = sales(rids, 4)
        holds, confirms, settles = steps[:batch], steps[batch : 2 * batch], steps[2 * batch :]
        timings = []
        for step in (holds, confirms, settles):
            best = float("inf")
            for _ in range(5):  # from the same state each time (apply_batch copies): the best of 5
                started = time.perf_counter()
                after, _ = apply_batch(inv, step, 1.0)
                document = after.to_json()
                best = min(best, (time.perf_counter() - started) * 1000)
            inv = after
            timings.append(best)
        out.append([f"{seats:,} seats", f"{pct} %", *(f"{t:.1f}" for t in timings), f"{len(document):,}"])
    return out


DOMAIN_HEADERS = ["venue", "% sold", "256 holds ms", "256 confirms ms", "256 settles ms", "document bytes"]


async def bench(args: argparse.Namespace) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="eventflow-bench-inventory-") as tmp:
        nats = start_nats(free_port(), Path(tmp) / "nats", Path(tmp) / "nats.log")
        try:
            return await inventory_rows(nats.url, buyers=args.buyers, per_buyer=args.per_buyer)
        finally:
            nats.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--buyers", type=int, default=200, help="concurrent buyers")
    parser.add_argument("--per-buyer", type=int, default=5, help="reservations each buyer makes, one after another")
    args = parser.parse_args()
    rows = asyncio.run(bench(args))
    print()
    print(
        f"Settings: nats-server single node, JetStream file store, sync_interval: always; one store (one "
        f"connection); {args.buyers} concurrent buyers x {args.per_buyer} reservations of 1 ticket, each "
        f"hold -> confirm -> settle; per-user limit 8 = a quota key per (event, user) in CUPOS, taken before each "
        f"hold; load generator in the same process ({os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()})."
    )
    print()
    print(markdown_table(HEADERS, [r.cells() for r in rows]))
    print()
    print("The domain alone, one group commit of 256 ops (CPU, no I/O):")
    print()
    print(markdown_table(DOMAIN_HEADERS, domain_rows()))


if __name__ == "__main__":
    main()
