from __future__ import annotations

import uuid

import pytest

from eventflow.jetstream import StreamSpec, connect, ensure_stream


@pytest.fixture
async def js(settings):
    nc = await connect(settings.nats_url, "test")
    yield nc.jetstream()
    await nc.drain()


@pytest.fixture
async def stream(js):
    """A stream of its own: sequences start at 1 for every test."""
    spec = StreamSpec(f"P{uuid.uuid4().hex[:8].upper()}", f"p{uuid.uuid4().hex[:8]}")
    await ensure_stream(js, spec)
    return spec
