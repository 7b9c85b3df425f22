from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from nats.js import JetStreamContext

from eventflow.config import Settings
from eventflow.jetstream import RESERVAS, connect, ensure_stream


@pytest.fixture
async def js(settings: Settings) -> AsyncIterator[JetStreamContext]:
    nc = await connect(settings.nats_url, "reservations-tests")
    jetstream = nc.jetstream(timeout=10)
    await ensure_stream(jetstream, RESERVAS)
    yield jetstream
    await nc.drain()


@pytest.fixture
def owner() -> str:
    """A saga owner id of this test alone, so no test resumes another's sagas as its own."""
    return f"test-{uuid.uuid4().hex[:8]}"
