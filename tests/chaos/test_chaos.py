"""The chaos suite's short version, in `make test`: the same five faults and invariants as `make chaos`
(tests/chaos/suite.py), on a smaller flash sale (120 buyers for 36 tickets per run) against one system."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.chaos.suite import FAULTS, Run, suite, table

pytestmark = pytest.mark.slow
BUYERS, TICKETS = 120, 36


@pytest.fixture(scope="module")
def runs() -> Iterator[dict[str, Run]]:
    """Every fault, one run each, in one system (started once: the cluster, the services, the buyers)."""
    done = asyncio.run(suite(BUYERS, TICKETS))
    print("\n" + table(done))
    yield {run.fault: run for run in done}


@pytest.mark.parametrize("fault", FAULTS)
def test_a_flash_sale_keeps_every_invariant(runs: dict[str, Run], fault: str) -> None:
    run = runs[fault]
    failed = [name for name, ok in run.checks.items() if not ok]
    assert not failed, f"{fault}: {failed}; {run.notes}"
    assert run.recovery_s is not None, "the system came back"
