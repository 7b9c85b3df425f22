"""`python -m bench.ceiling`: the machine's durable-write ceiling, to set the reservation figures against.

JetStream publish + ack on a single node with `sync_interval: always` (every write fsync'd before its ack),
50 publishes in flight, on one stream and spread over four streams (separate streams fsync in parallel). A sale
costs a known number of such writes, so sales/s x writes per sale against this figure says how much of the
time durability explains. Run it right beside the reservation benchmark: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from eventflow.jetstream import connect
from eventflow.servers import free_port, start_nats


async def publish_rate(url: str, streams: int, messages: int, in_flight: int) -> float:
    nc = await connect(url, "bench-ceiling")
    js = nc.jetstream(timeout=30)
    tag = f"C{time.monotonic_ns()}"
    for i in range(streams):
        await js.add_stream(name=f"{tag}_{i}", subjects=[f"{tag.lower()}.{i}.>"])
    gate = asyncio.Semaphore(in_flight)
    payload = b"x" * 256  # about the size of a saga step or a domain event

    async def one(n: int) -> None:
        async with gate:
            await js.publish(f"{tag.lower()}.{n % streams}.w", payload)

    started = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(messages)))
    rate = messages / (time.perf_counter() - started)
    await nc.drain()
    return rate


async def ceiling(messages: int, in_flight: int, repeats: int) -> dict[int, list[float]]:
    with tempfile.TemporaryDirectory(prefix="eventflow-ceiling-") as tmp:
        nats = start_nats(free_port(), Path(tmp) / "nats", Path(tmp) / "nats.log")
        try:
            return {
                streams: [await publish_rate(nats.url, streams, messages, in_flight) for _ in range(repeats)]
                for streams in (1, 4)
            }
        finally:
            nats.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--in-flight", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rates = asyncio.run(ceiling(args.messages, args.in_flight, args.repeats))
    print(f"JetStream durable-write ceiling: publish + ack, sync_interval: always, {args.in_flight} in flight")
    print()
    print("| streams | best writes/s | median writes/s |")
    print("|---|---|---|")
    for streams, runs in rates.items():
        runs.sort()
        print(f"| {streams} | {runs[-1]:,.0f} | {runs[len(runs) // 2]:,.0f} |")


if __name__ == "__main__":
    main()
