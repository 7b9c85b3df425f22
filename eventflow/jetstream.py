"""Connecting to NATS and declaring the streams and buckets a service owns (idempotently)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError
from nats.js.kv import KeyValue

log = logging.getLogger(__name__)

DUPLICATE_WINDOW_S = 120.0


@dataclass(frozen=True)
class StreamSpec:
    """A stream of domain events; subjects are `<prefix>.<aggregate_id>`."""

    name: str
    prefix: str

    def subject(self, aggregate_id: str) -> str:
        return f"{self.prefix}.{aggregate_id}"


USUARIOS = StreamSpec("USUARIOS", "usuarios")
EVENTOS = StreamSpec("EVENTOS", "eventos")
RESERVAS = StreamSpec("RESERVAS", "reservas")


async def connect(url: str, name: str) -> NATS:
    """Reconnects forever: a NATS leader election pauses writes for seconds, it is not a crash."""
    return await nats.connect(
        servers=url.split(","),
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=5,
        allow_reconnect=True,
    )


async def ensure_stream(js: JetStreamContext, spec: StreamSpec, replicas: int = 1) -> None:
    config = StreamConfig(
        name=spec.name,
        subjects=[f"{spec.prefix}.>"],
        storage=StorageType.FILE,
        num_replicas=replicas,
        duplicate_window=DUPLICATE_WINDOW_S,
        allow_direct=True,
        deny_delete=True,
        deny_purge=True,
    )
    try:
        await js.stream_info(spec.name)
    except NotFoundError:
        try:
            await js.add_stream(config)
        except BadRequestError:
            await js.stream_info(spec.name)  # another replica created it first


async def ensure_bucket(
    js: JetStreamContext, bucket: str, replicas: int = 1, history: int = 1, ttl_s: float | None = None
) -> KeyValue:
    """`ttl_s`: every value expires that long after it was written (None: never)."""
    try:
        return await js.key_value(bucket)
    except Exception:  # BucketNotFoundError; nats-py raises several kinds here
        return await js.create_key_value(
            KeyValueConfig(bucket=bucket, history=history, storage=StorageType.FILE, replicas=replicas, ttl=ttl_s)
        )


async def wait_for_jetstream(js: JetStreamContext, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            await js.account_info()
            return
        except Exception:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)
