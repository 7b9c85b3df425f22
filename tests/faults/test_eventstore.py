"""The event store's answers when a publish cannot go out: refused at once when it never could (too large), and
no stray "Task exception was never retrieved" when an attempt gives up on its publish. Real nats-server, its
`max_payload` as eventflow.servers configures it (4 MB)."""

from __future__ import annotations

import asyncio
import gc
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from eventflow import eventstore
from eventflow.eventstore import EventNotSendable, EventStore, EventTooLarge, NewEvent, _encode
from eventflow.jetstream import StreamSpec, connect, ensure_stream, is_connected
from tests.utils.servers import Servers, running_servers

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


async def test_an_event_nats_py_cannot_encode_is_refused_at_once_and_nothing_is_stored(store: EventStore) -> None:
    """A subject with a space never leaves the process (BadSubjectError): a 400 at once, not 20 s of retries and
    "outcome unknown"."""
    before = await store.last_sequence()
    with pytest.raises(EventNotSendable) as refused:
        await asyncio.wait_for(store.append("con espacio", [NewEvent("Medida", {})], None), GUARD_S)
    assert refused.value.status == 400
    assert await store.last_sequence() == before
    assert is_connected(store.js)


class AnswersDespiteCancel:
    """The JetStream context, except that a publish cancelled while its answer is on the way ends with that
    answer, as Python 3.11's `asyncio.wait_for` (inside nats-py's request) does when the answer is already in: the
    task then fails (a timeout, a conflict) after `cancel()` was called on it."""

    def __init__(self, js: Any) -> None:
        self._js = js

    async def publish(self, *args: Any, **kwargs: Any) -> Any:
        answer = asyncio.ensure_future(self._js.publish(*args, **kwargs))
        try:
            return await asyncio.shield(answer)
        except asyncio.CancelledError:
            return await answer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._js, name)


async def test_an_attempt_given_up_on_a_lost_connection_leaves_no_unretrieved_task_exception(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NATS hangs, then dies while the attempt waits for the ack: the attempt gives up (ConnectionError) and cancels
    its publish task, which still ends with the ack's timeout. asyncio must have nothing to report about it."""
    monkeypatch.setattr(eventstore, "PUBLISH_TIMEOUT_S", 0.5)
    with running_servers(tmp_path) as servers:
        nc = await connect(servers.nats.url, "faults-attempt")
        try:
            js = nc.jetstream(timeout=10)
            spec = StreamSpec("INTENTOS", "intentos")
            await ensure_stream(js, spec)
            store = EventStore(AnswersDespiteCancel(js), spec)  # type: ignore[arg-type]
            loop = asyncio.get_running_loop()
            reported: list[dict[str, Any]] = []
            loop.set_exception_handler(lambda _loop, context: reported.append(context))
            try:
                servers.nats.pause()
                attempt = asyncio.ensure_future(store._attempt(spec.subject("a"), b"{}", {"Nats-Msg-Id": "m"}))
                publish = await _publish_task()
                servers.nats.kill()
                with pytest.raises(ConnectionError):
                    await asyncio.wait_for(attempt, GUARD_S)
                await asyncio.wait({publish}, timeout=GUARD_S)
                assert publish.done() and not publish.cancelled()  # it failed after it was cancelled
                del publish, attempt
                gc.collect()  # an unretrieved exception is reported when its task is collected
            finally:
                loop.set_exception_handler(None)
            assert not [c for c in reported if "never retrieved" in str(c.get("message"))], reported
        finally:
            servers.nats.kill()  # already dead, unless the pause itself failed
            servers.nats.start_again()
            await nc.close()


async def _publish_task() -> asyncio.Task[Any]:
    """The attempt's publish task, once the attempt has started it."""
    while True:
        found = [t for t in asyncio.all_tasks() if "_attempt.<locals>.publish" in repr(t.get_coro())]
        if found:
            return found[0]
        await asyncio.sleep(0)  # one turn of the loop: the attempt runs up to its wait
