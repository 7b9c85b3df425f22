"""`python -m bench.profile`: where a sale's CPU and durable writes go, per process, for profiling sessions.

Same system as bench.reservations (own nats-server with `sync_interval: always`, redis, one worker per service).
Runs one closed-loop scenario (one hot event, or `--events N`; direct or through the gateway) or a read load of
GET /api/eventos/{id}, and prints, per process, CPU seconds per 1,000 sales (or requests), and per JetStream
stream the messages stored per confirmed sale (each one is one fsync'd write). These two figures move much less
than throughput on a shared, noisy machine. With `--py-spy DIR` each service process is recorded by py-spy during
the measured window (raw collapsed stacks, or flamegraphs with `--svg`), for the tables in docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp

from bench.reservations import (
    Services,
    make_buyers,
    make_event,
    make_organizer,
    proc_usage,
    read_load,
    refresh,
    run_scenario,
    wait_ready,
)
from eventflow.jetstream import connect
from services.reservations.inventory_store import JetStreamInventoryStore
from services.reservations.payments_sim import SimulatedPaymentGateway


async def stream_seqs(js: object) -> dict[str, int]:
    """Last sequence per stream: the difference over a window is the messages stored (= fsyncs) in it."""
    seqs: dict[str, int] = {}
    for info in await js.streams_info():  # type: ignore[attr-defined]
        seqs[info.config.name] = int(info.state.last_seq)
    return seqs


def spy(pid: int, out: Path, seconds: float, rate: int, svg: bool) -> subprocess.Popen[bytes]:
    """py-spy on one process: a flamegraph SVG, or the raw collapsed stacks (for tables of top frames)."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    fmt = ["-o", f"{out}.svg"] if svg else ["--format", "raw", "-o", f"{out}.txt"]
    argv = [py_spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", str(rate)]
    return subprocess.Popen([*argv, "--nonblocking", *fmt], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="eventflow-profile-") as tmp:
        services = Services(Path(tmp), 0.0, True, False)
        try:
            urls = services.start(with_gateway=True)
            names = ["users", "events", "reservations", "gateway"]
            pids = dict(zip(names, (p.pid for p in services.procs), strict=True))
            pids["nats"] = services.servers[0].proc.pid
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as s:
                for url in urls.values():
                    await wait_ready(s, url)
                nc = await connect(services.nats_url, "bench-profile")
                js = nc.jetstream(timeout=10)
                inventory = await JetStreamInventoryStore.create(js)
                ledger = SimulatedPaymentGateway(js)
                organizer = await make_organizer(s, urls["users"], services.admin_password)
                base = urls["gateway"] if args.via == "gateway" else urls["reservations"]
                if args.mode == "sales":
                    buyers = await make_buyers(s, urls["users"], args.buyers)
                    await refresh(s, urls["users"], [organizer, *buyers])
                    warm = await make_event(s, urls["events"], organizer, 10_000)
                    await run_scenario(s, "warm-up", args.via, base, buyers[:50], [warm], 1, 10_000, inventory, ledger)
                else:
                    evento = await make_event(s, urls["events"], organizer, 1000)
                    target = urls["gateway"] if args.via == "gateway" else urls["events"]
                    url = f"{target}/api/eventos/{evento}"
                    await read_load("warm", "none", lambda i: (url, {}), 2, args.conns)
                pids["load generator"] = os.getpid()
                cpu0 = {n: proc_usage(p)[0] for n, p in pids.items()}
                seq0 = await stream_seqs(js)
                spies: list[subprocess.Popen[bytes]] = []
                if args.py_spy:
                    out = Path(args.py_spy)
                    out.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before the load
                    for n in ("reservations", "gateway", "events", "users"):
                        name = out / f"{args.mode}-{args.via}-{n}"
                        spies.append(spy(pids[n], name, args.spy_seconds, args.rate, args.svg))
                started = time.perf_counter()
                if args.mode == "sales":
                    capacity = max(1, int(args.buyers * args.per_buyer * 0.8) // args.events)
                    eventos = [await make_event(s, urls["events"], organizer, capacity) for _ in range(args.events)]
                    scenario = f"{args.events} events"
                    row = await run_scenario(
                        s, scenario, args.via, base, buyers, eventos, args.per_buyer, capacity, inventory, ledger
                    )
                    done, unit = row.confirmed, "sales"
                    print(
                        f"confirmed {row.confirmed} rejected {row.rejected} errors {row.errors} "
                        f"oversold {row.oversold} in {row.elapsed_s:.1f}s: {row.confirmed / row.elapsed_s:.0f}/s"
                    )
                else:
                    rrow = await read_load(
                        "GET /api/eventos/{id}", "none", lambda i: (url, {}), args.seconds, args.conns
                    )
                    lat = sorted(rrow.latencies_ms)
                    done, unit = rrow.requests, "requests"
                    print(
                        f"{rrow.requests} requests, {rrow.requests / rrow.elapsed_s:.0f} rps, "
                        f"p50 {lat[len(lat) // 2]:.1f} ms p99 {lat[int(len(lat) * 0.99)]:.1f} ms, "
                        f"errors {rrow.errors}"
                    )
                elapsed = time.perf_counter() - started
                cpu1 = {n: proc_usage(p)[0] for n, p in pids.items()}
                seq1 = await stream_seqs(js)
                for proc in spies:
                    proc.wait()
                print(f"window {elapsed:.1f}s; load average {os.getloadavg()}")
                print(f"CPU seconds per 1,000 {unit}:")
                for n in pids:
                    used = cpu1[n] - cpu0[n]
                    print(
                        f"  {n:15s} {used / done * 1000 if done else 0:7.2f}  ({used / elapsed * 100:.0f} % of a core)"
                    )
                writes = Counter({k: seq1.get(k, 0) - seq0.get(k, 0) for k in seq1})
                total = sum(writes.values())
                print(f"JetStream messages stored per confirmed sale ({total} in the window):")
                for k, v in writes.most_common():
                    if v:
                        print(f"  {k:24s} {v / max(1, done):6.2f}")
                print(f"  {'total':24s} {total / max(1, done):6.2f}")
                async with s.get(f"{urls['reservations']}/metrics") as resp:
                    metrics = await resp.text()
                print("reservations /metrics (sums and counts of step and request durations):")
                for line in metrics.splitlines():
                    if re.match(r"eventflow_(saga_step_duration|http_request_duration)_seconds_(sum|count)", line):
                        print("  " + line)
                await nc.drain()
        finally:
            services.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=("sales", "reads"), default="sales")
    parser.add_argument("--via", choices=("direct", "gateway"), default="direct")
    parser.add_argument("--buyers", type=int, default=200)
    parser.add_argument("--per-buyer", type=int, default=5)
    parser.add_argument("--events", type=int, default=1, help="events the buyers spread over (1: one hot event)")
    parser.add_argument("--seconds", type=float, default=10.0, help="read load length")
    parser.add_argument("--conns", type=int, default=64, help="read load connections")
    parser.add_argument("--py-spy", default="", help="directory for py-spy flamegraphs and raw stacks")
    parser.add_argument("--spy-seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--svg", action="store_true", help="py-spy writes flamegraphs instead of raw stacks")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
