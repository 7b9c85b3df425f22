"""A read model that keeps nothing but says, in the log, that it applied an event; and a log capture that formats
each line when it is written (the trace context is read then, as in production)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from eventflow.eventstore import StoredEvent
from eventflow.logs import JsonFormatter

log = logging.getLogger("tests.deploy.null_projection")


class NullProjection:
    family = "null"
    generation = 0
    key_patterns: tuple[str, ...] = ()

    def __init__(self, name: str) -> None:
        self.name = name
        self.applied: list[int] = []

    def at(self, generation: int) -> NullProjection:
        return self

    async def apply(self, event: StoredEvent, redis: Redis, tx: Pipeline) -> None:
        self.applied.append(event.seq)
        log.info("applying", extra={"seq": event.seq})


@contextmanager
def json_log_lines(service: str = "test") -> Iterator[list[dict[str, Any]]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    lines: list[dict[str, Any]] = []
    try:
        yield lines
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
        lines.extend(json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{"))
