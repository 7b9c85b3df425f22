"""Who is calling: bearer-token verification that every service does for itself, and the FastAPI dependencies
that say who may call a route.

Every service verifies the token on its own (its port is reachable inside the cluster, so no identity header a
client could send is ever trusted): the signature against the issuer's public keys, `iss`, `aud`, `exp` and
`iat`, and only the algorithms we accept (never `none`). Two kinds of issuer are trusted:
- ours: the users service signs with ES256; the public keys (JWKS) come from a KV bucket every service watches,
  so a rotated-in key is known everywhere within a round trip, and a retired one is dropped when its tokens can
  no longer be valid;
- optionally an external OpenID Connect provider (Keycloak, Auth0, ...): its JWKS over HTTP, and its roles
  mapped from a claim of its choosing (`EVENTFLOW_OIDC_*`).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol

import aiohttp
import orjson
from fastapi import Depends, Request
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from eventflow.errors import DomainError

log = logging.getLogger(__name__)

COMPRADOR, ORGANIZADOR, CONTROL, ADMIN = "comprador", "organizador", "control", "admin"
ROLES = (COMPRADOR, ORGANIZADOR, CONTROL, ADMIN)
SERVICIO = "servicio"  # the role of a service's own credential (client credentials), never a person's
ALGORITHMS = ("ES256",)
LEEWAY_S = 30  # clock skew between the issuer and us


class NoAutenticado(DomainError):
    """401: no token, or one that does not verify. The answer carries `WWW-Authenticate: Bearer`."""

    status, slug, title = 401, "unauthenticated", "Authentication required"

    def __init__(self, detail: str = "A valid bearer token is required.", error: str = "invalid_token") -> None:
        super().__init__(detail)
        self.headers = {"WWW-Authenticate": f'Bearer realm="eventflow", error="{error}"'}


class ClaveDesconocida(NoAutenticado):
    """401 because the token names a key id its issuer's keys do not hold (yet): after a rotation, or while the
    keys cannot be fetched, a genuine token fails this way, so it must not be remembered as forged."""


class Prohibido(DomainError):
    status, slug, title = 403, "forbidden", "Forbidden"


@dataclass(frozen=True)
class Principal:
    """The verified caller: a person (`sub` is their usuario_id) or a service (`sub` is `svc:<name>`)."""

    sub: str
    roles: frozenset[str]
    issuer: str
    token_id: str = ""
    expires_at: float = 0.0
    session_id: str | None = None  # our tokens' `sid`: the sign-in session (refresh-token family) behind it

    def tiene(self, *roles: str) -> bool:
        return any(role in self.roles for role in roles)

    @property
    def es_admin(self) -> bool:
        return ADMIN in self.roles

    @property
    def es_servicio(self) -> bool:
        return SERVICIO in self.roles


class KeySource(Protocol):
    """The public keys of one issuer; `refresh` is asked when a token names a key id we do not know."""

    def keyset(self) -> KeySet: ...
    async def refresh(self) -> None: ...


@dataclass
class TrustedIssuer:
    issuer: str
    audience: str
    keys: KeySource
    # Where the roles are in this issuer's tokens ("roles", or "realm_access.roles" for Keycloak), and how its
    # role names map to ours (unmapped names are dropped; everyone signed in is a comprador).
    roles_claim: str = "roles"
    local: bool = False  # our own issuer: its `sub` is a usuario_id and its `sid` one of our sessions
    role_map: Mapping[str, str] = field(default_factory=lambda: {r: r for r in (*ROLES, SERVICIO)})


class TokenVerifier:
    """Verifies tokens; remembers the tokens it verified (bounded, `cache_size`), because a buyer sends the same
    token on every request and an ES256 verification was 8 % of the reservations service's CPU (py-spy). A cached
    answer is given only while the token is unexpired and its issuer's keys are the very keyset it verified
    against (every key source replaces its KeySet when a key rotates in or out), so it is the answer a fresh
    verification would give."""

    def __init__(
        self, issuers: Iterable[TrustedIssuer], clock: Callable[[], float] = time.time, cache_size: int = 10_000
    ) -> None:
        self.issuers = {issuer.issuer: issuer for issuer in issuers}
        self.clock = clock
        self.cache_size = cache_size
        self._verified: OrderedDict[str, tuple[Principal, KeySet]] = OrderedDict()

    async def verify(self, token: str) -> Principal:
        cached = self._verified.get(token)
        if cached is not None:
            principal, keyset = cached
            issuer = self.issuers.get(principal.issuer)
            if issuer is not None and issuer.keys.keyset() is keyset and self.clock() < principal.expires_at + LEEWAY_S:
                self._verified.move_to_end(token)
                return principal
            del self._verified[token]
        issuer = self.issuers.get(str(_unverified_claims(token).get("iss")))
        if issuer is None:
            raise NoAutenticado("The token's issuer is not trusted.")
        principal, keyset = await self._verify(token, issuer)
        if self.cache_size:
            self._verified[token] = (principal, keyset)
            while len(self._verified) > self.cache_size:
                self._verified.popitem(last=False)
        return principal

    async def _verify(self, token: str, issuer: TrustedIssuer) -> tuple[Principal, KeySet]:
        """The caller, and the keyset that verified the signature."""
        claims, keyset = await self._verified_claims(token, issuer)
        now = self.clock()
        registry = jwt.JWTClaimsRegistry(
            now=int(now),
            leeway=LEEWAY_S,
            iss={"essential": True, "value": issuer.issuer},
            aud={"essential": True, "value": issuer.audience},
            exp={"essential": True},
            sub={"essential": True},
        )
        try:
            registry.validate(claims)
        except JoseError as err:
            raise NoAutenticado(f"The token is not valid here ({err.error}).") from None
        if "iat" in claims and float(claims["iat"]) > now + LEEWAY_S:
            raise NoAutenticado("The token was issued in the future.")
        roles = _mapped_roles(claims, issuer)
        if not str(claims["sub"]).startswith("svc:"):
            roles.add(COMPRADOR)  # every person signed in may buy
        caller = Principal(
            sub=str(claims["sub"]),
            roles=frozenset(roles),
            issuer=issuer.issuer,
            token_id=str(claims.get("jti", "")),
            expires_at=float(claims["exp"]),
            session_id=str(claims["sid"]) if claims.get("sid") and issuer.local else None,
        )
        return caller, keyset

    async def _verified_claims(self, token: str, issuer: TrustedIssuer) -> tuple[dict[str, Any], KeySet]:
        for attempt in (1, 2):
            keyset = issuer.keys.keyset()
            try:
                return dict(jwt.decode(token, keyset, algorithms=list(ALGORITHMS)).claims), keyset
            except JoseError as err:
                if err.error == "invalid_key_id":
                    if attempt == 1:
                        await issuer.keys.refresh()  # a key rotated in since we last looked
                        continue
                    raise ClaveDesconocida("The token is signed with a key this issuer does not have.") from None
                raise NoAutenticado("The token's signature does not verify.") from None
        raise AssertionError("unreachable")


def _unverified_claims(token: str) -> dict[str, Any]:
    """The claims as the token states them, before any check: only to pick the issuer whose keys verify it."""
    parts = token.split(".")
    if len(parts) != 3:
        raise NoAutenticado("The token is not a signed JWT.")
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        raise NoAutenticado("The token is malformed.") from None
    if not isinstance(claims, dict):
        raise NoAutenticado("The token is malformed.")
    return claims


def _mapped_roles(claims: Mapping[str, Any], issuer: TrustedIssuer) -> set[str]:
    value: Any = claims
    for part in issuer.roles_claim.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    names = value if isinstance(value, list) else []
    return {issuer.role_map[name] for name in names if isinstance(name, str) and name in issuer.role_map}


# -- key sources -------------------------------------------------------------------------------------
class StaticKeys:
    """A fixed JWKS (tests, or an issuer whose keys are configured rather than fetched)."""

    def __init__(self, jwks: Mapping[str, Any]) -> None:
        self._keyset = KeySet.import_key_set(dict(jwks))  # type: ignore[arg-type]

    def keyset(self) -> KeySet:
        return self._keyset

    async def refresh(self) -> None:
        return None


# Unreachable, slow, or answering what is not a key set (not JSON, the wrong shape, nested too deep, no keys).
_KEY_SERVER_FAULTS = (aiohttp.ClientError, TimeoutError, ValueError, LookupError, TypeError, RecursionError, JoseError)


class HttpJwks:
    """An external issuer's JWKS over HTTP, refreshed at most every `min_refresh_s`. Without `url` it is
    discovered from the issuer's `/.well-known/openid-configuration` (`jwks_uri`) at the first refresh."""

    def __init__(
        self, session: aiohttp.ClientSession, url: str | None, issuer: str = "", min_refresh_s: float = 30.0
    ) -> None:
        self.session, self.url, self.issuer, self.min_refresh_s = session, url, issuer, min_refresh_s
        self._keyset = KeySet([])
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    def keyset(self) -> KeySet:
        return self._keyset

    async def refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self._fetched_at < self.min_refresh_s and self._keyset.keys:
                return
            try:
                if self.url is None:
                    discovery = f"{self.issuer.rstrip('/')}/.well-known/openid-configuration"
                    async with self.session.get(discovery) as resp:
                        resp.raise_for_status()
                        self.url = str((await resp.json())["jwks_uri"])
                async with self.session.get(self.url) as resp:
                    resp.raise_for_status()
                    self._keyset = KeySet.import_key_set(await resp.json())  # an empty set raises too
                self._fetched_at = time.monotonic()
            except _KEY_SERVER_FAULTS as err:
                log.warning("could not fetch a JWKS", extra={"url": self.url, "error": type(err).__name__})


# -- FastAPI dependencies ------------------------------------------------------------------------------
def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def principal_opcional(request: Request) -> Principal | None:
    """The caller if they sent a token (which must then verify), else None (anonymous)."""
    token = bearer_token(request)
    if token is None:
        return None
    verifier: TokenVerifier = request.app.state.verifier
    return await verifier.verify(token)


async def principal(request: Request) -> Principal:
    found = await principal_opcional(request)
    if found is None:
        raise NoAutenticado("Sign in first: send Authorization: Bearer <access_token>.", error="invalid_request")
    return found


def con_rol(*roles: str) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency: a signed-in caller holding one of `roles` (else 403)."""

    async def check(caller: Annotated[Principal, Depends(principal)]) -> Principal:
        if not caller.tiene(*roles):
            raise Prohibido(f"This needs the role {' or '.join(roles)}.")
        return caller

    return check


Caller = Annotated[Principal, Depends(principal)]
MaybeCaller = Annotated[Principal | None, Depends(principal_opcional)]
