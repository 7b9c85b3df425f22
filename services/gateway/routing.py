"""Which service owns which public path. The public paths are the assignment's contract."""

from __future__ import annotations

ROUTES: tuple[tuple[str, str], ...] = (
    ("/api/usuarios", "users"),
    ("/api/eventos", "events"),
    ("/api/reservar", "reservations"),
    ("/api/reservas", "reservations"),
)


def upstream_for(path: str) -> str | None:
    """The service owning `path`, matching whole path segments (`/api/eventosX` is nobody's)."""
    for prefix, upstream in ROUTES:
        if path == prefix or path.startswith(prefix + "/"):
            return upstream
    return None
