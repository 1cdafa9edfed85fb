"""Failures of the stage's environment or tooling (a host outside the build network, a tool
release the repository's configuration does not fit, a service the tests expect on localhost)
are the pipeline's (config) with their specific cause; a real test failure stays the code's."""

from __future__ import annotations

import asyncio

from core.agent.outcomes import diagnose
from core.runs.failure_classes import FailureSignals, classify
from forgeline.statuses.runs import FailureClass

NOX = """nox > Running session lint
Traceback (most recent call last):
  File "/ws/.venv/lib/python3.13/site-packages/attr/_make.py", line 1190, in __setattr__
    _OBJ_SETATTR(self, name, nval)
AttributeError: 'NoxfileOptions' object has no attribute 'needs_version'
"""
PNPM_ENGINE = " ERR_PNPM_UNSUPPORTED_ENGINE  Unsupported environment (bad pnpm and/or Node.js)\n"
NODE_BUILTIN = "  code: 'ERR_UNKNOWN_BUILTIN_MODULE'\n}\nNode.js v20.20.2\n"
NODE_FLAG = "/usr/bin/node: --experimental-strip-types is not allowed in NODE_OPTIONS\n"
SEMLOCK = """    sl = self._semlock = _multiprocessing.SemLock(
PermissionError: [Errno 13] Permission denied
"""
PIP_PYTHON = "ERROR: Package 'demo' requires a different Python: 3.8.10 not in '>=3.10'\n"
POSTGRES = (
    (
        'E   psycopg2.OperationalError: connection to server at "localhost" (127.0.0.1), '
        "port 5432 failed: Connection refused\n"
    )
    + """FAILED tests/test_db.py::test_rows - psycopg2.OperationalError
==== 1 failed, 3 passed in 0.5s ====
"""
)
REDIS = "redis.exceptions.ConnectionError: Error 111 connecting to localhost:6379. Refused.\n"
REAL_TEST = """FAILED tests/test_math.py::test_add - assert 3 == 4
==== 1 failed, 9 passed in 0.2s ====
"""
NPM_WARN_ONLY = "npm WARN EBADENGINE Unsupported engine {\n  3 failing\n"


def _class(log: str, exit_code: int = 1) -> tuple[FailureClass, str]:
    found = classify(FailureSignals(exit_code=exit_code, log_tail=log))
    return found.failure_class, found.cause


def test_a_tool_release_the_configuration_does_not_fit_is_config() -> None:
    for log in (NOX, PNPM_ENGINE, PIP_PYTHON, NODE_BUILTIN, NODE_FLAG):
        failure_class, cause = _class(log)
        assert failure_class == FailureClass.CONFIG, log
        assert "version" in cause


def test_a_missing_local_service_is_config_with_that_cause() -> None:
    for log in (POSTGRES, REDIS):
        failure_class, cause = _class(log)
        assert failure_class == FailureClass.CONFIG, log
        assert "service" in cause


def test_a_sandbox_without_shared_memory_is_infrastructure() -> None:
    failure_class, cause = _class(SEMLOCK)
    assert failure_class == FailureClass.INFRASTRUCTURE
    assert "/dev/shm" in cause


def test_a_real_test_failure_stays_the_code() -> None:
    assert _class(REAL_TEST)[0] == FailureClass.CODE
    # npm's engine warning beside a failing suite does not excuse the failures.
    assert _class(NPM_WARN_ONLY)[0] == FailureClass.CODE


def test_troubleshoot_names_the_tool_version_and_its_fix() -> None:
    report = diagnose(
        {
            "pipeline_run_id": "r",
            "status": "failed",
            "failed_stages": [{"stage_name": "lint", "status": "failed", "log_tail": NOX}],
        },
        None,
    )
    [lint] = report["diagnosis"]
    assert lint["failure_class"] == "config"
    assert "pin the tool" in lint["fix"]
    assert any("needs_version" in line for line in lint["evidence"])


def test_a_recorded_generic_code_failure_is_read_again_from_the_log() -> None:
    stage = {
        "stage_name": "lint",
        "status": "failed",
        "exit_code": 1,
        "failure_class": "code",
        "failure_cause": "the stage's commands exited with 1; no known pattern matched",
        "failure_evidence": ["AttributeError: 'NoxfileOptions' object has no attribute 'x'"],
        "log_tail": NOX,
    }
    report = diagnose({"failed_stages": [stage]}, None)
    assert report["diagnosis"][0]["failure_class"] == "config"


def test_hostile_logs_cost_their_tail_only() -> None:
    huge = ("\x00\xff garbage " * 200_000) + "\n" + REAL_TEST
    assert _class(huge)[0] == FailureClass.CODE
    binary = bytes(range(256)) * 10_000 + POSTGRES.encode()
    found = classify(FailureSignals(exit_code=1, log_tail=binary))
    assert found.failure_class == FailureClass.CONFIG
    # The telling words past a line's first characters are not read (a minified bundle).
    buried = "x" * 5000 + " 'NoxfileOptions' object has no attribute 'needs_version'\n"
    assert _class(buried)[0] == FailureClass.CODE


async def test_concurrent_diagnoses_agree() -> None:
    logs = {"failed_stages": [{"stage_name": "test", "status": "failed", "log_tail": POSTGRES}]}
    reports = await asyncio.gather(*(asyncio.to_thread(diagnose, logs, None) for _ in range(8)))
    assert len({r["summary"] for r in reports}) == 1
    assert "service" in reports[0]["summary"]
