"""vitest's own timeout ("Test timed out in 5000ms.") is the known flaky pattern jest's and
mocha's are: a test that spawns processes (a CLI's snapshot tests) on a busy host passes on a
retry (core/runs/failure_patterns.py)."""

from __future__ import annotations

from core.runs.failure_classes import FailureSignals, classify
from forgeline.statuses.runs import FailureClass

VITEST = """ FAIL  packages/cli/src/run.test.ts > Run command > should execute "pkg-two start"
Error: Test timed out in 5000ms.
If this is a long-running test, pass a timeout value as the last argument or configure it \
globally with "testTimeout".
 > packages/cli/src/run.test.ts:30:3

      Tests  1 failed | 92 passed (93)
"""

HOOK = """ FAIL  src/db.test.ts > db
Error: Hook timed out in 10000ms.
      Tests  3 failed (3)
"""


def test_vitest_timeouts_are_flaky() -> None:
    for log in (VITEST, HOOK, VITEST.encode()):
        result = classify(FailureSignals(exit_code=1, log_tail=log))
        assert result.failure_class == FailureClass.FLAKY, result
        assert result.retried
        assert any("timed out in" in line for line in result.evidence)


def test_the_words_alone_or_a_hostile_line_are_not_a_timeout() -> None:
    """A test named after timeouts that failed on an assertion stays code; a huge line with the
    words in it far beyond the matched prefix changes nothing."""
    named = " FAIL  src/a.test.ts > retries when the request timed out in time\n"
    named += "AssertionError: expected 1 to be 2\n      Tests  1 failed (1)\n"
    assert classify(FailureSignals(exit_code=1, log_tail=named)).failure_class == FailureClass.CODE
    huge = "x" * 5000 + " Test timed out in 5000ms\n      Tests  1 failed (1)\n"
    assert classify(FailureSignals(exit_code=1, log_tail=huge)).failure_class == FailureClass.CODE
