"""Schema-driven fuzzing (schemathesis) of every service's OpenAPI, on each service's own port and through the
gateway, against the whole system as `make up` starts it. Valid and invalid inputs, signed in as the admin
(who may call almost everything, so requests get past the 401s into the handlers) and as nobody.

Each operation gets EVENTFLOW_FUZZ_EXAMPLES examples per mode (3 in `make test`, within EVENTFLOW_FUZZ_BUDGET_S;
`make fuzz` sets 200, no budget, and the gateway too). Checks:
no 5xx, and every response conforms to the documented schema for its status (errors to the problem schema that
eventflow.web documents as every operation's default). All findings of a run are collected and reported together.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.system import admin_token, detached, system_env, url

pytestmark = pytest.mark.slow
EXAMPLES = int(os.environ.get("EVENTFLOW_FUZZ_EXAMPLES", "3"))
# Seconds of fuzzing per service and route (each identity gets half; 0: no bound). Hypothesis can spend long
# generating for some schemas (the negative mode of the reservation body): in `make test` the suite is bounded
# instead of hanging the run; `make fuzz` sets 0 and a larger EXAMPLES.
BUDGET_S = float(os.environ.get("EVENTFLOW_FUZZ_BUDGET_S", "12"))
SERVICES = ("users", "events", "reservations")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    env = system_env(
        tmp_path_factory.mktemp("fuzz") / "var",
        EVENTFLOW_PASSWORD_HASH_PROFILE="test",
        EVENTFLOW_RATE_LIMIT_PER_S="0",
        EVENTFLOW_RATE_LIMIT_ACCOUNT_PER_S="0",  # one account sends every fuzzed request
        EVENTFLOW_LOG_LEVEL="WARNING",
    )
    with detached(env):
        yield env


class OutOfTime(Exception):
    """The fuzzing budget is spent: the remaining operations are left for `make fuzz`."""


def fuzz(
    operations: list[Any], base_url: str, headers: dict[str, str], statuses: Counter[int], budget_s: float
) -> tuple[list[str], int]:
    """Every operation of `schema`, both modes, positive ones first, until `budget_s` is spent; returns one line
    per failing operation and mode (a few examples each) and how many (operation, mode) pairs were left out;
    counts the statuses seen in `statuses`."""
    findings: list[str] = []
    deadline = time.monotonic() + budget_s if budget_s > 0 else float("inf")
    pairs = [(op, mode) for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) for op in operations]
    for done, (operation, mode) in enumerate(pairs):
        failures: list[str] = []
        try:
            with contextlib.suppress(Unsatisfiable):  # nothing to make invalid (no parameters, no body)
                examples(operation, mode, base_url, headers, statuses, failures, deadline)()
        except OutOfTime:
            return findings + failures[:3], len(pairs) - done
        findings += failures[:3]  # a few examples per operation and mode are enough to act on
    return findings, 0


def examples(
    operation: Any,
    mode: GenerationMode,
    base_url: str,
    headers: dict[str, str],
    statuses: Counter[int],
    out: list[str],
    deadline: float,
) -> Any:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,  # the same examples every run: a finding is reproducible
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def run(case: Any) -> None:
        if time.monotonic() > deadline:
            raise OutOfTime()
        response = case.call(base_url=base_url, headers=headers, timeout=30)
        statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except (Exception, BaseExceptionGroup) as err:  # schemathesis raises one group of every failed check
            body = case.body if case.body is not None and not isinstance(case.body, bytes) else "..."
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            out.append(
                f"{operation.label} [{mode.value}] {case.path_parameters or ''} {case.query or ''} "
                f"{str(body)[:120]} -> {response.status_code}: {first} | {response.text[:200]}"
            )

    return run


PARSED: dict[str, list[Any]] = {}  # service -> its operations: parsing a schema takes most of a test's time


def operations_of(system: dict[str, str], service: str) -> list[Any]:
    if service not in PARSED:
        schema = schemathesis.openapi.from_url(f"{url(system, service)}/openapi.json")
        PARSED[service] = [result.ok() for result in schema.get_all_operations()]
    return PARSED[service]


# `make test`: each service on its own port (hypothesis' generation, not the requests, is what takes the time);
# `make fuzz` (EVENTFLOW_FUZZ_VIA=direct,gateway) also goes through the gateway.
VIAS = os.environ.get("EVENTFLOW_FUZZ_VIA", "direct").split(",")


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("service", SERVICES)
def test_no_server_errors_and_every_answer_as_documented(system: dict[str, str], service: str, via: str) -> None:
    operations = operations_of(system, service)
    if via == "gateway":  # what the gateway routes: the API and the well-known documents
        operations = [op for op in operations if re.match(r"^/(api/|\.well-known/)", op.path)]
    base = url(system, service if via == "direct" else "gateway")
    findings = []
    seen: dict[str, Counter[int]] = {"admin": Counter(), "anonymous": Counter()}
    left: dict[str, int] = {}
    for who, headers in (("admin", {"Authorization": f"Bearer {admin_token(system)}"}), ("anonymous", {})):
        found, left[who] = fuzz(operations, base, headers, seen[who], BUDGET_S / 2)
        findings += [f"{who}: {line}" for line in found]
    print(f"{service} via {via}: statuses {dict(seen['admin'])} signed in, {dict(seen['anonymous'])} anonymous; "
          f"(operation, mode) pairs left for lack of time: {left}")  # fmt: skip
    assert sum(n for status, n in seen["admin"].items() if status != 401) > 0, "the fuzz got past authentication"
    assert sum(seen["admin"].values()) >= EXAMPLES, "it ran"
    report = Path(system["EVENTFLOW_VAR_DIR"]).parent / f"findings-{service}-{via}.txt"
    report.write_text("\n".join(findings))
    assert not findings, f"{len(findings)} findings ({report}):\n" + "\n".join(findings[:40])
