"""A service's own access token (client credentials at the users service's token endpoint), for its calls to the
other services: they verify it like any token, so no call between services goes through a bypass.

The token is cached until shortly before it expires; concurrent callers share one fetch; a call answered 401 (the
token was refused, say after the issuer rotated its keys and dropped ours early) gets a fresh token and one retry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from eventflow.http import get_json

log = logging.getLogger(__name__)
MAX_EARLY_S = 60.0  # renew this long before expiry at most (a fifth of the lifetime for short tokens)


class ServiceTokenError(Exception):
    """No token could be had: the users service is unreachable, or it refused our credential."""


class ServiceToken:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        users_url: str,
        client_id: str,
        client_secret: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.session = session
        self.token_url = f"{users_url.rstrip('/')}/api/auth/token"
        self.client_id, self._secret = client_id, client_secret
        self.clock = clock
        self._token: str | None = None
        self._renew_at = 0.0
        self._lock = asyncio.Lock()
        self.fetches = 0  # how many times the token endpoint was asked (observability, tests)

    async def token(self) -> str:
        if self._token is not None and self.clock() < self._renew_at:
            return self._token
        async with self._lock:  # callers that queue here find the token the first one fetched
            if self._token is None or self.clock() >= self._renew_at:
                self._token, self._renew_at = await self._fetch()
            token: str = self._token
            return token

    def invalidate(self, token: str) -> None:
        """Forget `token` (a service refused it); a newer one fetched meanwhile is kept."""
        if self._token == token:
            self._token = None

    async def get_json(self, url: str) -> tuple[int, Any]:
        """GET with our token; a 401 is retried once with a fresh token."""
        for attempt in (1, 2):
            token = await self.token()
            status, body = await get_json(self.session, url, {"Authorization": f"Bearer {token}"})
            if status != 401 or attempt == 2:
                return status, body
            log.warning("our service token was refused; fetching a new one", extra={"url": url})
            self.invalidate(token)
        raise AssertionError("unreachable")

    async def _fetch(self) -> tuple[str, float]:
        body = {"grant_type": "client_credentials", "client_id": self.client_id, "client_secret": self._secret}
        self.fetches += 1
        try:
            async with self.session.post(self.token_url, json=body) as resp:
                answer = await resp.json(content_type=None)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as err:
            raise ServiceTokenError(f"the token endpoint did not answer ({type(err).__name__})") from None
        if status != 200 or not isinstance(answer, dict) or "access_token" not in answer:
            log.error("the token endpoint refused our client credential", extra={"status": status})
            raise ServiceTokenError(f"the token endpoint answered {status}")
        lifetime = float(answer.get("expires_in", 0))
        return str(answer["access_token"]), self.clock() + lifetime - min(MAX_EARLY_S, lifetime / 5)
