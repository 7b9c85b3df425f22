"""The event store's answers when a publish cannot go out: refused at once when it never could (too large).
Real nats-server, its `max_payload` as eventflow.servers configures it (4 MB)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from eventflow.eventstore import EventStore, EventTooLarge, NewEvent, _encode
from eventflow.jetstream import StreamSpec, connect, ensure_stream, is_connected
from tests.utils.servers import Servers

GUARD_S = 60.0  # only so that a hang fails the test instead of the run


@pytest.fixture
async def store(servers: Servers) -> AsyncIterator[EventStore]:
    """A stream of its own per test, so its last sequence counts this test's appends only."""
    nc = await connect(servers.nats.url, "faults-eventstore")
    js = nc.jetstream(timeout=10)
    suffix = uuid.uuid4().hex[:8]
    spec = StreamSpec(f"LIMITES_{suffix}", f"limites{suffix}")
    await ensure_stream(js, spec)
    yield EventStore(js, spec)
    await js.delete_stream(spec.name)
    await nc.close()


def max_payload(store: EventStore) -> int:
    return int(store.js._nc.max_payload)  # what the server announced in its INFO


async def test_an_event_over_max_payload_is_refused_at_once_and_nothing_of_the_append_is_stored(
    store: EventStore,
) -> None:
    """nats-py refuses it before sending (MaxPayloadError): retrying for 20 s and answering "outcome unknown" would
    be wrong twice. The small event before it in the same append is not stored either."""
    assert max_payload(store) == 4 * 1024 * 1024
    before = await store.last_sequence()
    events = [NewEvent("Pequeno", {"n": 1}), NewEvent("Enorme", {"blob": "x" * max_payload(store)})]
    with pytest.raises(EventTooLarge) as refused:
        await asyncio.wait_for(store.append("agregado", events, expected_version=0), GUARD_S)
    assert refused.value.status == 413 and refused.value.slug == "payload-too-large"
    assert await store.last_sequence() == before
    assert is_connected(store.js)


async def test_an_event_whose_headers_take_it_over_max_payload_is_refused_before_the_server_drops_us(
    store: EventStore,
) -> None:
    """The server counts headers and payload against max_payload, nats-py only the payload: such a message would
    pass nats-py, make the server close the connection, and be retried until "outcome unknown"."""
    overhead = len(_encode("agregado", NewEvent("Medida", {"blob": ""})))
    blob = "x" * (max_payload(store) - overhead - 8)  # the payload alone fits, by 8 bytes
    before = await store.last_sequence()
    with pytest.raises(EventTooLarge):
        await asyncio.wait_for(store.append("agregado", [NewEvent("Medida", {"blob": blob})], None), GUARD_S)
    assert await store.last_sequence() == before
    assert is_connected(store.js)
    assert await store.append("agregado", [NewEvent("Medida", {"blob": ""})], None) == before + 1
