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
