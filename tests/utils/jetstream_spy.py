"""Which kind of read a JetStream client makes: leader (`STREAM.MSG.GET`) or any replica (`DIRECT.GET`).

A second NATS client subscribes to the API subjects of one stream. NATS fans a request out to every
subscriber, so the spy sees each read the code under test sends; it only records, never replies.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from nats.aio.client import Client as NATS
from nats.aio.subscription import Subscription

from eventflow.jetstream import connect

MARKER_DEADLINE_S = 30.0  # a generous bound on one message's trip, not a timing assertion


@dataclass
class ReadSpy:
    nc: NATS
    marker: Subscription
    leader_sub: Subscription
    direct_subs: list[Subscription]
    leader: list[str] = field(default_factory=list)  # each request as "subject payload"
    direct: list[str] = field(default_factory=list)

    async def reads_of(self, text: str, sent_over: NATS) -> tuple[list[str], list[str]]:
        """(leader reads, direct reads) sent so far over `sent_over` whose subject or body mention `text`.

        The server handles one connection's messages in order, delivering each to every subscriber before
        the next: once a marker sent after the reads reaches the spy, every read before it has too.
        """
        await sent_over.publish(self.marker.subject, b"")
        await self.marker.next_msg(timeout=MARKER_DEADLINE_S)
        for sub, seen in [(self.leader_sub, self.leader)] + [(s, self.direct) for s in self.direct_subs]:
            for _ in range(sub.pending_msgs):
                msg = await sub.next_msg(timeout=None)
                seen.append(f"{msg.subject} {msg.data.decode()}")
        return [r for r in self.leader if text in r], [r for r in self.direct if text in r]


@asynccontextmanager
async def spying_on(url: str, stream: str) -> AsyncIterator[ReadSpy]:
    nc = await connect(url, "read-spy")
    try:
        marker = await nc.subscribe(f"spy.marker.{uuid.uuid4().hex}")
        leader = await nc.subscribe(f"$JS.API.STREAM.MSG.GET.{stream}")
        # `DIRECT.GET.<stream>` carries seq/next requests; `DIRECT.GET.<stream>.<subject>` last-by-subject ones.
        direct = [
            await nc.subscribe(f"$JS.API.DIRECT.GET.{stream}"),
            await nc.subscribe(f"$JS.API.DIRECT.GET.{stream}.>"),
        ]
        # Subscribed on the server before the code under test sends anything. Not by `flush()`: nats-py writes
        # its PING straight to the socket, ahead of a SUB still queued for the flusher task. Our own marker
        # travels behind the SUBs, so its echo proves the server has them all.
        await nc.publish(marker.subject, b"")
        await marker.next_msg(timeout=MARKER_DEADLINE_S)
        yield ReadSpy(nc, marker, leader, direct)
    finally:
        await nc.close()
