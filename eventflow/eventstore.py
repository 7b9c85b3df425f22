"""An append-only event store on a JetStream stream.

Each aggregate is one subject. Appends carry the version the writer read
(`Nats-Expected-Last-Subject-Sequence`), so two writers racing on one aggregate cannot both win, and the
event id as `Nats-Msg-Id`, so a retried append after an ambiguous timeout is stored once. Each event also carries
the W3C `traceparent` of the work that appended it, so its projections log in the same trace.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from eventflow.errors import Conflict
from eventflow.jetstream import StreamSpec
from eventflow.logs import trace_headers
from eventflow.retry import retry_by_time

TYPE_HEADER = "EventFlow-Type"
WRONG_LAST_SEQUENCE = (10071, 10164)
# Retry by time, not count: an R3 leader change pauses writes for up to ~10 s (measured-here.md).
APPEND_RETRY_FOR_S = 20.0


def _worth_retrying(err: Exception) -> bool:
    """Server-side and transport failures may pass; a rejected request (4xx) will not."""
    return not isinstance(err, APIError) or ((err.code or 500) >= 500 and err.err_code not in WRONG_LAST_SEQUENCE)


class ConcurrencyConflict(Conflict):
    slug, title = "concurrency", "Concurrent modification"


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
        seq = 0
        for event in events:
            headers = {"Nats-Msg-Id": event.id, TYPE_HEADER: event.type, **trace_headers()}
            if version is not None:
                headers["Nats-Expected-Last-Subject-Sequence"] = str(version)
            seq = await self._publish(self.spec.subject(aggregate_id), _encode(aggregate_id, event), headers)
            version = seq if version is not None else None
        return seq

    async def _publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> int:
        async def publish() -> int:
            return int((await self.js.publish(subject, payload, headers=headers, timeout=5.0)).seq)

        try:
            # Timeouts, no responders during a leader election, a reconnect: retried with the same
            # Nats-Msg-Id, which the duplicate window turns into exactly one stored event.
            return await retry_by_time(publish, APPEND_RETRY_FOR_S, retry_if=_worth_retrying)
        except APIError as err:
            if err.err_code in WRONG_LAST_SEQUENCE:
                raise ConcurrencyConflict("the aggregate changed since it was read; reload and retry") from None
            raise

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
