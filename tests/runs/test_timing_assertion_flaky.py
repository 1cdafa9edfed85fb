"""A test that asserts on elapsed wall-clock time (morgan's `assert.ok(Date.now() - time <=
1100)`) fails on a busy host and passes on a retry: classed flaky (retried), not code
(core/runs/failure_patterns.py). Assertions on anything else stay code."""

from __future__ import annotations

import time

import pytest

from core.runs.failure_classes import FailureSignals, classify
from forgeline.statuses.runs import FailureClass

MOCHA = """  81 passing (3s)
  1 failing

  1) morgan()
       response-time
         should be in milliseconds:

      Uncaught AssertionError [ERR_ASSERTION]: The expression evaluated to a falsy value:

  assert.ok(Date.now() - time <= 1100)

      at Test.<anonymous> (test/morgan.js:1403:16)
npm ERR! Test failed.  See above for more details."""

JEST = """  ● timer > resolves after a second

    expect(received).toBeLessThan(expected)

    expect(performance.now() - start).toBeLessThan(1100)

Tests:       1 failed, 12 passed, 13 total"""

PYTEST = """    def test_fast():
        start = time.monotonic()
        work()
>       assert time.monotonic() - start < 0.5
E       assert 0.71 < 0.5
FAILED tests/test_speed.py::test_fast - assert 0.71 < 0.5"""


@pytest.mark.parametrize("log", [MOCHA, JEST, PYTEST])
def test_elapsed_time_assertions_are_flaky(log: str) -> None:
    found = classify(FailureSignals(exit_code=1, log_tail=log))
    assert found.failure_class == FailureClass.FLAKY
    assert "elapsed wall-clock time" in found.cause
    assert found.retried


def test_other_assertions_stay_code() -> None:
    log = MOCHA.replace("Date.now() - time <= 1100", "res.headers['x-time'] === '1'")
    found = classify(FailureSignals(exit_code=1, log_tail=log))
    assert found.failure_class == FailureClass.CODE


def test_a_config_cause_still_wins() -> None:
    log = MOCHA + '\nnpm ERR! Missing script: "test-ci"'
    found = classify(FailureSignals(exit_code=1, log_tail=log))
    assert found.failure_class == FailureClass.CONFIG


def test_hostile_logs_stay_bounded() -> None:
    line = "assert.ok(" + "Date.now(" * 20_000 + ")"
    log = "\n".join([line] * 50 + ["a" * 200_000])
    started = time.process_time()
    found = classify(FailureSignals(exit_code=1, log_tail=log))
    assert found.failure_class in (FailureClass.CODE, FailureClass.FLAKY)
    assert time.process_time() - started >= 0  # it returned: no runaway backtracking
