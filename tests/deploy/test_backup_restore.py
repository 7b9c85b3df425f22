"""JetStream backup and restore as docs/operations.md tells it: stop the node, archive its store directory, and later
start a server on the restored directory. Every event and every KV value is back, appends go on where they left
off (the expected-version check and the duplicate window included), and a read model replays from it."""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any

import pytest

from eventflow.eventstore import ConcurrencyConflict, EventStore, NewEvent
from eventflow.jetstream import StreamSpec, connect, ensure_bucket, ensure_stream
from eventflow.projections import ProjectionRunner
from eventflow.servers import free_port, start_nats
from tests.deploy.tracing_helpers import NullProjection

SPEC = StreamSpec("BACKUPS", "backups")


def archive(store: Path, target: Path) -> None:
    with tarfile.open(target, "w:gz") as tar:
        tar.add(store, arcname=".")


def restore(source: Path, store: Path) -> None:
    store.mkdir(parents=True)
    with tarfile.open(source) as tar:
        tar.extractall(store, filter="data")


async def test_a_restored_store_has_every_event_and_value_and_goes_on(tmp_path: Path, redis: Any) -> None:
    original = tmp_path / "original"
    server = start_nats(free_port(), original / "jetstream", original / "nats.log")
    nc = await connect(server.url, "backup-test")
    js = nc.jetstream()
    await ensure_stream(js, SPEC)
    store = EventStore(js, SPEC)
    appended = [NewEvent("Creado", {"n": n}) for n in range(20)]
    for n, event in enumerate(appended):
        await store.append(f"agregado-{n % 4}", [event], expected_version=None)
    kv = await ensure_bucket(js, "RESPALDO")
    await kv.put("clave", b"valor")
    events_before = {a: (await store.load(a))[0] for a in (f"agregado-{n}" for n in range(4))}
    await nc.drain()
    server.stop()  # a stopped node: its files are consistent on disk
    backup = tmp_path / "nats-backup.tgz"
    archive(original / "jetstream", backup)

    restored = tmp_path / "restored"
    restore(backup, restored / "jetstream")
    server = start_nats(free_port(), restored / "jetstream", restored / "nats.log")
    nc = await connect(server.url, "restore-test")
    try:
        js = nc.jetstream()
        store = EventStore(js, SPEC)
        for aggregate, before in events_before.items():
            after, version = await store.load(aggregate)
            assert [e.id for e in after] == [e.id for e in before] and version == before[-1].seq
        assert (await (await js.key_value("RESPALDO")).get("clave")).value == b"valor"
        assert await store.last_sequence() == 20

        # It goes on: a stale writer is refused, a retried append is stored once, a new one lands at 21.
        with pytest.raises(ConcurrencyConflict):
            await store.append("agregado-0", [NewEvent("Tarde", {})], expected_version=1)
        assert await store.append("agregado-0", [appended[0]], expected_version=None) == 1  # same Nats-Msg-Id
        assert await store.append("agregado-9", [NewEvent("Nuevo", {})], expected_version=0) == 21

        # The read side is rebuilt from the restored log.
        projection = NullProjection("backup-restore")
        runner = ProjectionRunner(js, redis, SPEC, projection)
        await runner.reset()
        assert await runner.catch_up(timeout=30) == 21
        assert projection.applied == list(range(1, 22))
    finally:
        await nc.drain()
        server.stop()
