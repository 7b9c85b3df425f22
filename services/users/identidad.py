"""Service layer of sign-in: tokens for a password, a refresh token or a service's client credential; sign-out;
password change; roles; and the first admin.

Access tokens are short-lived ES256 JWTs (`sub` = usuario_id, `roles`, `sid` = the session family) that every
service verifies by itself (eventflow.auth). The session behind the refresh token lives on the CP side
(sesiones.py), so signing out or changing the password ends it on every replica at once; an access token
already issued lives on until it expires (at most 15 minutes), as with any bearer token.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from joserfc.jws import extract_compact
from nats.js.errors import KeyWrongLastSequenceError

from eventflow.auth import ADMIN, SERVICIO, NoAutenticado, Principal, Prohibido
from eventflow.claims import UniquenessClaims
from eventflow.contracts import USUARIO_BORRADO, USUARIO_REGISTRADO
from eventflow.crypto import Pseudonymizer
from eventflow.errors import Conflict, DomainError, Unprocessable
from eventflow.signing_keys import PublishedKeys, SigningKeys
from eventflow.system import client_secret
from services.users import contrasenas
from services.users.contrasenas import Hasher
from services.users.cuentas import Cuenta, Cuentas, roles_validos
from services.users.domain import UsuarioNoEncontrado, es_id
from services.users.sesiones import Sesiones
from services.users.throttle import SignInThrottle

log = logging.getLogger(__name__)
SERVICES = ("events", "reservations", "gateway")  # the client ids that may ask for a service token


class CredencialesInvalidas(NoAutenticado):
    """One answer for a wrong password and an unknown email: which one it was is not revealed."""

    slug, title = "invalid-credentials", "Invalid credentials"

    def __init__(self) -> None:
        super().__init__("The email or the password is not right.", error="invalid_grant")


class DemasiadosIntentos(DomainError):
    status, slug, title = 429, "too-many-sign-in-attempts", "Too many sign-in attempts"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"Too many failed sign-ins; try again in {retry_after_s} s.", retry_after_s=retry_after_s)
        self.headers = {"Retry-After": str(retry_after_s)}


class PasswordInvalida(Unprocessable):
    slug, title = "validation", "Validation failed"

    def __init__(self, problems: list[contrasenas.Problema], field: str = "nueva") -> None:
        errors = [{"field": field, "message": p.message, "code": p.code} for p in problems]
        super().__init__("The new password breaks the rules listed in `errors`.", errors=errors)


class EventLog(Protocol):
    async def load(self, aggregate_id: str) -> tuple[list[Any], int]: ...


@dataclass(frozen=True)
class Tokens:
    access_token: str
    expires_in: int
    refresh_token: str | None = None

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
        }
        if self.refresh_token is not None:
            body["refresh_token"] = self.refresh_token
        return body


@dataclass
class Emisor:
    """Signs our access tokens (the claims every service checks: iss, aud, sub, exp, iat, jti, roles)."""

    keys: SigningKeys
    issuer: str
    audience: str
    ttl_s: int
    clock: Callable[[], float] = time.time
    # This process's own verifier and JWKS: told at once when we sign with a key it has not loaded yet (a
    # rotation), instead of refusing our own fresh token until its next refresh (at most once a second).
    published: PublishedKeys | None = None

    async def acceso(self, sub: str, roles: tuple[str, ...], sid: str | None = None) -> tuple[str, int]:
        now = int(self.clock())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": sub,
            "roles": list(roles),
            "iat": now,
            "exp": now + self.ttl_s,
            "jti": uuid.uuid4().hex,
        }
        if sid is not None:
            claims["sid"] = sid
        token = await self.keys.sign(claims)
        if self.published is not None:
            kid = extract_compact(token.encode()).protected.get("kid")
            if all(key.kid != kid for key in self.published.keyset().keys):
                await self.published.refresh(force=True)
        return token, self.ttl_s


@dataclass
class Identidad:
    cuentas: Cuentas
    sesiones: Sesiones
    emisor: Emisor
    hasher: Hasher
    throttle: SignInThrottle
    claims: UniquenessClaims
    pseudonyms: Pseudonymizer
    usuarios: EventLog
    service_key: str | None = None  # base64, as in EVENTFLOW_SERVICE_KEY


async def iniciar_sesion(email: str, password: str, address: str, deps: Identidad) -> Tokens:
    """A password for tokens. The same work whether or not the account exists (a dummy hash is verified)."""
    account_key = deps.pseudonyms.pseudonym("email", email)
    if wait := await deps.throttle.retry_after(account_key, address):
        raise DemasiadosIntentos(wait)
    claim = await deps.claims.get(account_key)
    cuenta = await deps.cuentas.get(claim.owner) if claim is not None else None
    ok = await deps.hasher.verify(cuenta.hash if cuenta else None, password)
    if not ok or cuenta is None or not await _exists(cuenta.usuario_id, deps):
        await deps.throttle.failed(account_key, address)
        raise CredencialesInvalidas()
    await deps.throttle.succeeded(account_key, address)
    if deps.hasher.needs_rehash(cuenta.hash):  # the profile was raised since this password was set
        await _save_quietly(deps, cuenta.con(hash=await deps.hasher.hash(password)))
    sesion = await deps.sesiones.abrir(cuenta.usuario_id)
    token, ttl = await deps.emisor.acceso(cuenta.usuario_id, cuenta.roles, sesion.familia)
    log.info("signed in", extra={"usuario_id": cuenta.usuario_id})
    return Tokens(token, ttl, sesion.refresh_token)


async def renovar(refresh_token: str, deps: Identidad) -> Tokens:
    """A new pair; the roles are read again, so a role change applies from the next refresh."""
    sesion = await deps.sesiones.rotar(refresh_token)
    cuenta = await deps.cuentas.get(sesion.usuario_id)
    if cuenta is None:  # erased since
        await deps.sesiones.cerrar(sesion.refresh_token)
        raise NoAutenticado("This account no longer exists.")
    token, ttl = await deps.emisor.acceso(cuenta.usuario_id, cuenta.roles, sesion.familia)
    return Tokens(token, ttl, sesion.refresh_token)


async def cerrar_sesion(refresh_token: str, deps: Identidad) -> None:
    usuario_id = await deps.sesiones.cerrar(refresh_token)
    log.info("signed out", extra={"usuario_id": usuario_id})


async def cambiar_password(
    caller: Principal, actual: str, nueva: str, sid: str | None, deps: Identidad, personal: tuple[str, ...] = ()
) -> int:
    """Needs the current password; ends every other session of the user. Returns how many were ended. `personal`:
    the user's email and names, which the new password must not contain (as at registration)."""
    cuenta = await _account_of(caller, deps)
    if not await deps.hasher.verify(cuenta.hash, actual):
        raise CredencialesInvalidas()
    if problems := contrasenas.problemas(nueva, *personal):
        raise PasswordInvalida(problems)
    try:
        await deps.cuentas.guardar(cuenta.con(hash=await deps.hasher.hash(nueva)))
    except KeyWrongLastSequenceError:
        raise Conflict("The account changed meanwhile; try again.") from None
    ended = await deps.sesiones.cerrar_todas(cuenta.usuario_id, salvo=sid)
    log.info("password changed", extra={"usuario_id": cuenta.usuario_id, "sessions_ended": ended})
    return ended


async def asignar_roles(caller: Principal, usuario_id: str, roles: list[str], deps: Identidad) -> Cuenta:
    if not caller.es_admin:
        raise Prohibido("Only an admin assigns roles.")
    try:
        wanted = roles_validos(roles)
    except ValueError as err:
        raise Unprocessable(
            str(err), errors=[{"field": "roles", "message": str(err), "code": "unknown_role"}]
        ) from None
    if usuario_local(caller, deps) == usuario_id and ADMIN not in wanted:
        raise Unprocessable("An admin cannot take the admin role away from themselves (ask another admin).")
    while True:
        cuenta = await deps.cuentas.get(usuario_id) if es_id(usuario_id) else None
        if cuenta is None:
            raise UsuarioNoEncontrado(usuario_id)
        try:
            saved = await deps.cuentas.guardar(cuenta.con(roles=wanted))
        except KeyWrongLastSequenceError:
            continue  # changed meanwhile (a password change): apply the roles to what is there now
        log.info("roles changed", extra={"usuario_id": usuario_id, "roles": list(wanted), "by": caller.sub})
        return saved


async def token_de_servicio(client_id: str, secret: str, deps: Identidad) -> Tokens:
    """Client credentials: a service's own token (`sub` svc:<name>, role servicio), no refresh token."""
    if deps.service_key is None or client_id not in SERVICES:
        raise CredencialesInvalidas()
    expected = client_secret(deps.service_key, client_id)
    if not hmac.compare_digest(expected.encode(), secret.encode()):
        raise CredencialesInvalidas()
    token, ttl = await deps.emisor.acceso(f"svc:{client_id}", (SERVICIO,))
    return Tokens(token, ttl)


async def asegurar_admin(email: str, password: str, deps: Identidad, registrar: Callable[[], Awaitable[str]]) -> str:
    """The first admin, at every start: registered if missing or half-registered (`registrar`, idempotent: it
    finishes what a start that died midway began), given the admin role if it lacks it, and its password set to
    the configured one only if that one does not verify already. So a repeated start with the same values
    changes nothing.

    Setting the password ends every session of the account: whoever held it before (someone who registered that
    email first) must not refresh their way to an admin token."""
    claim = await deps.claims.get(deps.pseudonyms.pseudonym("email", email))
    usuario_id = claim.owner if claim is not None else None
    if usuario_id is None or await deps.cuentas.get(usuario_id) is None or not await _exists(usuario_id, deps):
        usuario_id = await registrar()
    while True:
        cuenta = await deps.cuentas.get(usuario_id)
        if cuenta is None:
            raise RuntimeError(f"the admin account {email} has no credentials")
        changed = cuenta
        if ADMIN not in cuenta.roles:
            changed = changed.con(roles=roles_validos([*cuenta.roles, ADMIN]))
        reset = not await deps.hasher.verify(cuenta.hash, password)
        if reset:
            changed = changed.con(hash=await deps.hasher.hash(password))
        if changed == cuenta:
            return usuario_id
        try:
            await deps.cuentas.guardar(changed)
        except KeyWrongLastSequenceError:
            continue  # another replica ensured it at the same moment
        ended = await deps.sesiones.cerrar_todas(usuario_id) if reset else 0
        log.info("first admin ensured", extra={"usuario_id": usuario_id, "sessions_ended": ended})
        return usuario_id


def usuario_local(caller: Principal, deps: Identidad) -> str | None:
    """The caller's usuario_id here, or None: only our own issuer's subjects are our users. An external issuer's
    `sub` names someone in its directory, whatever it looks like (a UUID may well equal one of our ids)."""
    return caller.sub if caller.issuer == deps.emisor.issuer and es_id(caller.sub) else None


async def _account_of(caller: Principal, deps: Identidad) -> Cuenta:
    usuario_id = usuario_local(caller, deps)
    if usuario_id is None:
        raise Prohibido("This caller has no password here (an external identity provider, or a service).")
    cuenta = await deps.cuentas.get(usuario_id)
    if cuenta is None:
        raise NoAutenticado("This account no longer exists.")
    return cuenta


async def _exists(usuario_id: str, deps: Identidad) -> bool:
    """In the log (the registration completed) and not erased, asked of the leader: a half-done registration, or
    a half-done erasure, signs no one in."""
    return await registrado_y_vigente(deps.usuarios, usuario_id)


async def registrado_y_vigente(usuarios: EventLog, usuario_id: str) -> bool:
    """Registered and not erased, by the user's events in the log (the leader's answer)."""
    if not es_id(usuario_id):
        return False
    events, _ = await usuarios.load(usuario_id)
    tipos = {e.type for e in events}
    return USUARIO_REGISTRADO in tipos and USUARIO_BORRADO not in tipos


async def _save_quietly(deps: Identidad, cuenta: Cuenta) -> None:
    with contextlib.suppress(KeyWrongLastSequenceError):  # changed meanwhile: rehashed at the next sign-in
        await deps.cuentas.guardar(cuenta)
