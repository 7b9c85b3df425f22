"""The seam where authentication goes (a later issue): called before any request is forwarded.

An authenticator raises an `eventflow.errors.DomainError` (401/403) to refuse, or returns extra headers
(for example the verified user id) to pass to the upstream.
"""

from __future__ import annotations

from typing import Protocol

from fastapi import Request


class Authenticator(Protocol):
    async def __call__(self, request: Request, upstream: str) -> dict[str, str]: ...


async def allow_all(request: Request, upstream: str) -> dict[str, str]:
    """Every route is public until accounts and tokens exist."""
    return {}
