from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from eventflow.config import Settings
from tests.utils.servers import Servers, running_servers


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport() -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """No garbage collection while a failure's report is written. Pytest reads the failing source with
    `ast.parse`; on Python 3.11 a finalizer that formats a traceback in the middle of it (asyncio's "exception was
    never retrieved" log does: 3.11's tracebacks parse their lines too) re-enters the parser's shared recursion
    counter, and `SystemError: AST constructor recursion depth mismatch` ends the whole run as an INTERNALERROR,
    hiding the failure it was reporting. The garbage is collected right after."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return (yield)
    finally:
        if was_enabled:
            gc.enable()


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """One real nats-server (JetStream, fsync always) and one real redis-server (AOF) for the session."""
    root: Path = tmp_path_factory.mktemp("servers")
    with running_servers(root) as started:
        yield started


@pytest.fixture
def settings(servers: Servers) -> Settings:
    return servers.settings()


@pytest.fixture
async def redis(servers: Servers) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(servers.redis.url, decode_responses=True)
    yield client
    await client.aclose()
