"""What a request handler gets, built once in the lifespan (bootstrap) and read from app.state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from eventflow.breaker import Breaker
from eventflow.generations import ReadModelRedis
from services.events.handlers import WriteDeps
from services.events.log_fallback import LogFallback


@dataclass(frozen=True)
class Deps:
    write: WriteDeps
    redis: ReadModelRedis  # reads the events family's current generation
    cache_max_age: int
    from_log: LogFallback  # GET by id while the read model cannot answer
    read_model_breaker: Breaker  # open: GET by id skips Redis and the log answers


async def get_deps(request: Request) -> Deps:
    deps: Deps = request.app.state.deps
    return deps


DepsDep = Annotated[Deps, Depends(get_deps)]
