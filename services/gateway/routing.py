"""Which service owns which public path. The public paths are the assignment's contract; nothing else (health,
/metrics, docs) is routed, so a service's internal endpoints never reach the public port."""

from __future__ import annotations

ROUTES: tuple[tuple[str, str], ...] = (
    ("/api/auth", "users"),  # sign-in, refresh, sign-out: the users service issues the tokens
    ("/api/usuarios", "users"),
    ("/api/eventos", "events"),
    ("/api/reservar", "reservations"),
    ("/api/reservas", "reservations"),
    ("/api/tickets", "reservations"),  # a ticket's QR and PDF
    ("/api/checkin", "reservations"),  # the door: check-in, its counts, the events' public keys
    ("/api/disponibilidad", "reservations"),  # the seat map, and live (Server-Sent Events)
)


JWKS_PATH = "/.well-known/jwks.json"  # the issuer's public keys, for clients and external verifiers


def upstream_for(path: str) -> str | None:
    """The service owning `path`, matching whole path segments (`/api/eventosX` is nobody's). A path with a dot
    segment is nobody's either: `/api/reservas/../../metrics` must not reach an internal endpoint through a hop
    that normalizes it."""
    if any(segment in (".", "..") for segment in path.split("/")):
        return None
    if path == JWKS_PATH:
        return "users"
    for prefix, upstream in ROUTES:
        if path == prefix or path.startswith(prefix + "/"):
            return upstream
    return None
