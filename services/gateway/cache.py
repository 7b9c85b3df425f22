"""A small shared cache of public answers in the gateway, for anonymous GETs (issue 12: event reads).

An event's page is the same for every anonymous reader, and the events service already says so
(`Cache-Control: public, max-age=5` + ETag, services/events/caching.py): any proxy may keep it that long. Here a
copy is kept for at most `ttl_s` (1 s by default, well inside max-age), so a hot event read by thousands costs
the events service one request per second instead of one per reader: that hop was half the CPU of a read.

Only one event's document (`CACHEABLE`): a listing changes with every event created, and a client that has just
created one and lists anonymously must see it (read-your-writes: the demo seeding checks it that way), whereas
an event's document only changes with its availability, which is eventual by contract; before it exists there
is nothing to keep (a 404 is never kept). And only what is safe for a shared cache (RFC 9111): GETs without
Authorization or Cookie, 200 answers marked
`public` with a max-age and no `Vary` beyond the request's Accept (kept in the key); nothing private, no-store or
no-cache, nothing larger than `max_body`. An If-None-Match that matches the copy's ETag is answered 304.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Request, Response

_VARY_OK = {"accept", "accept-encoding"}
CACHEABLE = re.compile(r"^/api/eventos/[^/]+$")


@dataclass(frozen=True)
class _Copy:
    expires_at: float
    body: bytes
    headers: dict[str, str]


class PublicCache:
    def __init__(
        self,
        ttl_s: float,
        max_entries: int = 10_000,
        max_body: int = 256 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s, self.max_entries, self.max_body, self.clock = ttl_s, max_entries, max_body, clock
        self._copies: OrderedDict[str, _Copy] = OrderedDict()

    @staticmethod
    def key(request: Request) -> str | None:
        """The request's key, or None when its answer must not come from a shared cache."""
        if request.method != "GET" or not CACHEABLE.match(request.scope["path"]):
            return None
        if "authorization" in request.headers or "cookie" in request.headers:
            return None
        query = request.scope.get("query_string", b"").decode("latin-1")
        return f"{request.scope['path']}?{query}|{request.headers.get('accept', '')}"

    def answer(self, key: str, request: Request) -> Response | None:
        copy = self._copies.get(key)
        if copy is None:
            return None
        if copy.expires_at <= self.clock():
            del self._copies[key]
            return None
        etag = copy.headers.get("etag")
        tags = _tags(request.headers.get("if-none-match"))
        if etag is not None and (etag in tags or "*" in tags):
            kept = {name: value for name, value in copy.headers.items() if name in ("etag", "cache-control")}
            return Response(status_code=304, headers=kept)
        return Response(content=copy.body, status_code=200, headers=copy.headers)

    def keep(self, key: str, response: Response) -> None:
        """Keeps `response` if a shared cache may (see the module's docstring)."""
        if response.status_code != 200 or len(response.body) > self.max_body:
            return
        directives = {d.strip().split("=")[0].lower(): d for d in response.headers.get("cache-control", "").split(",")}
        if "public" not in directives or "max-age" not in directives:
            return
        if {"private", "no-store", "no-cache"} & directives.keys():
            return
        try:
            max_age = float(directives["max-age"].split("=", 1)[1])
        except (IndexError, ValueError):
            return
        vary = {v.strip().lower() for v in response.headers.get("vary", "").split(",") if v.strip()}
        if max_age <= 0 or not vary <= _VARY_OK:
            return
        headers = {name: value for name, value in response.headers.items() if name != "content-length"}
        self._copies[key] = _Copy(self.clock() + min(self.ttl_s, max_age), bytes(response.body), headers)
        self._copies.move_to_end(key)
        while len(self._copies) > self.max_entries:
            self._copies.popitem(last=False)


def _tags(if_none_match: str | None) -> set[str]:
    if not if_none_match:
        return set()
    return {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
