"""The gateway's key refresh (services/gateway/keys.py) against small real key servers: shared, and paused
after a failure, so a flood of made-up key ids with the key server hung costs one fetch, not one each."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
from joserfc import jwt
from joserfc.jwk import ECKey

from eventflow.auth import HttpJwks
from eventflow.config import Settings
from services.gateway.bootstrap import create_app
from services.gateway.keys import SharedRefresh
from tests.gateway.test_ratelimit import IDP, claims, gateway_trusting_idp
from tests.gateway.upstreams import HANG, echo_upstreams, http_answer, raw_upstream
from tests.utils.app import api_client


async def test_tokens_with_new_key_ids_share_one_fetch_while_the_key_server_hangs(settings: Settings) -> None:
    async with raw_upstream(lambda _: HANG) as idp, echo_upstreams("events") as up:
        conf = gateway_trusting_idp(settings, up["events"], idp.url)
        async with api_client(create_app(conf)) as client:
            made_up = []
            for n in range(6):
                key = ECKey.generate_key("P-256", parameters={"kid": f"made-up-{n}", "alg": "ES256"})
                made_up.append(jwt.encode({"alg": "ES256", "kid": f"made-up-{n}"}, claims(), key))
            calls = (client.get("/api/eventos", headers={"authorization": f"Bearer {t}"}) for t in made_up)
            answers = await asyncio.wait_for(asyncio.gather(*calls), timeout=5)
            assert [a.status_code for a in answers] == [200] * 6, "counted as anonymous, forwarded"
            assert len(idp.seen) == 1, "one fetch for them all"


async def test_after_a_failed_fetch_none_is_tried_until_the_pause_ends_and_a_good_one_never_pauses() -> None:
    now = [1000.0]
    jwks = orjson.dumps({"keys": [IDP.as_dict(private=False)]})
    failing = http_answer(b"{}", status="500 Internal Server Error")
    async with raw_upstream(lambda n: failing if n < 2 else http_answer(jwks)) as idp, aiohttp.ClientSession() as s:
        keys = SharedRefresh(HttpJwks(s, f"{idp.url}/jwks", min_refresh_s=0), pause_s=5.0, clock=lambda: now[0])
        await keys.refresh()
        await keys.refresh()
        assert len(idp.seen) == 1, "paused after the failure"
        now[0] += 5.1
        await keys.refresh()  # fails again (the 2nd answer)
        now[0] += 5.1
        await keys.refresh()
        assert len(idp.seen) == 3 and keys.keyset().keys, "the pause ended; this fetch worked"
        await keys.refresh()
        assert len(idp.seen) == 4, "no pause after a fetch that brought keys"


MALFORMED_JWKS = [
    b"[]",
    b'{"keys": null}',
    b'{"keys": []}',
    b'{"keys": [{"kty": "zzz"}]}',
    b"not json",
    b'"keys"',
    b"[" * 100_000 + b"]" * 100_000,
]


async def test_a_malformed_key_set_is_a_failed_fetch_not_an_error() -> None:
    """Whatever the key server answers, a refresh ends, and the keys fetched before stay."""
    jwks = http_answer(orjson.dumps({"keys": [IDP.as_dict(private=False)]}))
    answers = [jwks] + [http_answer(body) for body in MALFORMED_JWKS]
    async with raw_upstream(lambda n: answers[n]) as idp, aiohttp.ClientSession() as s:
        keys = HttpJwks(s, f"{idp.url}/jwks", min_refresh_s=0)
        await keys.refresh()
        good = keys.keyset()
        assert good.keys
        for _ in MALFORMED_JWKS:
            await keys.refresh()
            assert keys.keyset() is good
        assert len(idp.seen) == len(answers)
