"""troubleshoot_failure reads failure classes: each real failure shape gets its specific cause,
class and evidence lines; a recorded class (which saw what a log cannot show) stands, and a
generic cause never replaces a specific one."""

from __future__ import annotations

from typing import Any

import pytest

from core.agent.outcomes import diagnose

# (name, log tail, exit code, class, cause, a line the evidence must hold)
FAILURES: list[tuple[str, str, int, str, str, str]] = [
    (
        "npm audit against a registry mirror",
        "npm ERR! code E405\nnpm ERR! 405 Method Not Allowed - POST "
        "http://mirror.internal/-/npm/v1/security/advisories/bulk",
        1,
        "infrastructure",
        "a package registry answered with a server error",
        "npm ERR! code E405",
    ),
    (
        "placeholder script missing",
        'npm ERR! Missing script: "lint"\nnpm ERR!\nnpm ERR! To see a list of scripts, run:',
        1,
        "config",
        "the stage runs a package.json script that does not exist",
        'npm ERR! Missing script: "lint"',
    ),
    (
        "npm in composer:2",
        "$ npm ci\n/bin/sh: 1: npm: not found",
        127,
        "config",
        "a tool the stage calls is not installed in its image",
        "/bin/sh: 1: npm: not found",
    ),
    (
        "clippy in rust:1",
        "error: no such command: `clippy`\n\n\tView all installed commands with `cargo --list`",
        101,
        "config",
        "a tool the stage calls is not installed in its image",
        "error: no such command: `clippy`",
    ),
    (
        "npm ci without a lockfile",
        "npm ERR! code EUSAGE\nnpm ERR! The `npm ci` command can only install with an existing "
        "package-lock.json or\nnpm ERR! npm-shrinkwrap.json with lockfileVersion >= 1.",
        1,
        "config",
        "the install command needs a lockfile the repository does not have",
        "The `npm ci` command can only install",
    ),
    (
        "pytest assertion under a summary",
        ">       assert add(1, 2) == 4\nE       assert 3 == 4\n\ntests/test_math.py:4: "
        "AssertionError\n==== 1 failed, 1 passed in 0.05s ====",
        1,
        "code",
        "a test assertion failed",
        "E       assert 3 == 4",
    ),
    (
        "pip without network",
        "ERROR: Could not find a version that satisfies the requirement django (from versions: "
        "none)\nERROR: No matching distribution found for django",
        1,
        "infrastructure",
        "a network connection failed (registry or download)",
        "(from versions: none)",
    ),
    (
        "a hung end-to-end suite",
        "Running 12 tests using 2 workers\n  ✓ home page",
        137,
        "config",
        "the stage hit its timeout",
        "✓ home page",
    ),
]


def failed(**stage: Any) -> dict[str, Any]:
    return {"pipeline_run_id": "r", "status": "failed", "failed_stages": [stage]}


@pytest.mark.parametrize(
    ("log", "exit_code", "failure_class", "cause", "line"),
    [pytest.param(*rest, id=name) for name, *rest in FAILURES],
)
def test_each_failure_gets_its_specific_cause(
    log: str, exit_code: int, failure_class: str, cause: str, line: str
) -> None:
    status = "timed_out" if cause.startswith("the stage hit its timeout") else "failed"
    out = diagnose(failed(stage_name="s", status=status, exit_code=exit_code, log_tail=log), None)
    (found,) = out["diagnosis"]
    assert (found["failure_class"], found["cause"]) == (failure_class, cause)
    assert any(line in ev for ev in found["evidence"]), found["evidence"]
    assert found["fix"]
    assert out["summary"] == f"s: {cause} ({failure_class})"
    assert "unrecognised" not in str(out)


def test_a_recorded_class_stands_over_the_log() -> None:
    """An OOM kill seen by the runner: the log shows only the test output it cut short."""
    out = diagnose(
        failed(
            stage_name="build",
            status="failed",
            exit_code=137,
            log_tail="E   assert 1 == 2",
            failure_class="infrastructure",
            failure_cause="the stage ran out of memory (OOM kill)",
            failure_evidence=["forgeline: a process of the stage was killed: memory limit"],
        ),
        None,
    )
    (found,) = out["diagnosis"]
    assert found["failure_class"] == "infrastructure"
    assert found["cause"] == "the stage ran out of memory (OOM kill)"
    assert out["proposed_change"]["field"] == "environment"


def test_a_generic_record_gives_way_to_a_specific_reading() -> None:
    out = diagnose(
        failed(
            stage_name="test",
            status="failed",
            exit_code=1,
            log_tail="--- FAIL: TestAdd (0.00s)\nFAIL\texample.com/math\t0.002s",
            failure_class="code",
            failure_cause="the stage's commands exited with 1; no known pattern matched",
            failure_evidence=["FAIL"],
        ),
        None,
    )
    assert out["diagnosis"][0]["cause"] == "the repository's tests failed"
    assert "--- FAIL: TestAdd (0.00s)" in out["diagnosis"][0]["evidence"]


def test_hostile_records_are_read_safely() -> None:
    out = diagnose(
        failed(
            stage_name="x",
            status="failed",
            exit_code="not a number",
            log_tail="\x1b[31m" + "\x00" * 100_000 + "\nCould not resolve host: x",
            failure_class="bogus",
            failure_evidence="not a list",
        ),
        None,
    )
    (found,) = out["diagnosis"]
    assert found["failure_class"] == "infrastructure"
    assert found["evidence"] == ["Could not resolve host: x"]
    empty = diagnose({"failed_stages": []}, None)
    assert empty["summary"] == "no failed stage found in this run"
