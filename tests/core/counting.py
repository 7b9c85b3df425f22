"""A read model that shows any event applied twice (or skipped), and a way to feed it."""

from __future__ import annotations

from eventflow.eventstore import EventStore, NewEvent
from eventflow.generations import keyspace


class Counter:
    """Counts events per aggregate: applying any event twice would show as a wrong count.

    Its own family (named after it): generation g writes `<name>:g<g>:counts` and `<name>:g<g>:order`."""

    def __init__(self, name: str, generation: int = 0) -> None:
        self.name = self.family = name
        self.generation = generation
        self.prefix = keyspace(name, generation)
        self.key_patterns = (f"{self.prefix}:counts", f"{self.prefix}:order")

    def at(self, generation):
        return type(self)(self.name, generation)

    async def apply(self, event, redis, tx):
        current = int(await redis.hget(f"{self.prefix}:counts", event.aggregate_id) or 0)
        tx.hset(f"{self.prefix}:counts", event.aggregate_id, current + 1)
        tx.rpush(f"{self.prefix}:order", event.seq)


async def append_many(js, spec, n, aggregates=3):
    store = EventStore(js, spec)
    seq = 0
    for i in range(n):
        seq = await store.append(f"a{i % aggregates}", [NewEvent("Tick", {"i": i})], None)
    return seq
