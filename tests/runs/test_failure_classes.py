"""The failure classifier over real log excerpts of each class, and over hostile logs."""

# Real log lines are long and hold the characters their tools print.
# ruff: noqa: E501, RUF001

from __future__ import annotations

import time

import pytest

from core.runs.failure_classes import (
    EVIDENCE_CHARS,
    MAX_EVIDENCE,
    FailureSignals,
    classify,
)
from forgeline.statuses.runs import FailureClass

INFRA = FailureClass.INFRASTRUCTURE
FLAKY = FailureClass.FLAKY
CODE = FailureClass.CODE
CONFIG = FailureClass.CONFIG

# (name, log tail, exit code, class, a line the evidence must hold)
EXCERPTS: list[tuple[str, str, int, FailureClass, str]] = [
    (
        "npm registry connection reset",
        """npm ERR! code ECONNRESET
npm ERR! syscall read
npm ERR! errno ECONNRESET
npm ERR! network request to https://registry.npmjs.org/react failed, reason: read ECONNRESET
npm ERR! network This is a problem related to network connectivity.
npm ERR! A complete log of this run can be found in: /root/.npm/_logs/debug-0.log""",
        1,
        INFRA,
        "npm ERR! code ECONNRESET",
    ),
    (
        "npm DNS failure",
        """npm ERR! code EAI_AGAIN
npm ERR! syscall getaddrinfo
npm ERR! errno EAI_AGAIN
npm ERR! request to https://registry.npmjs.org/vite failed, reason: getaddrinfo EAI_AGAIN registry.npmjs.org""",
        1,
        INFRA,
        "npm ERR! code EAI_AGAIN",
    ),
    (
        "curl cannot resolve host",
        "curl: (6) Could not resolve host: github.com",
        6,
        INFRA,
        "curl: (6) Could not resolve host: github.com",
    ),
    (
        "pip retries then finds nothing",
        """WARNING: Retrying (Retry(total=4, connect=None, read=None, redirect=None, status=None)) after connection broken by 'NewConnectionError('<pip._vendor.urllib3.connection.HTTPSConnection object at 0x7f>: Failed to establish a new connection: [Errno -3] Temporary failure in name resolution')': /simple/flask/
ERROR: Could not find a version that satisfies the requirement flask==3.0.0 (from versions: none)
ERROR: No matching distribution found for flask==3.0.0""",
        1,
        INFRA,
        "ERROR: Could not find a version that satisfies the requirement flask==3.0.0 (from versions: none)",
    ),
    (
        "registry 503",
        """npm ERR! code E503
npm ERR! 503 Service Unavailable - GET https://registry.npmjs.org/lodash""",
        1,
        INFRA,
        "npm ERR! 503 Service Unavailable - GET https://registry.npmjs.org/lodash",
    ),
    (
        "npm audit against a mirror answering 405",
        """npm ERR! code E405
npm ERR! 405 Method Not Allowed - POST http://mirror.internal/-/npm/v1/security/advisories/bulk""",
        1,
        INFRA,
        "npm ERR! code E405",
    ),
    (
        "cargo fetch failure",
        """    Updating crates.io index
warning: spurious network error (2 tries remaining): [6] Couldn't resolve host name
error: failed to download from `https://static.crates.io/crates/serde/1.0.0/download`""",
        101,
        INFRA,
        "error: failed to download from `https://static.crates.io/crates/serde/1.0.0/download`",
    ),
    (
        "node heap out of memory",
        """<--- Last few GCs --->
FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory
 1: 0xb090e0 node::Abort() [node]""",
        134,
        INFRA,
        "FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory",
    ),
    (
        "pytest assertion",
        """    def test_add():
>       assert add(1, 2) == 4
E       assert 3 == 4
E        +  where 3 = add(1, 2)

tests/test_math.py:4: AssertionError
=========================== short test summary info ============================
FAILED tests/test_math.py::test_add - assert 3 == 4
========================= 1 failed, 1 passed in 0.05s ==========================""",
        1,
        CODE,
        "E       assert 3 == 4",
    ),
    (
        "jest expectation",
        """ FAIL  src/sum.test.js
  ● adds 1 + 2 to equal 3

    expect(received).toBe(expected) // Object.is equality

    Expected: 4
    Received: 3

Tests:       1 failed, 1 total""",
        1,
        CODE,
        "expect(received).toBe(expected) // Object.is equality",
    ),
    (
        "go test failure",
        """--- FAIL: TestAdd (0.00s)
    math_test.go:9: Add(1, 2) = 3; want 4
FAIL
FAIL\texample.com/math\t0.002s""",
        1,
        CODE,
        "--- FAIL: TestAdd (0.00s)",
    ),
    (
        "rust compile error",
        """error[E0308]: mismatched types
 --> src/main.rs:2:18
  |
2 |     let x: i32 = "a";
error: could not compile `demo` (bin "demo") due to 1 previous error""",
        101,
        CODE,
        "error[E0308]: mismatched types",
    ),
    (
        "typescript compile error",
        "src/index.ts(3,7): error TS2322: Type 'string' is not assignable to type 'number'.",
        2,
        CODE,
        "src/index.ts(3,7): error TS2322: Type 'string' is not assignable to type 'number'.",
    ),
    (
        "mocha failing",
        """  1 passing (12ms)
  1 failing

  1) Array #indexOf()
       should return -1:
     AssertionError [ERR_ASSERTION]: 0 == -1""",
        1,
        CODE,
        "     AssertionError [ERR_ASSERTION]: 0 == -1",
    ),
    (
        "missing npm script",
        """npm ERR! Missing script: "test"
npm ERR!
npm ERR! To see a list of scripts, run:
npm ERR!   npm run""",
        1,
        CONFIG,
        'npm ERR! Missing script: "test"',
    ),
    (
        "npm ci without a lockfile",
        """npm ERR! code EUSAGE
npm ERR! The `npm ci` command can only install with an existing package-lock.json or
npm ERR! npm-shrinkwrap.json with lockfileVersion >= 1.""",
        1,
        CONFIG,
        "npm ERR! The `npm ci` command can only install with an existing package-lock.json or",
    ),
    (
        "npm ci with a lockfile out of sync",
        """npm ERR! code EUSAGE
npm ERR! `npm ci` can only install packages when your package.json and package-lock.json or npm-shrinkwrap.json are in sync. Please update your lock file with `npm install` before continuing.""",
        1,
        CONFIG,
        "npm ERR! `npm ci` can only install packages when your package.json and package-lock.json",
    ),
    (
        "yarn frozen lockfile",
        "error Your lockfile needs to be updated, but yarn was run with `--frozen-lockfile`.",
        1,
        CONFIG,
        "error Your lockfile needs to be updated, but yarn was run with `--frozen-lockfile`.",
    ),
    (
        "image lacks the tool",
        "/bin/sh: 1: pnpm: not found",
        127,
        CONFIG,
        "/bin/sh: 1: pnpm: not found",
    ),
    (
        "bash command not found",
        "bash: line 1: poetry: command not found",
        127,
        CONFIG,
        "bash: line 1: poetry: command not found",
    ),
    (
        "missing script file",
        "bash: ./scripts/test.sh: No such file or directory",
        127,
        CONFIG,
        "bash: ./scripts/test.sh: No such file or directory",
    ),
    (
        "wrong working directory",
        "python: can't open file '/workspace/manage.py': [Errno 2] No such file or directory",
        2,
        CONFIG,
        "python: can't open file '/workspace/manage.py': [Errno 2] No such file or directory",
    ),
    (
        "missing requirements file",
        "ERROR: Could not open requirements file: [Errno 2] No such file or directory: "
        "'requirements.txt'",
        1,
        CONFIG,
        "ERROR: Could not open requirements file",
    ),
    (
        "jest test timeout",
        """  ● api › returns the user

    thrown: "Exceeded timeout of 5000 ms for a test.
    Add a timeout value to this test to increase the timeout, if this is a long-running test.""",
        1,
        FLAKY,
        'thrown: "Exceeded timeout of 5000 ms for a test.',
    ),
    (
        "port still in use",
        "Error: listen EADDRINUSE: address already in use :::3000",
        1,
        FLAKY,
        "Error: listen EADDRINUSE: address already in use :::3000",
    ),
    (
        "local service not ready",
        "Error: connect ECONNREFUSED 127.0.0.1:5432",
        1,
        FLAKY,
        "Error: connect ECONNREFUSED 127.0.0.1:5432",
    ),
]


@pytest.mark.parametrize(
    ("log", "exit_code", "expected", "line"),
    [pytest.param(log, code, cls, line, id=name) for name, log, code, cls, line in EXCERPTS],
)
def test_real_log_excerpts(log: str, exit_code: int, expected: FailureClass, line: str) -> None:
    found = classify(FailureSignals(exit_code=exit_code, log_tail=log))
    assert found.failure_class == expected, found
    assert any(line.strip() in ev for ev in found.evidence), found.evidence
    assert 0 < len(found.evidence) <= MAX_EVIDENCE
    assert found.retried == (expected in (INFRA, FLAKY))


def test_a_missing_tool_explains_the_test_failure_it_causes() -> None:
    log = "sh: 1: jest: not found\nnpm ERR! Test failed.  See above for more details.\nFAILED"
    found = classify(FailureSignals(exit_code=1, log_tail=log))
    assert found.failure_class == CONFIG
    assert found.evidence == ["sh: 1: jest: not found"]


def test_signals_from_the_runner() -> None:
    lost = classify(FailureSignals(runner_lost=True, log_tail="E   assert 1 == 2"))
    assert lost.failure_class == INFRA
    broke = classify(FailureSignals(runner_error="docker: engine unavailable"))
    assert (broke.failure_class, broke.evidence) == (INFRA, ["docker: engine unavailable"])
    oom = classify(
        FailureSignals(
            exit_code=137,
            log_tail="building\nforgeline: a process of the stage was killed: memory limit of "
            "512 MB reached\n",
        )
    )
    assert oom.failure_class == INFRA and "memory limit of 512 MB" in oom.evidence[0]
    disk = classify(
        FailureSignals(
            exit_code=137,
            log_tail="forgeline: stage stopped: its workspace exceeded the disk limit of 10 MB",
        )
    )
    assert disk.failure_class == CONFIG
    capped = classify(
        FailureSignals(
            log_limit_reached=True,
            log_tail="x\nforgeline: log truncated: the stage's output reached the log limit",
        )
    )
    assert capped.failure_class == CONFIG and capped.evidence
    stalled = classify(
        FailureSignals(
            exit_code=137, timed_out=True, log_tail="npm WARN fetch ETIMEDOUT registry.npmjs.org"
        )
    )
    assert stalled.failure_class == INFRA
    hung = classify(FailureSignals(exit_code=137, timed_out=True, timeout_seconds=60, log_tail="x"))
    assert (hung.failure_class, hung.cause) == (CONFIG, "the stage hit its timeout of 60s")


@pytest.mark.parametrize(
    ("exit_code", "expected"),
    [(127, CONFIG), (126, CONFIG), (137, INFRA), (143, INFRA), (139, CODE), (-9, INFRA), (3, CODE)],
)
def test_exit_status_when_no_pattern_matches(exit_code: int, expected: FailureClass) -> None:
    found = classify(FailureSignals(exit_code=exit_code, log_tail="doing things\ndone?"))
    assert found.failure_class == expected
    assert found.evidence == ["doing things", "done?"]


def test_ansi_colours_do_not_hide_a_pattern_nor_reach_the_evidence() -> None:
    log = "\x1b[31m\x1b[1mnpm ERR!\x1b[22m\x1b[39m code \x1b[35mECONNRESET\x1b[39m\n"
    found = classify(FailureSignals(exit_code=1, log_tail=log))
    assert found.failure_class == INFRA
    assert found.evidence == ["npm ERR! code ECONNRESET"]


def test_hostile_logs_are_bounded() -> None:
    started = time.process_time()
    huge_line = "A" * 50_000_000 + " AssertionError"
    found = classify(FailureSignals(exit_code=1, log_tail=huge_line))
    assert all(len(ev) <= EVIDENCE_CHARS + 1 for ev in found.evidence)
    many = "\n".join(f"line {n} ECONNRESET? no: ok" for n in range(1_000_000)) + "\nE  assert 0"
    found = classify(FailureSignals(exit_code=1, log_tail=many))
    assert found.failure_class == INFRA  # the tail it reads holds network errors
    binary = bytes(range(256)) * 200_000 + b"\nCould not resolve host: x\n"
    found = classify(FailureSignals(exit_code=1, log_tail=binary))
    assert found.failure_class == INFRA
    assert all("\x00" not in ev and "\x1b" not in ev for ev in found.evidence)
    backtracking = ("sh: " + ":" * 100_000 + "\n") * 3 + "a" * 60_000
    classify(FailureSignals(exit_code=1, log_tail=backtracking))
    # CPU time of the classifier, not wall-clock: generous, it measures the bound, not the speed.
    assert time.process_time() - started < 20


def test_evidence_is_bounded_and_in_log_order() -> None:
    log = "\n".join(f"FAILED tests/test_{n}.py::test_x - assert {n} == 0" for n in range(50))
    found = classify(FailureSignals(exit_code=1, log_tail=log))
    assert found.failure_class == CODE
    assert len(found.evidence) == MAX_EVIDENCE
    assert found.evidence[-1].startswith("FAILED tests/test_49.py")
