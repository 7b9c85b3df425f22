from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from eventflow.config import Settings
from tests.utils.servers import Servers, running_servers


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
