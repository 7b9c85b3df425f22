"""`python -m services.users.rotar_claves`: re-wrap every data key of the users service with the current master key.

Run it after every users replica restarted with the new key as EVENTFLOW_MASTER_KEY (and a new
EVENTFLOW_MASTER_KEY_ID) and the old one in EVENTFLOW_MASTER_KEYS_PREVIOUS; reads and writes go on meanwhile.
It re-wraps USER_KEYS (one data key per user), AUTH_SIGNING (the token signing keys' data keys) and TICKET_KEYS
(each event's ticket-signing key, the reservations service's), drops the
Redis copies wrapped by an old key, and prints how many data keys each master key id still wraps: an old id
that is no longer listed may be removed from EVENTFLOW_MASTER_KEYS_PREVIOUS. Exit status 0 when nothing uses
an old key any more, 3 otherwise (e.g. an entry kept changing while it ran: run it again).
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter

from redis.asyncio import Redis

from eventflow import keys
from eventflow.config import Settings
from eventflow.crypto import KeyRing
from eventflow.jetstream import connect, ensure_bucket
from eventflow.signing_keys import open_buckets
from services.users.privacy import KEYS_BUCKET, cache_key

STILL_IN_USE = 3
TICKET_KEYS_BUCKET = "TICKET_KEYS"  # services/reservations/ticket_keys.py (a service of its own: not imported)


async def rotate(settings: Settings, previous: str | None = None) -> Counter[str]:
    """Re-wraps; returns the master key ids in use afterwards (count of data keys each wraps)."""
    ring = keys.key_ring(settings, previous)
    nc = await connect(settings.nats_url, "users-rotate-keys")
    redis = Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        js = nc.jetstream()
        user_keys = await ensure_bucket(js, KEYS_BUCKET, settings.replicas)
        signing, _ = await open_buckets(js, settings.replicas)

        async def forget(usuario_id: str) -> None:
            await redis.delete(cache_key(usuario_id))

        users = await keys.rewrap_bucket(user_keys, ring, keys.Wrapped(), forget)
        signing_report = await keys.rewrap_bucket(signing, ring, keys.Wrapped("dek"))
        # The reservations service's per-event ticket-signing keys (services/reservations/ticket_keys.py).
        tickets = await ensure_bucket(js, TICKET_KEYS_BUCKET, settings.replicas)
        tickets_report = await keys.rewrap_bucket(tickets, ring, keys.Wrapped("dek"))
        # A read that raced the re-wrap may have cached the old wrapping again: drop every such copy.
        async for key in redis.scan_iter(match=cache_key("*"), count=500):
            wrapped = await redis.get(key)
            if wrapped and KeyRing.key_id_of(str(wrapped)) != ring.current:
                await redis.delete(key)
        return users.in_use + signing_report.in_use + tickets_report.in_use
    finally:
        await redis.aclose()
        await nc.drain()


def main() -> int:
    settings = Settings()
    in_use = asyncio.run(rotate(settings))
    for kid, count in sorted(in_use.items()):
        print(f"{kid}: {count} data keys{' (current)' if kid == settings.master_key_id else ''}")
    old = sorted(kid for kid in in_use if kid != settings.master_key_id)
    if old:
        print(f"still in use: {', '.join(old)}; keep them in {keys.PREVIOUS_ENV} and run this again")
        return STILL_IN_USE
    print(f"no data key uses an old master key: it may be removed from {keys.PREVIOUS_ENV}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
