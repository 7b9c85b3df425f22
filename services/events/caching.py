"""HTTP caching of reads: a strong ETag of the exact body, a short max-age, 304 on If-None-Match.

Reads are the AP side: a client or proxy may serve a copy up to `max_age` seconds old, and revalidates
cheaply afterwards (the body is still rendered, but not sent).
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from fastapi import Request, Response


def etag_of(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    candidates = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in candidates or etag in candidates


def cached_json(request: Request, content: Any, max_age: int) -> Response:
    body = orjson.dumps(content)
    etag = etag_of(body)
    headers = {"ETag": etag, "Cache-Control": f"public, max-age={max_age}"}
    if _matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)
