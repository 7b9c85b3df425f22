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

from eventflow.errors import Unavailable

log = logging.getLogger(__name__)

DUPLICATE_WINDOW_S = 120.0
# How long a write waits for a lost connection to come back before it is refused: a blip, not an outage.
# A connected client that gets no answer (a leader election) retries for longer (eventstore.APPEND_RETRY_FOR_S).
RECONNECT_GRACE_S = 1.0


class NatsUnreachable(Unavailable):
    """NATS was unreachable and nothing was handed to the client: the write did not happen, and it is not
    waiting in nats-py's reconnect buffer to happen later. Any retry is safe."""

    def __init__(self) -> None:
        super().__init__("The system of record is unreachable; nothing was stored. Retry later.")


def is_connected(js: JetStreamContext) -> bool:
    """Whether a publish now would go to the server. While reconnecting, nats-py buffers publishes and sends
    them on reconnect: a write refused to its client must never be handed over then."""
    nc: NATS | None = getattr(js, "_nc", None)
    return nc is None or bool(nc.is_connected)


async def reconnected(js: JetStreamContext, grace_s: float = RECONNECT_GRACE_S) -> bool:
    """True once connected, waiting at most `grace_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    while not is_connected(js):
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def require_connection(js: JetStreamContext) -> None:
    """Fail fast when NATS is away: a request made while reconnecting would wait out its whole timeout."""
    if not await reconnected(js):
        raise NatsUnreachable()


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
