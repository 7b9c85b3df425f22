from __future__ import annotations

import gc
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from eventflow.config import Settings
from tests.e2e.system import TEST_OWNER, cli, folder_env
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


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """A whole system this run started in the background (`eventflow.run --detach`, its own process session) and
    left running is stopped here and named: it would otherwise load the machine for whatever runs next (on CI,
    `make compose-test`). Only this run's: another run's system (a `make chaos` going on) is not touched."""
    for var_dir in _background_systems(owner=str(os.getpid())):
        try:
            down = cli(folder_env(var_dir), "--down")
            outcome = "stopped" if down.returncode == 0 else f"could not stop (exit {down.returncode})"
        except (subprocess.TimeoutExpired, OSError) as err:
            outcome = f"could not stop ({type(err).__name__})"
        print(f"\n{outcome} a test system left running: {var_dir}", file=sys.stderr)


def _background_systems(owner: str) -> list[Path]:
    """The EVENTFLOW_VAR_DIR of every `eventflow.run --background` supervisor that test run `owner` started."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if b"eventflow.run\0--background" not in (proc / "cmdline").read_bytes():
                continue
            environ = dict(v.split(b"=", 1) for v in (proc / "environ").read_bytes().split(b"\0") if b"=" in v)
        except OSError:
            continue
        if environ.get(TEST_OWNER.encode()) == owner.encode() and b"EVENTFLOW_VAR_DIR" in environ:
            found.append(Path(os.fsdecode(environ[b"EVENTFLOW_VAR_DIR"])))
    return found


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
