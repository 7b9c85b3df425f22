"""What every service gets from eventflow.runtime, eventflow.web and eventflow.projections when a dependency
fails: a hung Redis fails fast, readiness answers (and only for what is required), projections come back by
themselves after NATS returns. Each test runs its own servers: it stops, pauses or kills them."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from eventflow.eventstore import EventStore, NewEvent
from eventflow.jetstream import StreamSpec, connect, ensure_stream, wait_for_jetstream
from eventflow.projections import ProjectionRunner
from eventflow.runtime import redis_client
from eventflow.servers import ServerProcess, free_port, start_nats, start_redis
from eventflow.web import any_of, create_app
from tests.core.counting import Counter
from tests.utils.app import api_client

pytestmark = pytest.mark.slow
GUARD_S = 30.0  # only there so a regression fails instead of hanging the run


async def test_a_hung_redis_fails_fast_instead_of_hanging_the_request(tmp_path: Path) -> None:
    server = start_redis(free_port(), tmp_path / "redis", tmp_path / "redis.log")
    client = redis_client(server.url)
    try:
        await client.set("clave", "valor")
        server.pause()  # SIGSTOP: the socket stays open, nothing answers
        with pytest.raises(RedisTimeoutError):
            await asyncio.wait_for(client.get("clave"), GUARD_S)
        server.resume()
        assert await client.get("clave") == "valor", "the client recovers once Redis answers again"
        server.kill()
        with pytest.raises(RedisConnectionError):
            await asyncio.wait_for(client.get("clave"), GUARD_S)
        server.start_again()
        assert await client.get("clave") == "valor", "a restarted Redis (AOF) is used again without a new client"
    finally:
        await client.aclose()
        server.resume()
        server.stop()


@asynccontextmanager
async def app_with(checks: dict, required: tuple[str, ...] | None = None) -> AsyncIterator[httpx.AsyncClient]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield

    async with api_client(create_app("EventFlow readiness", lifespan, checks, required=required)) as client:
        yield client


async def ok() -> None:
    return None


async def hangs() -> None:
    await asyncio.Event().wait()


async def refuses() -> None:
    raise ConnectionError("refused")


async def test_readiness_answers_when_a_dependency_hangs_and_liveness_asks_nothing() -> None:
    async with app_with({"redis": hangs, "nats": ok}) as client:
        ready = await asyncio.wait_for(client.get("/health/ready"), GUARD_S)
        assert ready.status_code == 503
        assert ready.headers["content-type"] == "application/problem+json"
        assert ready.json()["checks"] == {"redis": "failing: no answer", "nats": "ok"}
        assert (await client.get("/health/live")).status_code == 200


async def test_only_what_a_service_cannot_work_without_decides_its_readiness() -> None:
    async with app_with({"nats": ok, "redis": refuses}, required=("nats",)) as client:
        ready = await client.get("/health/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"status": "degraded", "checks": {"nats": "ok", "redis": "failing: ConnectionError"}}
    async with app_with({"nats": refuses, "redis": ok}, required=("nats",)) as client:
        assert (await client.get("/health/ready")).status_code == 503


async def test_ready_while_any_upstream_answers() -> None:
    """The gateway's shape: ready while at least one upstream is; each upstream still reported."""
    upstreams = {"users": refuses, "events": hangs, "reservations": ok}
    checks = {"upstreams": any_of(upstreams), **upstreams}
    async with app_with(checks, required=("upstreams",)) as client:
        ready = await client.get("/health/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "degraded"
    none_answers = {"users": refuses, "events": hangs}
    async with app_with({"upstreams": any_of(none_answers)}, required=("upstreams",)) as client:
        assert (await client.get("/health/ready")).status_code == 503


async def test_a_projection_resubscribes_as_soon_as_nats_is_back(tmp_path: Path, redis) -> None:
    """After a NATS restart the ordered consumer is gone from the server; the runner must not wait for nats-py's
    missed heartbeats (~15 s) to notice: it resubscribes from its checkpoint on the reconnect."""
    nats = start_nats(free_port(), tmp_path / "nats", tmp_path / "nats.log")
    nc = await connect(nats.url, "faults")
    js = nc.jetstream(timeout=5)
    stream = StreamSpec(f"F{uuid.uuid4().hex[:8].upper()}", f"f{uuid.uuid4().hex[:8]}")
    await ensure_stream(js, stream)
    projection = Counter(f"c{uuid.uuid4().hex[:6]}")
    runner = ProjectionRunner(js, redis, stream, projection, direct_after_s=None)  # the subscription alone
    runner.start()
    store = EventStore(js, stream)
    try:
        first = await store.append("a0", [NewEvent("Contado", {"n": 1})], None)
        assert await runner.wait_for(first, GUARD_S)
        nats.stop()
        nats.start_again()
        await wait_for_jetstream(js, GUARD_S)
        second = await store.append("a0", [NewEvent("Contado", {"n": 2})], None)
        stored = time.monotonic()
        assert await runner.wait_for(second, GUARD_S)
        print(f"applied {time.monotonic() - stored:.2f} s after it was stored")
        assert runner.resubscribed_after_reconnect >= 1
        assert await redis.llen(f"{projection.name}:order") == 2, "nothing applied twice or skipped"
    finally:
        await runner.stop()
        await nc.close()
        nats.stop()


async def test_a_reservation_read_during_a_nats_stall_is_a_bounded_503_not_a_500(tmp_path: Path) -> None:
    """A leader change (here: a stalled server) times `get_msg` out: retried within a bound, then Unavailable
    (503 + Retry-After), instead of the TimeoutError that made GET /api/reservas and POST /api/reservar a 500."""
    from eventflow.errors import Unavailable
    from services.reservations.saga_store import READ_RETRY_FOR_S, ReservationArchive

    nats = start_nats(free_port(), tmp_path / "nats", tmp_path / "nats.log")
    nc = await connect(nats.url, "faults-archive")
    js = nc.jetstream(timeout=1)
    stream = StreamSpec(f"R{uuid.uuid4().hex[:8].upper()}", f"r{uuid.uuid4().hex[:8]}")
    await ensure_stream(js, stream)
    archive = ReservationArchive(EventStore(js, stream))
    try:
        assert await archive.get("r1") is None
        nats.pause()
        started = time.monotonic()
        with pytest.raises(Unavailable) as refused:
            await asyncio.wait_for(archive.get("r1"), GUARD_S)
        print(f"refused after {time.monotonic() - started:.1f} s (bound {READ_RETRY_FOR_S:g} s)")
        assert refused.value.status == 503 and int(refused.value.headers["Retry-After"]) >= 1
        nats.resume()
        assert await archive.get("r1") is None, "answers again once NATS does"
    finally:
        nats.resume()
        await nc.close()
        nats.stop()


async def test_a_projection_whose_consumer_vanished_without_a_disconnect_resubscribes(tmp_path: Path, redis) -> None:
    """A cluster node holding the ordered consumer restarts while the client stays connected to another node:
    no reconnect to notice. Here the consumer is deleted on the server; the runner must notice the silence."""
    nats = start_nats(free_port(), tmp_path / "nats", tmp_path / "nats.log")
    nc = await connect(nats.url, "faults-silence")
    js = nc.jetstream(timeout=5)
    stream = StreamSpec(f"S{uuid.uuid4().hex[:8].upper()}", f"s{uuid.uuid4().hex[:8]}")
    await ensure_stream(js, stream)
    projection = Counter(f"c{uuid.uuid4().hex[:6]}")
    runner = ProjectionRunner(js, redis, stream, projection, direct_after_s=None)  # the subscription alone
    runner.start()
    store = EventStore(js, stream)
    try:
        assert await runner.wait_for(await store.append("a0", [NewEvent("Contado", {"n": 1})], None), GUARD_S)
        for consumer in await js.consumers_info(stream.name):
            await js.delete_consumer(stream.name, consumer.name)
        second = await store.append("a0", [NewEvent("Contado", {"n": 2})], None)
        assert await runner.wait_for(second, GUARD_S), "applied after the silence was noticed"
        assert runner.resubscribed_after_silence >= 1 and runner.resubscribed_after_reconnect == 0
        assert await redis.llen(f"{projection.name}:order") == 2, "nothing applied twice or skipped"
    finally:
        await runner.stop()
        await nc.close()
        nats.stop()


NO_CONSUMERS = """
authorization {
  users = [
    {user: "escritor", password: "escritor-clave"}
    {user: "lector", password: "lector-clave", permissions: {
      publish: {deny: ["$JS.API.CONSUMER.CREATE", "$JS.API.CONSUMER.CREATE.>", "$JS.API.CONSUMER.DURABLE.CREATE.>"]}}}
  ]
}
"""


async def test_read_your_writes_does_not_wait_for_a_consumer_nats_cannot_create(tmp_path: Path, redis) -> None:
    """Right after a cluster node is killed, a new ordered consumer needs a JetStream meta leader, and electing one
    took longer than the read-your-writes bound (issue 11: POST 201, then its GET 404), while the stream's replicas
    still answered direct gets. Here the runner may not create consumers at all, as while there is no meta leader:
    a waiter must still be served, from the log read by sequence, each event once and in order."""
    nats = start_nats(free_port(), tmp_path / "nats", tmp_path / "nats.log", extra_config=NO_CONSUMERS)
    writer = await connect(nats.url.replace("nats://", "nats://escritor:escritor-clave@"), "faults-writer")
    reader = await connect(nats.url.replace("nats://", "nats://lector:lector-clave@"), "faults-reader")
    stream = StreamSpec(f"D{uuid.uuid4().hex[:8].upper()}", f"d{uuid.uuid4().hex[:8]}")
    await ensure_stream(writer.jetstream(timeout=5), stream)
    projection = Counter(f"c{uuid.uuid4().hex[:6]}")
    runner = ProjectionRunner(reader.jetstream(timeout=5), redis, stream, projection)
    runner.start()
    store = EventStore(writer.jetstream(timeout=5), stream)
    try:
        for n in range(3):
            seq = await store.append(f"a{n % 2}", [NewEvent("Contado", {"n": n})], None)
            assert await runner.wait_for(seq, GUARD_S), f"event {seq} applied without a consumer"
        assert runner.read_directly == 3, "each read by sequence"
        assert not await writer.jetstream(timeout=5).consumers_info(stream.name), "no consumer was ever created"
        assert await redis.lrange(f"{projection.name}:order", 0, -1) == ["1", "2", "3"], "once each, in order"
        assert await redis.hgetall(f"{projection.name}:counts") == {"a0": "2", "a1": "1"}
    finally:
        await runner.stop()
        await reader.close()
        await writer.close()
        nats.stop()


# A process whose main thread has exited (pthread_exit) while another runs: the leader stays a zombie (Z) in
# /proc/<pid>/task, so SIGSTOP never shows every thread stopped (T).
ZOMBIE_LEADER = (
    "import ctypes, threading, time\n"
    "threading.Thread(target=lambda: [time.sleep(0.05) for _ in iter(int, 1)]).start()\n"
    "ctypes.CDLL(None).pthread_exit(None)\n"
)


def test_pause_raises_when_not_every_thread_stopped(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", ZOMBIE_LEADER])
    server = ServerProcess("redis", free_port(), proc, tmp_path, tmp_path / "log")
    try:
        leader = Path(f"/proc/{proc.pid}/task/{proc.pid}/stat")
        deadline = time.monotonic() + 30
        while leader.read_text().rsplit(")", 1)[1].split()[0] != "Z":  # until its main thread has exited
            assert time.monotonic() < deadline and proc.poll() is None, "the main thread did not exit"
            time.sleep(0.01)
        with pytest.raises(TimeoutError, match="not every thread stopped"):
            server.pause(timeout=0.5)
    finally:
        server.kill()
