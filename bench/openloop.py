"""`python -m bench.openloop`: reservation latency at a fixed arrival rate (open loop), up to saturation.

A closed loop of N buyers measures only N / throughput (Little's law). Here requests are *sent on a schedule*,
request i at t0 + i / rate whatever the earlier answers, and each latency is measured from that intended send
time, so a stalled server shows as queueing delay instead of as fewer requests (no coordinated omission).
For each scenario (one hot event, 100 events) and each offered rate it prints p50/p99/p99.9, what was
confirmed, rejected by reason, and oversold (must be 0); it writes the raw figures to var/bench/openloop.json
and the plots (throughput against offered rate, latency CDF per scenario) to docs/img/perf-*.png.
Same system as bench.reservations: own nats-server (sync_interval: always), redis, one worker per service.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp

from bench.reservations import (
    CARD,
    ROOT,
    Cuenta,
    Services,
    make_buyers,
    make_event,
    make_organizer,
    proc_usage,
    refresh,
    usage_line,
    wait_ready,
)
from bench.tables import markdown_table
from eventflow.jetstream import connect
from services.reservations.inventory_store import JetStreamInventoryStore


@dataclass
class Step:
    scenario: str
    via: str
    offered_per_s: float
    sent: int
    send_span_s: float
    confirmed: int
    elapsed_s: float
    latencies_ms: list[float] = field(repr=False)
    rejected: dict[str, int]
    errors: dict[str, int]
    oversold: int
    usage: str = ""  # CPU seconds per 1,000 sales and peak RSS of each process (usage_line)

    def pct(self, q: float) -> float:
        lat = sorted(self.latencies_ms)
        return lat[min(len(lat) - 1, int(len(lat) * q))] if lat else 0.0

    HEADERS = ("scenario", "via", "offered/s", "sent/s", "confirmed/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms")
    MORE = ("rejected", "errors", "oversold")

    def cells(self) -> list[str]:
        return [
            self.scenario,
            self.via,
            f"{self.offered_per_s:.0f}",
            f"{self.sent / self.send_span_s:.0f}" if self.send_span_s else "-",
            f"{self.confirmed / self.elapsed_s:.0f}" if self.elapsed_s else "-",
            f"{self.pct(0.50):.0f}",
            f"{self.pct(0.99):.0f}",
            f"{self.pct(0.999):.0f}",
            f"{max(self.latencies_ms, default=0):.0f}",
            " ".join(f"{k}:{v}" for k, v in self.rejected.items()) or "0",
            " ".join(f"{k}:{v}" for k, v in self.errors.items()) or "0",
            str(self.oversold),
        ]


async def open_loop(
    session: aiohttp.ClientSession,
    base_url: str,
    buyers: list[Cuenta],
    events: list[str],
    rate: float,
    seconds: float,
) -> tuple[int, float, int, float, list[float], Counter[str], Counter[str]]:
    """Sends request i at t0 + i/rate; latency = answer time - intended send time."""
    n = max(1, int(rate * seconds))
    latencies: list[float] = []
    rejected: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    confirmed = 0

    async def one(i: int, intended: float) -> None:
        nonlocal confirmed
        cuenta = buyers[i % len(buyers)]
        body = {"evento_id": random.choice(events), "cantidad": 1, "pago": CARD}
        headers = {"Idempotency-Key": uuid.uuid4().hex, **cuenta.headers}
        try:
            async with session.post(f"{base_url}/api/reservar", json=body, headers=headers) as resp:
                doc = await resp.json(content_type=None)
                code = resp.status
        except (aiohttp.ClientError, TimeoutError) as err:
            errors[type(err).__name__] += 1
            return
        latencies.append((time.perf_counter() - intended) * 1000)
        if code == 201 and doc.get("estado") == "confirmada":
            confirmed += 1
        elif code in (201, 409, 429):
            reason = doc.get("motivo") or doc.get("type") or doc.get("estado") or code
            rejected[str(reason).rsplit("/", 1)[-1]] += 1
        else:
            errors[f"{code}"] += 1

    tasks: list[asyncio.Task[None]] = []
    t0 = time.perf_counter() + 0.05
    for i in range(n):
        intended = t0 + i / rate
        delay = intended - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)  # pacing the schedule, not waiting for answers
        tasks.append(asyncio.create_task(one(i, intended)))
    send_span = time.perf_counter() - t0
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t0
    return n, send_span, confirmed, elapsed, latencies, rejected, errors


async def bench(args: argparse.Namespace) -> list[Step]:
    steps: list[Step] = []
    with tempfile.TemporaryDirectory(prefix="eventflow-openloop-") as tmp:
        services = Services(Path(tmp), 0.0, True, False, rate_limit_per_s=args.rate_limit)
        try:
            urls = services.start(not args.direct_only)
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as s:
                for url in urls.values():
                    await wait_ready(s, url)
                nc = await connect(services.nats_url, "bench-openloop")
                inventory = await JetStreamInventoryStore.create(nc.jetstream(timeout=10))
                buyers = await make_buyers(s, urls["users"], args.buyers)
                organizer = await make_organizer(s, urls["users"], services.admin_password)
                targets = {"direct": urls["reservations"]}
                if "gateway" in urls:
                    targets["gateway"] = urls["gateway"]
                limits = {"limite_por_usuario": 1000, "max_por_solicitud": 10}
                for via, base in targets.items():
                    for scenario, n_events in (("1 hot event", 1), (f"{args.events} events", args.events)):
                        for rate in args.rates:
                            await refresh(s, urls["users"], [organizer, *buyers])
                            capacity = int(rate * args.seconds) + 10  # room for every request: latency, not sold-out
                            per = capacity // n_events * 3 + 10  # random spread: no event sells out either
                            events = [
                                await make_event(s, urls["events"], organizer, per, **limits) for _ in range(n_events)
                            ]
                            pids = [proc.pid for proc in services.procs]
                            before = {pid: proc_usage(pid)[0] for pid in pids}
                            n, span, ok, elapsed, lat, rej, err = await open_loop(
                                s, base, buyers, events, rate, args.seconds
                            )
                            oversold = 0
                            for evento in events:
                                a = await inventory.availability(evento)
                                oversold += max(0, a.vendidas + a.retenidas - per)
                            step = Step(scenario, via, rate, n, span, ok, elapsed, lat, dict(rej), dict(err), oversold)
                            print("  " + " | ".join(step.cells()), flush=True)
                            step.usage = usage_line(list(urls), pids, before, ok)
                            print("    " + step.usage, flush=True)
                            steps.append(step)
                await nc.drain()
        finally:
            services.stop()
    return steps


def table(steps: list[Step]) -> str:
    return markdown_table([*Step.HEADERS, *Step.MORE], [s.cells() for s in steps])


def plot(steps: list[Step], out: Path) -> list[Path]:
    """Throughput against offered rate, and the latency CDF of each scenario at each rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    series: dict[str, list[Step]] = {}
    for step in steps:
        series.setdefault(f"{step.scenario} ({step.via})", []).append(step)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    top = max(s.offered_per_s for s in steps)
    ax.plot([0, top], [0, top], ":", color="grey", label="offered = confirmed")
    for name, group in series.items():
        ax.plot([s.offered_per_s for s in group], [s.confirmed / s.elapsed_s for s in group], "o-", label=name)
    ax.set_xlabel("offered reservations/s (open loop)")
    ax.set_ylabel("confirmed/s")
    ax.set_title("EventFlow reservations: throughput vs offered rate")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    paths = [out / "perf-throughput.png"]
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)
    for name, group in series.items():
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for step in group:
            lat = sorted(step.latencies_ms)
            if lat:
                ax.plot(lat, [(i + 1) / len(lat) for i in range(len(lat))], label=f"{step.offered_per_s:.0f}/s")
        ax.set_xscale("log")
        ax.set_xlabel("latency from intended send time, ms (log)")
        ax.set_ylabel("fraction of requests")
        ax.set_title(f"Latency CDF: {name}")
        ax.legend(title="offered", fontsize=8)
        ax.grid(alpha=0.3, which="both")
        fig.tight_layout()
        slug = name.replace(" ", "-").replace("(", "").replace(")", "")
        paths.append(out / f"perf-cdf-{slug}.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rates", type=float, nargs="+", default=[100, 200, 400, 600, 800], help="offered/s")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each step")
    parser.add_argument("--buyers", type=int, default=100, help="signed-in buyers the requests rotate over")
    parser.add_argument("--events", type=int, default=100, help="events in the second scenario")
    parser.add_argument("--direct-only", action="store_true", help="skip the gateway")
    parser.add_argument(
        "--rate-limit", type=float, default=0, help="gateway limit on anonymous calls per address, per s (0: off)"
    )
    parser.add_argument("--plots", type=Path, default=ROOT / "docs" / "img", help="where the PNGs go")
    args = parser.parse_args()
    steps = asyncio.run(bench(args))
    print()
    print(
        f"Open loop: {args.seconds:g} s per step, latency from the intended send time; {args.buyers} signed-in "
        f"buyers; gateway limits: anonymous {args.rate_limit:g}/s per address (0 = off), 50/s per account; "
        "sync_interval: always."
    )
    print()
    print(table(steps))
    print()
    print("CPU and memory per process (CPU seconds per 1,000 confirmed sales in the step; peak RSS so far):")
    for step in steps:
        print(f"  {step.scenario} via {step.via} at {step.offered_per_s:.0f}/s: {step.usage}")
    raw = ROOT / "var" / "bench" / "openloop.json"
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(json.dumps([asdict(s) for s in steps]))
    for path in plot(steps, args.plots):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
