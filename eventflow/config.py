"""One validated settings object per process, read from EVENTFLOW_* environment variables."""

from __future__ import annotations

import base64
import binascii
from functools import cached_property

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "secret", "test", "placeholder"}


def _decode_key(value: str, name: str) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{name} must be base64") from None
    if len(raw) != 32:
        raise ValueError(f"{name} must decode to 32 bytes (AES-256 / HMAC-SHA256)")
    return raw


class Settings(BaseSettings):
    """Refuses to start with missing or placeholder secrets: personal data depends on them."""

    model_config = SettingsConfigDict(env_prefix="EVENTFLOW_", extra="ignore")

    nats_url: str = "nats://127.0.0.1:14222"
    redis_url: str = "redis://127.0.0.1:16379/0"
    # Replicas of every stream and bucket: 1 on one machine, 3 on a cluster.
    replicas: int = Field(default=1, ge=1, le=5)

    master_key: str = Field(default="", repr=False)
    master_key_id: str = "k1"
    pseudonym_key: str = Field(default="", repr=False)

    users_url: str = "http://127.0.0.1:8001"
    events_url: str = "http://127.0.0.1:8002"
    reservations_url: str = "http://127.0.0.1:8003"

    # How long a write waits for its own projection (read-your-writes) before answering anyway.
    read_your_writes_timeout: float = Field(default=2.0, ge=0)
    log_level: str = "INFO"

    # Tokens (eventflow.auth): ours are ES256 JWTs issued by the users service, at most 15 minutes long.
    auth_issuer: str = "https://eventflow.local"
    auth_audience: str = "eventflow"
    access_token_ttl_s: int = Field(default=900, ge=30, le=900)
    signing_key_rotation_s: float = Field(default=86_400.0, ge=60)
    # This service's own credential for calls to the others (client credentials at the token endpoint).
    client_id: str | None = None
    client_secret: str | None = Field(default=None, repr=False)
    # An external OpenID Connect provider whose tokens are accepted too (Keycloak, Auth0, ...): its issuer,
    # audience, JWKS (default: discovered from the issuer), the claim holding its roles ("realm_access.roles"
    # for Keycloak) and how its role names map to ours ("door:control,organizer:organizador").
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_jwks_url: str | None = None
    oidc_roles_claim: str = "roles"
    oidc_role_map: str = ""

    # The users service only (the token issuer): the key that checks services' client credentials
    # (eventflow.system.client_secret), the first admin (a repeated start with the same values changes
    # nothing), and how passwords are hashed (services/users/contrasenas.py; "test" is for test suites only).
    service_key: str | None = Field(default=None, repr=False)
    admin_email: str | None = None
    admin_password: str | None = Field(default=None, repr=False)
    password_hash_profile: str = "owasp"
    # Peers whose X-Forwarded-For names the client (our gateway): the sign-in throttle counts per client address.
    trusted_proxies: str = "127.0.0.1,::1"

    @field_validator("password_hash_profile")
    @classmethod
    def _known_profile(cls, value: str) -> str:
        if value not in ("owasp", "rfc9106-low-memory", "test"):
            raise ValueError("EVENTFLOW_PASSWORD_HASH_PROFILE must be owasp, rfc9106-low-memory or test")
        return value

    @cached_property
    def service_key_bytes(self) -> bytes | None:
        return _decode_key(self.service_key, "EVENTFLOW_SERVICE_KEY") if self.service_key else None

    def oidc_roles(self) -> dict[str, str]:
        pairs = (item.split(":", 1) for item in self.oidc_role_map.split(",") if ":" in item)
        return {theirs.strip(): ours.strip() for theirs, ours in pairs}

    @field_validator("master_key", "pseudonym_key")
    @classmethod
    def _refuse_placeholders(cls, value: str, info: object) -> str:
        name = getattr(info, "field_name", "key")
        if value.strip().lower() in PLACEHOLDER_SECRETS:
            raise ValueError(f"EVENTFLOW_{name.upper()} is missing or a placeholder")
        _decode_key(value, f"EVENTFLOW_{name.upper()}")
        return value

    @cached_property
    def master_key_bytes(self) -> bytes:
        return _decode_key(self.master_key, "EVENTFLOW_MASTER_KEY")

    @cached_property
    def pseudonym_key_bytes(self) -> bytes:
        return _decode_key(self.pseudonym_key, "EVENTFLOW_PSEUDONYM_KEY")
