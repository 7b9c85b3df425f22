"""The test run's own harness: a failing test is reported as a failure even when garbage that logs a traceback is
collected while pytest writes the report (Python 3.11 re-enters its parser then: tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parents[2]

FAILING_WITH_GARBAGE = '''
import gc, traceback

def boom():
    return {}["a"]

try:
    boom()
except KeyError as e:
    ERR = e

class LogsATraceback:
    """What an asyncio future whose exception was never retrieved does when it is collected; each one collected
    leaves another behind, so some garbage is always there when the collector next runs."""
    def __del__(self):
        traceback.format_exception(ERR)
        leave_garbage()

def leave_garbage():
    cycle = LogsATraceback()
    cycle.me = cycle

def test_fails_while_garbage_waits():
    gc.set_threshold(20)
    leave_garbage()
    assert 1 + 1 == 3
'''


def test_a_failure_is_reported_not_an_internal_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makeconftest("from tests.conftest import pytest_runtest_makereport  # noqa: F401\n")
    pytester.makepyfile(test_garbage=FAILING_WITH_GARBAGE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly")
    result.assert_outcomes(failed=1)
    assert "INTERNALERROR" not in result.stdout.str()
    result.stdout.fnmatch_lines(["*assert 1 + 1 == 3*"])
