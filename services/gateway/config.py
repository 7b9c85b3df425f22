"""Gateway settings: the shared EVENTFLOW_* settings plus routing and rate-limit knobs."""

from __future__ import annotations

from pydantic import Field, field_validator

from eventflow.config import Settings


class GatewaySettings(Settings):
    # Which upstreams are deployed (the supervisor lists those it started); readiness checks only these.
    gateway_upstreams: str = "users,events,reservations"
    # Longer than the reservations service's bounded wait for a saga outcome.
    gateway_timeout: float = Field(default=30.0, gt=0)
    # Fetching an issuer's public keys (JWKS): a hung key server must not hold every new token's request for
    # gateway_timeout; on failure the last keys fetched stay in use.
    gateway_jwks_timeout: float = Field(default=2.0, gt=0)
    # Token buckets (services/gateway/ratelimit.py); a rate of 0 turns that limit off.
    # Anonymous calls (no token, or one that does not verify), per client address: large, since many people may
    # share one address (a NAT) and anonymous reads are cheap and cached.
    rate_limit_per_s: float = Field(default=5000.0, ge=0)
    rate_limit_burst: int = Field(default=10000, ge=1)
    # Signed-in calls, per account (the verified token's `sub`): what a person (or one account's bot) may do.
    rate_limit_account_per_s: float = Field(default=50.0, ge=0)
    rate_limit_account_burst: int = Field(default=100, ge=1)
    # Signed-in calls, per client address too (charged before the token's signature is checked): so one address
    # cannot spend without bound by cycling accounts or tokens, while a NAT full of buyers still gets 10x the
    # anonymous bound. Unset: 10x rate_limit_per_s / rate_limit_burst (so 0 there turns this off too); 0: off.
    rate_limit_signed_in_per_s: float | None = Field(default=None, ge=0)
    rate_limit_signed_in_burst: int | None = Field(default=None, ge=1)
    # Anonymous GETs of one event's document, marked `public, max-age`, are served from a copy at most
    # this old (services/gateway/cache.py); 0 turns the cache off.
    gateway_cache_s: float = Field(default=1.0, ge=0)
    # Only behind a proxy we run ourselves: otherwise any client could pick its own bucket.
    trust_forwarded_for: bool = False
    # Server-Sent Events relayed at once by one gateway process (each holds an upstream connection).
    max_streams: int = Field(default=1000, ge=1)
    # The web app lists the payment simulator's test cards on its checkout (the only processor there is).
    web_test_cards: bool = True

    @field_validator("master_key", "pseudonym_key")
    @classmethod
    def _refuse_placeholders(cls, value: str, info: object) -> str:
        """Least privilege: the gateway never decrypts personal data, so it runs without the keys."""
        return value

    def signed_in_rate(self) -> tuple[float, int]:
        """The per-address bucket of signed-in calls: (rate per second, burst)."""
        rate = self.rate_limit_signed_in_per_s
        burst = self.rate_limit_signed_in_burst
        return (10 * self.rate_limit_per_s if rate is None else rate), (burst or 10 * self.rate_limit_burst)

    def enabled_upstreams(self) -> dict[str, str]:
        urls = {"users": self.users_url, "events": self.events_url, "reservations": self.reservations_url}
        names = [name.strip() for name in self.gateway_upstreams.split(",") if name.strip()]
        return {name: urls[name] for name in names if name in urls}
