"""A package manager's "no such script" line that a test run's report follows was the tests' own
output (a snapshot diff of a spawned `yarn run`, a test's expected text), not what ended the stage:
a missing script stops its command before anything runs. manypkg's CLI tests print yarn's
`error Command "something" not found.` in a vitest snapshot diff; the failure was read as a
missing script (config) instead of failing tests (code). A missing script the stage itself runs,
before or after its tests, stays config (core/runs/failure_classes.py)."""

from __future__ import annotations

import pytest

from core.runs.failure_classes import SCAN_LINES, FailureSignals, classify
from core.runs.failure_patterns import MISSING_SCRIPT, TESTS_FAILED
from forgeline.statuses.runs import FailureClass

E = "\x1b["  # an SGR sequence
# A vitest snapshot diff of a spawned `yarn run something`, with the ANSI colours vitest prints.
VITEST = f"""{E}41m{E}1m FAIL {E}22m{E}49m packages/cli/src/run.test.ts > Run command > runs
{E}31m{E}1mError{E}22m: Snapshot `stderr 1` mismatched{E}39m

{E}32m- Expected{E}39m
{E}31m+ Received{E}39m

{E}2m  warning package.json: No license field{E}22m
{E}2m  error Command "something" not found.{E}22m
{E}2m  "{E}22m

{E}2m  Snapshots {E}22m {E}1m{E}31m1 failed{E}39m{E}22m
{E}2m Test Files {E}22m {E}1m{E}31m1 failed{E}39m{E}22m{E}2m | {E}22m7 passed (8)
{E}2m      Tests {E}22m {E}1m{E}31m1 failed{E}39m{E}22m{E}2m | {E}22m92 passed (93)

error Command failed with exit code 1.
info Visit https://yarnpkg.com/en/docs/cli/run for documentation about this command.
"""

JEST_NPM = """  ● cli > prints the missing script

    expect(received).toBe(expected)

    Expected: ""
    Received: "npm error Missing script: \\"lint\\""

Tests:       1 failed, 12 passed, 13 total
"""

YARN_MISSING = """yarn run v1.22.22
error Command "lint" not found.
info Visit https://yarnpkg.com/en/docs/cli/run for documentation about this command.
"""


def _classify(log: str | bytes) -> tuple[FailureClass, str]:
    result = classify(FailureSignals(exit_code=1, log_tail=log))
    return result.failure_class, result.cause


@pytest.mark.parametrize("log", [VITEST, JEST_NPM, VITEST.encode()], ids=["vitest", "jest", "b"])
def test_a_missing_script_in_the_tests_output_is_the_tests_failing(log: str | bytes) -> None:
    failure_class, cause = _classify(log)
    assert failure_class == FailureClass.CODE and cause != MISSING_SCRIPT
    if log is VITEST:
        assert cause == TESTS_FAILED


def test_a_missing_script_the_stage_runs_stays_config() -> None:
    assert _classify(YARN_MISSING) == (FailureClass.CONFIG, MISSING_SCRIPT)
    # The stage's own tests failed (`|| true`), then it ran a script it does not have.
    assert _classify(VITEST + YARN_MISSING) == (FailureClass.CONFIG, MISSING_SCRIPT)


def test_other_config_causes_still_explain_the_test_failures_after_them() -> None:
    """Only causes that end their command are dropped: a missing tool still explains the tests
    that fail without it."""
    log = "sh: 1: eslint: not found\n" + VITEST
    failure_class, cause = _classify(log)
    assert failure_class == FailureClass.CONFIG
    assert cause == "a tool the stage calls is not installed in its image"


def test_hostile_logs_stay_bounded_and_coherent() -> None:
    """Test reports and missing-script lines interleaved many times, a report line that is only
    a prefix, a huge line, control bytes: the last line of either kind decides, nothing raises."""
    block = 'error Command "x" not found.\nTests  1 failed (1)\n'
    assert _classify(block * 10_000)[0] == FailureClass.CODE
    assert _classify(block * 10_000 + YARN_MISSING)[0] == FailureClass.CONFIG
    # "Tests" without a count is no report: the missing script stays the cause.
    assert _classify("Tests failed\n" + YARN_MISSING)[0] == FailureClass.CONFIG
    assert _classify(YARN_MISSING + "Tests failed somewhere\n")[0] == FailureClass.CONFIG
    # A huge last line leaves nothing else in the scanned tail: the exit status decides.
    huge = "Tests  1 failed " + "x" * 5_000_000 + "\n"
    assert _classify(YARN_MISSING + huge)[1].endswith("no known pattern matched")
    noisy = "\x00\x07" + YARN_MISSING.replace("\n", "\r\n") + "\x1b[2J"
    assert _classify(noisy) == (FailureClass.CONFIG, MISSING_SCRIPT)
    # A report that scrolled out of the scanned tail does not hide a later missing script.
    far = "Tests  1 failed (1)\n" + "ok\n" * (SCAN_LINES + 10) + YARN_MISSING
    assert _classify(far) == (FailureClass.CONFIG, MISSING_SCRIPT)
