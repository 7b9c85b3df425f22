"""A tiny external OpenID Connect issuer for tests: its own ES256 key, its JWKS and its discovery document served
over real HTTP (uvicorn on a free port, in the test's event loop), and tokens it signs the way Keycloak does
(roles under `realm_access.roles`)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI
from joserfc import jwt
from joserfc.jwk import ECKey

from eventflow.servers import free_port


@dataclass
class Issuer:
    url: str
    audience: str
    key: ECKey = field(default_factory=lambda: ECKey.generate_key("P-256", parameters={"kid": uuid.uuid4().hex[:8]}))
    fetched: list[str] = field(default_factory=list)  # the paths verifiers asked for

    def token(self, sub: str, roles: list[str], **claims: Any) -> str:
        now = int(time.time())
        body = {
            "iss": self.url,
            "aud": self.audience,
            "sub": sub,
            "iat": now,
            "exp": now + 300,
            "realm_access": {"roles": roles},
            "sid": uuid.uuid4().hex,  # OIDC's own session id: means nothing to us
            **claims,
        }
        return jwt.encode({"alg": "ES256", "kid": self.key.kid, "typ": "JWT"}, body, self.key, algorithms=["ES256"])

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/.well-known/openid-configuration")
        async def discovery() -> dict[str, Any]:
            self.fetched.append("discovery")
            return {"issuer": self.url, "jwks_uri": f"{self.url}/protocol/openid-connect/certs"}

        @app.get("/protocol/openid-connect/certs")
        async def certs() -> dict[str, Any]:
            self.fetched.append("jwks")
            return {"keys": [{**self.key.as_dict(private=False), "alg": "ES256", "use": "sig"}]}

        return app


@asynccontextmanager
async def serving(audience: str = "eventflow-externo") -> AsyncIterator[Issuer]:
    port = free_port()
    issuer = Issuer(f"http://127.0.0.1:{port}/realms/pruebas", audience)
    root = FastAPI()
    root.mount("/realms/pruebas", issuer.app())
    config = uvicorn.Config(root, host="127.0.0.1", port=port, log_config=None, lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield issuer
    finally:
        server.should_exit = True
        await task
