"""`python -m eventflow.rebuild [service ...]`: drop the Redis read models and replay them from JetStream.

Safe while the services run: every runner (theirs and ours) commits each event together with its
checkpoint, WATCHed, so an event is applied once whoever gets there first; the services' runners notice
the wiped checkpoint and follow.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
import time
from dataclasses import dataclass

from redis.asyncio import Redis

from eventflow.config import Settings
from eventflow.jetstream import StreamSpec, connect
from eventflow.projections import Projection, ProjectionRunner
from eventflow.servers import url_listening
from eventflow.system import ROOT, system_env

SERVICES_WITH_READ_MODELS = ("users", "events", "reservations")
CONNECT_TIMEOUT_S = 10.0


@dataclass
class Rebuilt:
    projection: str
    stream: str
    events: int = 0
    removed: int = 0
    seconds: float = 0.0


def read_models(services: list[str]) -> list[tuple[StreamSpec, Projection]]:
    """Every (stream, projection) the named services declare, once per checkpoint."""
    found: dict[tuple[str, str], tuple[StreamSpec, Projection]] = {}
    for service in services:
        if not (ROOT / "services" / service / "bootstrap.py").exists():
            continue
        bootstrap = importlib.import_module(f"services.{service}.bootstrap")
        for stream, projection in bootstrap.read_models():
            found.setdefault((projection.name, stream.name), (stream, projection))
    return list(found.values())


async def rebuild(settings: Settings, pairs: list[tuple[StreamSpec, Projection]]) -> list[Rebuilt]:
    for url in (settings.nats_url, settings.redis_url):
        if not url_listening(url):
            raise SystemExit(f"nothing answers at {url}: is EventFlow running (make up)?")
    try:
        nc = await asyncio.wait_for(connect(settings.nats_url, "eventflow-rebuild"), CONNECT_TIMEOUT_S)
    except Exception as err:  # nats-py raises several kinds; a timeout too
        reason = type(err).__name__
        raise SystemExit(
            f"cannot reach NATS at {settings.nats_url} ({reason}): is EventFlow running (make up)?"
        ) from None
    redis = Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        await redis.ping()
        js = nc.jetstream(timeout=10.0)
        runners = [ProjectionRunner(js, redis, stream, projection) for stream, projection in pairs]
        results = [Rebuilt(r.projection.name, r.stream.name) for r in runners]
        # Reset everything first: projections fed by several streams share their keys.
        for runner, result in zip(runners, results, strict=True):
            result.removed = await runner.reset()
        for runner, result in zip(runners, results, strict=True):
            started = time.perf_counter()
            result.events = await runner.catch_up()
            result.seconds = time.perf_counter() - started
        return results
    finally:
        await redis.aclose()
        await nc.drain()


def table(results: list[Rebuilt]) -> str:
    rows = [f"{'projection':<24} {'stream':<12} {'events':>8} {'keys removed':>13} {'seconds':>8}"]
    rows += [f"{r.projection:<24} {r.stream:<12} {r.events:>8} {r.removed:>13} {r.seconds:>8.2f}" for r in results]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eventflow.rebuild", description=__doc__.splitlines()[0])
    parser.add_argument("services", nargs="*", metavar="service", help=", ".join(SERVICES_WITH_READ_MODELS))
    args = parser.parse_args(argv)
    unknown = set(args.services) - set(SERVICES_WITH_READ_MODELS)
    if unknown:
        parser.error(f"unknown service(s): {', '.join(sorted(unknown))}")
    pairs = read_models(args.services or list(SERVICES_WITH_READ_MODELS))
    if not pairs:
        print("no read models to rebuild")
        return 0
    for name, value in system_env().items():
        os.environ.setdefault(name, value)
    results = asyncio.run(rebuild(Settings(), pairs))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
