from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from eventflow.config import Settings
from eventflow.servers import free_port
from services.gateway.bootstrap import create_app
from services.gateway.config import GatewaySettings
from tests.gateway.upstreams import ETAG, RESET, echo_upstreams, http_answer, raw_upstream
from tests.reservations.helpers import serve
from tests.utils.app import api_client
from tests.utils.auth import Cuenta, registrar

SERVICES = ("users", "events", "reservations")


@pytest.fixture
async def upstreams() -> AsyncIterator[dict[str, str]]:
    async with echo_upstreams(*SERVICES) as urls:
        yield urls


def gateway_settings(settings: Settings, upstreams: dict[str, str], **overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "redis_url": settings.redis_url,
        "users_url": upstreams.get("users", "http://127.0.0.1:1"),
        "events_url": upstreams.get("events", "http://127.0.0.1:1"),
        "reservations_url": upstreams.get("reservations", "http://127.0.0.1:1"),
        "rate_limit_per_s": 0,
    }
    values.update(overrides)
    return GatewaySettings(**values)


@pytest.fixture
async def gateway(settings: Settings, upstreams: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(create_app(gateway_settings(settings, upstreams))) as client:
        yield client


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    return body


async def test_forwards_method_path_query_body_and_chosen_headers(gateway: httpx.AsyncClient) -> None:
    response = await gateway.post(
        "/api/usuarios/a%20b/x?q=caf%C3%A9&page=2",
        content=b'{"nombre": "Ana"}',
        headers={
            "content-type": "application/json",
            "idempotency-key": "key-1",
            "x-request-id": "req-123",
            "cookie": "session=private",
            "x-internal-secret": "from outside",
        },
        params=None,
    )
    assert response.status_code == 200
    seen = response.json()
    assert seen["service"] == "users"
    assert seen["method"] == "POST"
    assert seen["raw_path"] == "/api/usuarios/a%20b/x"
    assert seen["query"] == "q=caf%C3%A9&page=2"
    assert seen["body"] == '{"nombre": "Ana"}'
    assert seen["headers"]["content-type"] == "application/json"
    assert seen["headers"]["idempotency-key"] == "key-1"
    assert seen["headers"]["x-request-id"] == "req-123"
    assert "cookie" not in seen["headers"]
    assert "x-internal-secret" not in seen["headers"]
    assert response.headers["x-request-id"] == "req-123"


async def test_returns_status_body_and_chosen_headers(gateway: httpx.AsyncClient) -> None:
    response = await gateway.put("/api/eventos/e1?status=201", content=b"x", headers={"content-type": "text/plain"})
    assert response.status_code == 201
    assert response.json()["method"] == "PUT"
    assert response.headers["content-type"] == "application/json"
    assert response.headers["etag"] == ETAG
    assert response.headers["cache-control"] == "max-age=5"
    assert response.headers["location"] == "/api/eventos/e1/1"
    assert response.headers["retry-after"] == "3"
    assert response.headers["idempotency-key"] == "generated-key"  # a key the service made up for the client
    assert response.headers["www-authenticate"] == 'Bearer realm="eventflow"'  # a 401's challenge reaches the client
    assert response.headers["eventflow-source"] == "log"  # an event read from the log while Redis is down says so
    assert "x-internal-secret" not in response.headers
    assert response.headers.get_list("x-request-id") == [response.json()["headers"]["x-request-id"]]


async def test_makes_a_request_id_when_the_client_sends_none(gateway: httpx.AsyncClient) -> None:
    response = await gateway.get("/api/eventos")
    sent = response.json()["headers"]["x-request-id"]
    assert len(sent) >= 16
    assert response.headers["x-request-id"] == sent


@pytest.mark.parametrize(
    ("path", "service"),
    [
        ("/api/usuarios", "users"),
        ("/api/usuarios/exportar", "users"),
        ("/api/eventos", "events"),
        ("/api/eventos/123", "events"),
        ("/api/reservar", "reservations"),
        ("/api/reservar/r1", "reservations"),
        ("/api/reservas/r1/cancelar", "reservations"),
        ("/api/auth/token", "users"),
        ("/api/auth/refresh", "users"),
        ("/api/auth/logout", "users"),
    ],
)
async def test_routes_each_prefix_to_its_service(gateway: httpx.AsyncClient, path: str, service: str) -> None:
    response = await gateway.post(path, json={})
    assert response.json()["service"] == service


async def test_conditional_get_passes_304_through(gateway: httpx.AsyncClient) -> None:
    response = await gateway.get("/api/eventos/e1", headers={"if-none-match": ETAG})
    assert response.status_code == 304
    assert response.headers["etag"] == ETAG
    assert response.content == b""


@pytest.mark.parametrize("path", ["/api/nada", "/api/eventosX", "/api", "/otra"])
async def test_unknown_paths_are_404_problems(gateway: httpx.AsyncClient, path: str) -> None:
    assert_problem(await gateway.get(path), 404)


async def test_upstream_refusing_connections_is_503_with_retry_after(
    settings: Settings, upstreams: dict[str, str]
) -> None:
    """A service restarting under its supervisor refuses connections: nothing was sent, so 503 + Retry-After."""
    down = {**upstreams, "users": f"http://127.0.0.1:{free_port()}"}
    async with api_client(create_app(gateway_settings(settings, down))) as client:
        for response in (await client.get("/api/usuarios/u1"), await client.post("/api/usuarios", json={})):
            body = assert_problem(response, 503)
            assert body["type"].endswith("/problems/upstream-unavailable")
            assert body["upstream"] == "users"
            assert response.headers["retry-after"] == "1"
        streamed = await client.get("/api/usuarios/u1", headers={"accept": "text/event-stream"})
        assert assert_problem(streamed, 503)["type"].endswith("/problems/upstream-unavailable")
        assert (await client.get("/api/eventos")).status_code == 200


async def test_a_malformed_upstream_answer_is_502(settings: Settings, upstreams: dict[str, str]) -> None:
    async with raw_upstream(lambda _: b"HTTP/1.1 200 OK\r\ncontent-length: nope\r\n\r\n{}") as bad:
        conf = gateway_settings(settings, {**upstreams, "users": bad.url})
        async with api_client(create_app(conf)) as client:
            body = assert_problem(await client.get("/api/usuarios/u1"), 502)
            assert body["type"] == "/problems/bad-gateway" and body["upstream"] == "users"


async def test_a_dropped_connection_is_resent_once_only_for_a_read_or_a_keyed_write(
    settings: Settings, upstreams: dict[str, str]
) -> None:
    """A stale keep-alive connection (the service restarted) drops the first request unanswered. A write without
    an Idempotency-Key must not be sent twice (it may have been carried out): the upstream sees it exactly once."""
    key = {"idempotency-key": "k-1"}
    cases = [
        ("GET", "/api/usuarios/u1", {}, 200, 2),
        ("HEAD", "/api/usuarios/u1", {}, 200, 2),
        ("POST", "/api/usuarios", key, 200, 2),  # the sign-up deduplicates by its key
        ("POST", "/api/usuarios", {}, 502, 1),
        ("PUT", "/api/usuarios/u1", {}, 502, 1),  # aiohttp's own resend of PUT/DELETE is off
        ("DELETE", "/api/usuarios/u1", key, 502, 1),  # a key where no service reads one makes nothing safe
        ("PUT", "/api/usuarios/me/password", key, 502, 1),
    ]
    for method, path, headers, status, sent in cases:
        async with raw_upstream(lambda n: None if n == 0 else http_answer()) as flaky:
            conf = gateway_settings(settings, {**upstreams, "users": flaky.url})
            async with api_client(create_app(conf)) as client:
                response = await client.request(method, path, headers=headers, content=b"{}")
                assert (method, response.status_code) == (method, status), response.text
                assert len(flaky.seen) == sent, (method, path, headers, flaky.seen)
                if status == 502:
                    assert response.json()["type"] == "/problems/bad-gateway"


async def test_a_reset_connection_is_resent_once_for_a_read_and_never_for_an_unkeyed_write(
    settings: Settings, upstreams: dict[str, str]
) -> None:
    """An upstream dying with the request on the wire resets the connection (RST) instead of closing it."""
    for method, status, sent in [("GET", 200, 2), ("POST", 502, 1)]:
        async with raw_upstream(lambda n: RESET if n == 0 else http_answer()) as flaky:
            conf = gateway_settings(settings, {**upstreams, "users": flaky.url})
            async with api_client(create_app(conf)) as client:
                response = await client.request(method, "/api/usuarios/u1", content=b"{}")
                assert (method, response.status_code) == (method, status), response.text
                assert len(flaky.seen) == sent, (method, flaky.seen)


async def test_upstream_too_slow_is_504_problem(settings: Settings, upstreams: dict[str, str]) -> None:
    async with api_client(create_app(gateway_settings(settings, upstreams, gateway_timeout=0.3))) as client:
        body = assert_problem(await client.get("/api/eventos/e1/slow"), 504)
        assert body["type"] == "/problems/gateway-timeout"


async def test_a_reservation_without_a_key_gets_one_before_it_is_forwarded(gateway: httpx.AsyncClient) -> None:
    received = (await gateway.post("/api/reservar", json={})).json()["headers"]
    assert len(received["idempotency-key"]) == 32
    mine = (await gateway.post("/api/reservar", json={}, headers={"Idempotency-Key": "k-9"})).json()["headers"]
    assert mine["idempotency-key"] == "k-9"


async def test_a_reservation_timing_out_at_the_gateway_still_returns_its_key(
    settings: Settings, upstreams: dict[str, str]
) -> None:
    """Issue 6 defect 7: a 504 without the generated key left the client no safe way to retry."""
    async with api_client(create_app(gateway_settings(settings, upstreams, gateway_timeout=0.3))) as client:
        resp = await client.post("/api/reservar?slow=1", json={})
        assert_problem(resp, 504)
        assert len(resp.headers["idempotency-key"]) == 32


async def test_service_not_deployed_is_503(settings: Settings, upstreams: dict[str, str]) -> None:
    gateway_conf = gateway_settings(settings, upstreams, gateway_upstreams="users,events")
    async with api_client(create_app(gateway_conf)) as client:
        assert_problem(await client.post("/api/reservar", json={}), 503)
        ready = await client.get("/health/ready")
        assert ready.status_code == 200
        assert set(ready.json()["checks"]) == {"upstreams", "redis", "users", "events"}


async def test_rate_limit_per_client_answers_429_with_retry_after(
    settings: Settings, upstreams: dict[str, str]
) -> None:
    conf = gateway_settings(settings, upstreams, rate_limit_per_s=0.01, rate_limit_burst=3, trust_forwarded_for=True)
    me, other = f"10.0.{uuid.uuid4().int % 250}.1", f"10.1.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"
    async with api_client(create_app(conf)) as client:
        for _ in range(3):
            assert (await client.get("/api/eventos", headers={"x-forwarded-for": me})).status_code == 200
        limited = await client.get("/api/eventos", headers={"x-forwarded-for": me})
        body = assert_problem(limited, 429)
        assert body["type"] == "/problems/rate-limited"
        assert int(limited.headers["retry-after"]) >= 1
        assert (await client.get("/api/eventos", headers={"x-forwarded-for": other})).status_code == 200
        assert (await client.get("/health/live", headers={"x-forwarded-for": me})).status_code == 200


async def test_rate_limit_ignores_forwarded_for_unless_trusted(settings: Settings, upstreams: dict[str, str]) -> None:
    """Otherwise a client could dodge its limit by inventing a new X-Forwarded-For on every request."""
    conf = gateway_settings(settings, upstreams, rate_limit_per_s=0.01, rate_limit_burst=1)
    async with api_client(create_app(conf)) as client:
        client.headers["x-forwarded-for"] = "198.51.100.7"
        await client.get("/api/eventos", headers={"x-forwarded-for": f"192.0.2.{uuid.uuid4().int % 250}"})
        second = await client.get("/api/eventos", headers={"x-forwarded-for": f"192.0.2.{uuid.uuid4().int % 250}"})
        assert second.status_code == 429


async def test_ready_reports_every_upstream(gateway: httpx.AsyncClient) -> None:
    ready = await gateway.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ok",
        "checks": {"upstreams": "ok", "redis": "ok", "users": "ok", "events": "ok", "reservations": "ok"},
    }


async def test_ready_but_degraded_names_the_upstream_that_is_down(
    settings: Settings, upstreams: dict[str, str]
) -> None:
    """Issue 11: ready while one upstream answers (no cascade); not ready once none does."""
    down = {**upstreams, "reservations": f"http://127.0.0.1:{free_port()}"}
    async with api_client(create_app(gateway_settings(settings, down))) as client:
        ready = await client.get("/health/ready")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        assert ready.json()["checks"]["reservations"].startswith("failing")
        assert ready.json()["checks"]["users"] == "ok"
    none = {name: f"http://127.0.0.1:{free_port()}" for name in upstreams}
    async with api_client(create_app(gateway_settings(settings, none))) as client:
        body = assert_problem(await client.get("/health/ready"), 503)
        assert body["checks"]["upstreams"].startswith("failing")
        assert (await client.get("/health/live")).status_code == 200


async def test_redis_down_lets_requests_through_and_stays_ready(settings: Settings, upstreams: dict[str, str]) -> None:
    conf = gateway_settings(settings, upstreams, redis_url=f"redis://127.0.0.1:{free_port()}/0", rate_limit_per_s=5)
    async with api_client(create_app(conf)) as client:
        assert (await client.get("/api/eventos")).status_code == 200
        ready = await client.get("/health/ready")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        assert ready.json()["checks"]["redis"].startswith("failing")


async def test_the_issuers_public_keys_are_routed_to_the_users_service(gateway: httpx.AsyncClient) -> None:
    seen = (await gateway.get("/.well-known/jwks.json")).json()
    assert (seen["service"], seen["raw_path"]) == ("users", "/.well-known/jwks.json")


async def test_the_bearer_token_goes_through_untouched_and_no_identity_is_added(gateway: httpx.AsyncClient) -> None:
    """Every service verifies the token itself: the gateway must neither vouch for a caller nor let a client do it."""
    forged_identity = {"x-user-id": "admin", "x-usuario-id": "u1", "x-forwarded-user": "u1", "x-roles": "admin"}
    token = {"authorization": "Bearer aaa.bbb.ccc"}
    seen = (await gateway.get("/api/eventos", headers={**token, **forged_identity})).json()["headers"]
    assert seen["authorization"] == token["authorization"]
    aiohttp_own = {"host", "user-agent", "accept", "accept-encoding", "content-length", "content-type"}
    assert set(seen) <= aiohttp_own | {"authorization", "x-request-id", "x-forwarded-for", "traceparent"}, seen
    anonymous = (await gateway.get("/api/eventos", headers=forged_identity)).json()["headers"]
    assert "authorization" not in anonymous


@pytest.mark.parametrize(
    "path", ["/metrics", "/health/metrics", "/api/reservas/../../metrics", "/api/reservas/%2e%2e/%2e%2e/metrics"]
)
async def test_internal_endpoints_are_never_forwarded(gateway: httpx.AsyncClient, path: str) -> None:
    """A service's /metrics stays on its own port (for the scraper): the public port forwards only the API. (The
    gateway may answer a /metrics of its own, guarded by eventflow.metrics; no upstream is asked.)"""
    url = httpx.URL("http://testserver").copy_with(raw_path=path.encode())
    response = await gateway.get(url)
    assert '"service"' not in response.text, "an upstream was asked"
    if response.status_code != 200:
        assert_problem(response, 404)


async def test_a_client_signs_in_and_is_recognized_through_the_gateway(settings: Settings) -> None:
    """The real users service behind the gateway: the token endpoint, the JWKS, and a bearer-protected route."""
    from services.users.bootstrap import create_app as users_app

    async with serve(users_app(settings)) as users_url:
        conf = gateway_settings(settings, {"users": users_url}, gateway_upstreams="users")
        async with api_client(create_app(conf)) as client:
            cuenta = await registrar(client)
            jwks = await client.get("/.well-known/jwks.json")
            assert jwks.status_code == 200 and jwks.json()["keys"]
            me = await client.get("/api/usuarios/me", headers=cuenta.headers)
            assert (me.status_code, me.json()["id"]) == (200, cuenta.id)
            anonymous = await client.get("/api/usuarios/me")
            assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Bearer")
            refreshed = await client.post("/api/auth/refresh", json={"refresh_token": cuenta.refresh_token})
            assert refreshed.status_code == 200 and refreshed.headers["cache-control"] == "no-store"


@asynccontextmanager
async def behind_one_nat(settings: Settings, **limits: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Cuenta, Cuenta]]:
    """Two buyers of the real users service, and a gateway with these limits whose every call comes from one
    address (a NAT of its own per test)."""
    from services.users.bootstrap import create_app as users_app

    async with serve(users_app(settings)) as users_url:
        async with httpx.AsyncClient(base_url=users_url) as users:
            ana, beto = await registrar(users), await registrar(users)
        conf = gateway_settings(
            settings, {"users": users_url}, gateway_upstreams="users", trust_forwarded_for=True, **limits
        )
        async with api_client(create_app(conf)) as client:
            client.headers["x-forwarded-for"] = f"10.2.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"
            yield client, ana, beto


async def test_signed_in_callers_are_limited_per_account_and_anonymous_ones_per_address(settings: Settings) -> None:
    """Issue 12: many buyers behind one address (a NAT) each get their own bucket; an anonymous caller, or one
    whose token does not verify (a forged `sub` too), is counted against the address."""
    limits = {"rate_limit_per_s": 0.01, "rate_limit_burst": 2, "rate_limit_account_per_s": 0.01}
    async with behind_one_nat(settings, **limits, rate_limit_account_burst=3) as (client, ana, beto):

        async def me(headers: dict[str, str] | None = None) -> httpx.Response:
            return await client.get("/api/usuarios/me", headers=headers)

        for _ in range(3):
            assert (await me(ana.headers)).status_code == 200
        limited = await me(ana.headers)
        assert assert_problem(limited, 429)["detail"].endswith("per account exceeded.")
        assert (await me(beto.headers)).status_code == 200, "another account behind the same address"

        for _ in range(2):
            assert (await me()).status_code == 401  # anonymous: through the limit, refused by the service
        assert assert_problem(await me(), 429)["detail"].endswith("per client exceeded.")

        header, body, signature = beto.token.split(".")
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        for sub in (beto.id, str(uuid.uuid4())):
            forged_body = base64.urlsafe_b64encode(json.dumps({**claims, "sub": sub}).encode()).rstrip(b"=")
            forged = f"{header}.{forged_body.decode()}.{signature}"
            assert (await me({"Authorization": f"Bearer {forged}"})).status_code == 429, "counted by address"
        assert [(await me(beto.headers)).status_code for _ in range(3)] == [200, 200, 429], (
            "the forged tokens took nothing from the account (its 2nd and 3rd of 3, then refused)"
        )


async def test_signed_in_calls_are_bounded_per_address_too(settings: Settings) -> None:
    """One address cannot spend without bound by cycling accounts: its signed-in calls share a per-address bucket."""
    limits = {"rate_limit_signed_in_per_s": 0.01, "rate_limit_signed_in_burst": 3}
    async with behind_one_nat(settings, **limits) as (client, ana, beto):
        statuses = [(await client.get("/api/usuarios/me", headers=c.headers)).status_code for c in (ana, ana, beto)]
        assert statuses == [200, 200, 200]
        limited = await client.get("/api/usuarios/me", headers=beto.headers)
        assert assert_problem(limited, 429)["detail"] == "Rate limit of 0.01 requests/s per client exceeded."
        elsewhere = {"x-forwarded-for": f"10.4.{uuid.uuid4().int % 250}.1", **beto.headers}
        assert (await client.get("/api/usuarios/me", headers=elsewhere)).status_code == 200


async def test_anonymous_reads_of_an_events_public_document_are_served_from_a_short_lived_copy(
    settings: Settings, upstreams: dict[str, str]
) -> None:
    """The echo's body carries the request id the upstream saw: the same id twice means the second reader got
    the gateway's copy, a new one that the upstream was asked again."""
    async with api_client(create_app(gateway_settings(settings, upstreams, gateway_cache_s=60))) as client:

        async def seen(path: str, **headers: str) -> str:
            response = await client.get(path, headers=headers)
            assert response.status_code == 200
            return str(response.json()["headers"]["x-request-id"])

        public = f"/api/eventos/{uuid.uuid4().hex}?cache=public,max-age=5"
        first = await seen(public)
        assert await seen(public) == first, "served from the copy"
        assert await seen(public, authorization="Bearer x") != first, "never for a request with a token"
        assert await seen(public, accept="text/plain") != first, "another Accept is another copy"
        revalidated = await client.get(public, headers={"if-none-match": ETAG})
        assert revalidated.status_code == 304 and revalidated.headers["etag"] == ETAG
        for not_shared in ("max-age=5", "public,no-cache,max-age=5", "private,max-age=5", "public"):
            path = f"/api/eventos/{uuid.uuid4().hex}?cache={not_shared}"
            assert await seen(path) != await seen(path), f"{not_shared} is not kept"
        listing = f"/api/eventos?organizador_id={uuid.uuid4().hex}&cache=public,max-age=5"
        assert await seen(listing) != await seen(listing), "a listing is not kept (read-your-writes)"
        missing = f"/api/eventos/{uuid.uuid4().hex}?cache=public,max-age=5&status=404"
        ids = [(await client.get(missing)).json()["headers"]["x-request-id"] for _ in range(2)]
        assert ids[0] != ids[1], "only a 200 is kept"


def test_a_copy_is_kept_no_longer_than_the_gateway_allows_nor_than_its_max_age() -> None:
    from fastapi import Response
    from starlette.requests import Request

    from services.gateway.cache import PublicCache

    now = [1000.0]
    cache = PublicCache(ttl_s=1.0, clock=lambda: now[0])
    request = Request({"type": "http", "method": "GET", "path": "/api/eventos/e1", "query_string": b"", "headers": []})
    for key, max_age, lasts in (("short", "0.5", 0.5), ("long", "5", 1.0)):
        cache.keep(key, Response(b"{}", headers={"cache-control": f"public, max-age={max_age}"}))
        now[0] += lasts - 0.01
        assert cache.answer(key, request) is not None
        now[0] += 0.02
        assert cache.answer(key, request) is None
