"""An append-only event store on a JetStream stream.

Each aggregate is one subject. Appends carry the version the writer read
(`Nats-Expected-Last-Subject-Sequence`), so two writers racing on one aggregate cannot both win, and the
event id as `Nats-Msg-Id`, so a retried append after an ambiguous timeout is stored once. Each event also carries
the W3C `traceparent` of the work that appended it, so its projections log in the same trace.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import nats.errors
import orjson
from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from eventflow.errors import Conflict, DomainError, Unavailable
from eventflow.jetstream import NatsUnreachable, StreamSpec, is_connected, reconnected, require_connection
from eventflow.logs import trace_headers

TYPE_HEADER = "EventFlow-Type"
WRONG_LAST_SEQUENCE = (10071, 10164)
# Retry by time, not count: an R3 leader change pauses writes for up to ~10 s (measured-here.md). That is a
# connected client getting no answer; a client that lost its connection waits RECONNECT_GRACE_S only, so an
# HTTP write answers 503 within 2 s when NATS is down (issue 11).
APPEND_RETRY_FOR_S = 20.0
PUBLISH_TIMEOUT_S = 5.0


def _worth_retrying(err: Exception) -> bool:
    """Server-side and transport failures may pass; a rejected request (4xx) will not."""
    return not isinstance(err, APIError) or ((err.code or 500) >= 500 and err.err_code not in WRONG_LAST_SEQUENCE)


class ConcurrencyConflict(Conflict):
    slug, title = "concurrency", "Concurrent modification"


class OutcomeUnknown(Unavailable):
    """The append went out but no answer came back: it may be stored (now, or when a reconnect flushes it).
    `aggregate_id` says where to look; a retry with the same Idempotency-Key converges on what was stored."""

    slug, title = "outcome-unknown", "Outcome unknown"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(
            "The write was sent but its outcome is unknown; it may have been stored. Retry with the same "
            "Idempotency-Key, or look it up at its location."
        )
        self.aggregate_id = aggregate_id

    def located(self, path: str) -> OutcomeUnknown:
        """The API adds where the resource would be: a client can look before it retries."""
        self.headers["Location"] = path
        self.extra["location"] = path
        return self


class EventTooLarge(DomainError):
    """The event is larger than NATS takes in one message (its max_payload counts headers and payload): refused
    before anything of the append was sent, so nothing was stored and a retry of the same request fails the same."""

    status, slug, title = 413, "payload-too-large", "Payload too large"


class EventNotSendable(DomainError):
    """nats-py refused to encode the message (a header or subject it cannot write): it never left this process,
    so nothing was stored. A fault of the request's data or of ours, not of NATS: no retry helps."""

    status, slug, title = 400, "not-sendable", "Event cannot be sent"


# nats-py raises these before a byte is written: never retried, never "outcome unknown".
_NEVER_SENT: tuple[type[Exception], ...] = (nats.errors.BadHeaderError, nats.errors.BadSubjectError)


class _Disconnected(Exception):
    """Raised before anything is handed to the client: the attempt sent nothing."""


def _retrieve(task: asyncio.Future[Any]) -> None:
    """A publish given up on (its attempt cancelled, or the connection lost) can still end with an error nobody
    awaits: nats-py may answer after the cancel. Reading it keeps asyncio from logging "Task exception was never
    retrieved" for what the attempt already reported."""
    if not task.cancelled():
        task.exception()


@dataclass(frozen=True)
class NewEvent:
    type: str
    data: Mapping[str, Any]
    id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass(frozen=True)
class StoredEvent:
    seq: int
    stream: str
    aggregate_id: str
    type: str
    id: str
    occurred_at: str
    data: dict[str, Any]

    @classmethod
    def decode(cls, stream: str, seq: int, subject: str, payload: bytes) -> StoredEvent:
        doc = orjson.loads(payload)
        return cls(
            seq=seq,
            stream=stream,
            aggregate_id=subject.split(".", 1)[1],
            type=doc["type"],
            id=doc["id"],
            occurred_at=doc["occurred_at"],
            data=doc["data"],
        )


def _encode(aggregate_id: str, event: NewEvent) -> bytes:
    return orjson.dumps(
        {
            "type": event.type,
            "id": event.id,
            "aggregate_id": aggregate_id,
            "occurred_at": datetime.now(UTC).isoformat(),
            "data": event.data,
        }
    )


class EventStore:
    def __init__(self, js: JetStreamContext, spec: StreamSpec) -> None:
        self.js = js
        self.spec = spec

    async def append(self, aggregate_id: str, events: list[NewEvent], expected_version: int | None) -> int:
        """Append in order; `expected_version` 0 means "new aggregate", None means "don't check".

        Returns the stream sequence of the last event: the aggregate's new version, and what a
        read-your-writes caller waits for its projections to reach.
        """
        version = expected_version
        messages = [(_encode(aggregate_id, event), self._headers(event)) for event in events]
        for payload, headers in messages:  # all checked before the first is sent: "nothing stored" holds
            self._check_size(payload, headers)
        seq = 0
        for payload, headers in messages:
            if version is not None:
                headers["Nats-Expected-Last-Subject-Sequence"] = str(version)
            seq = await self._publish(aggregate_id, payload, headers, sent_earlier=seq > 0)
            version = seq if version is not None else None
        return seq

    @staticmethod
    def _headers(event: NewEvent) -> dict[str, str]:
        return {"Nats-Msg-Id": event.id, TYPE_HEADER: event.type, **trace_headers()}

    def _check_size(self, payload: bytes, headers: Mapping[str, str]) -> None:
        """The server drops the connection on a message over its max_payload (headers included), and nats-py only
        checks the payload: too large is refused here, with room for the expected-sequence header added later."""
        nc = getattr(self.js, "_nc", None)
        limit = int(getattr(nc, "max_payload", 0) or 0)
        header_block = len("NATS/1.0\r\n\r\n") + sum(len(k) + len(v) + 4 for k, v in headers.items())
        expected_sequence = len("Nats-Expected-Last-Subject-Sequence: \r\n") + 20
        if limit and len(payload) + header_block + expected_sequence > limit:
            raise EventTooLarge(f"the event is {len(payload)} bytes; NATS takes at most {limit} in one message")

    async def _publish(self, aggregate_id: str, payload: bytes, headers: dict[str, str], sent_earlier: bool) -> int:
        """Timeouts and no responders (a leader election) are retried with the same Nats-Msg-Id, which the
        duplicate window turns into one stored event. A lost connection is waited for briefly, then the
        answer is NatsUnreachable if no attempt went out (and an earlier event of this append was not stored
        either), or OutcomeUnknown."""
        loop = asyncio.get_running_loop()
        deadline, delay, sent = loop.time() + APPEND_RETRY_FOR_S, 0.05, sent_earlier
        while True:
            if not await reconnected(self.js):
                raise OutcomeUnknown(aggregate_id) if sent else NatsUnreachable()
            try:
                return await self._attempt(self.spec.subject(aggregate_id), payload, headers)
            except _Disconnected as err:
                last: Exception = err
            except nats.errors.MaxPayloadError:
                raise EventTooLarge(f"the event is {len(payload)} bytes, over NATS's max_payload") from None
            except _NEVER_SENT as err:
                raise EventNotSendable(f"nats-py could not encode the event: {type(err).__name__}") from None
            except APIError as err:
                if err.err_code in WRONG_LAST_SEQUENCE:
                    raise ConcurrencyConflict("the aggregate changed since it was read; reload and retry") from None
                if not _worth_retrying(err):
                    raise
                sent, last = True, err
            except Exception as err:  # a timeout, no responders, the connection lost while waiting
                sent, last = True, err
            if loop.time() + delay > deadline:
                raise (OutcomeUnknown(aggregate_id) if sent else NatsUnreachable()) from last
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 1.0)

    async def _attempt(self, subject: str, payload: bytes, headers: dict[str, str]) -> int:
        """One publish. The connection check and the hand-over to the client happen in one step of the event
        loop, so nothing published here can sit in the reconnect buffer; losing the connection while waiting
        for the ack ends the wait (the outcome is then unknown)."""

        async def publish() -> int:
            if not is_connected(self.js):
                raise _Disconnected()
            return int((await self.js.publish(subject, payload, headers=headers, timeout=PUBLISH_TIMEOUT_S)).seq)

        task = asyncio.ensure_future(publish())
        task.add_done_callback(_retrieve)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=0.2)
                if done:
                    return task.result()
                if not is_connected(self.js):
                    raise ConnectionError("NATS connection lost while waiting for the ack")
        finally:
            task.cancel()

    async def load(self, aggregate_id: str, *, direct: bool = False) -> tuple[list[StoredEvent], int]:
        """All events of one aggregate and its version (0 when it has none), read from the stream leader.

        `direct=True` lets any replica answer (`DIRECT.GET`), and a lagging one answers with a prefix of the
        aggregate: fewer events, an older version, or "absent". Opt in only where such an answer is harmless,
        because an expected-version append re-checks it on the leader or nothing is decided on it. Never for
        a read that destroys or gives away something on "absent" (a lost ack is exactly when the leader has
        the event and a replica may not yet). The callers, and why:

        - leader: users `_compensate` and the reconciliation's `appeared` (they delete the data key and free
          the claims), the claim take-over's `appeared` (it gives a live user's email away), users
          `_existing` (a stale "absent" after a conflict would refuse the client's own retry), events
          `_existing` after a conflict, `ReservationArchive.get` (by `last`; answers GET /api/reservas as the
          truth, and catches a twin reservation after its create),
          the inventory's `_from_event` and the saga's `_append_once` (rare: once per event / on a retry).
        - direct: events `_existing` before creating: "absent" only sends it to an append with expected
          version 0, which the leader refuses if the event exists, and the lookup after it reads the leader;
          the reservations' look for a repeated Idempotency-Key before the chain runs (`last`): "absent" only
          runs the chain, and the look after the saga's create reads the leader.
        """
        await require_connection(self.js)
        subject = self.spec.subject(aggregate_id)
        events: list[StoredEvent] = []
        seq = 1
        while True:
            try:
                msg = await self.js.get_msg(self.spec.name, seq=seq, subject=subject, next=True, direct=direct)
            except NotFoundError:
                break
            if msg.data is None or not msg.seq:
                break
            events.append(StoredEvent.decode(self.spec.name, msg.seq, msg.subject or subject, msg.data))
            seq = msg.seq + 1
        return events, (events[-1].seq if events else 0)

    async def last(self, aggregate_id: str, *, direct: bool = False) -> StoredEvent | None:
        """The aggregate's latest event in one request (None when it has none); `direct` as for `load`."""
        await require_connection(self.js)
        subject = self.spec.subject(aggregate_id)
        try:
            msg = await self.js.get_msg(self.spec.name, subject=subject, direct=direct)
        except NotFoundError:
            return None
        if msg.data is None or not msg.seq:
            return None
        return StoredEvent.decode(self.spec.name, msg.seq, msg.subject or subject, msg.data)

    async def last_sequence(self) -> int:
        info = await self.js.stream_info(self.spec.name)
        return int(info.state.last_seq)
