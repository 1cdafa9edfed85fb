"""Sandbox services under hostile or broken declarations: values that reach initdb and psql only
as arguments (never as script), values postgres cannot take refused before anything starts, a
service that fails or never becomes healthy failing the stage as `config` with its last log
lines, services the sandbox cannot start refused by name, and a stage cancelled while it waits
for its service leaving no process behind."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from core.runs.failure_classes import FailureSignals, classify
from infra.runners.base import SERVICE_EXIT, ServiceProcess, run_stage
from infra.runners.sandbox_runner import SandboxRunner
from tests.runs.helpers import Collected
from tests.runs.sandbox_services_helpers import (
    TRUST,
    alive,
    cmdline,
    postgres,
    stage,
    stage_pids,
    wait_for_postmaster,
)

pytestmark = pytest.mark.timeout(240)

RAN = "the-stage-commands-ran"


def failure_class(out: Collected, exit_code: int) -> str:
    return str(classify(FailureSignals(exit_code=exit_code, log_tail=out.text)).failure_class)


async def test_quotes_and_shell_syntax_in_a_database_name_are_only_a_name(
    sandbox: SandboxRunner, tmp_path: Path
) -> None:
    database = "d'b\"; $(touch /workspace/pwned) `touch /workspace/pwned2` \\"
    user = "app.user-1"
    env = {**TRUST, "POSTGRES_DB": database, "POSTGRES_USER": user}
    script = (
        'psql -h postgres -U "$U" -d "$D" -tAc "select current_user || \'|\' || current_database()"'
    )
    process = stage(tmp_path, script, postgres(env), env={"U": user, "D": database})
    out = Collected()
    outcome = await run_stage(sandbox, process, out)
    assert outcome.exit_code == 0, out.text
    assert out.text.splitlines()[-1] == f"{user}|{database}"
    assert not (process.workspace / "pwned").exists()
    assert not (process.workspace / "pwned2").exists()


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({**TRUST, "POSTGRES_DB": "test\nALTER ROLE x"}, "POSTGRES_DB must be 1 to 63 bytes"),
        ({**TRUST, "POSTGRES_USER": "u" * 64}, "POSTGRES_USER must be 1 to 63 bytes"),
        ({**TRUST, "POSTGRES_USER": "u'\"$(id)"}, "POSTGRES_USER may hold letters"),
        ({"POSTGRES_PASSWORD": "line\nother"}, "POSTGRES_PASSWORD must be one line"),
        ({"POSTGRES_HOST_AUTH_METHOD": "trust all"}, "POSTGRES_HOST_AUTH_METHOD must be one of"),
        ({"POSTGRES_DB": "test"}, "superuser password is not specified"),
    ],
)
async def test_values_postgres_cannot_take_are_refused_before_anything_starts(
    sandbox: SandboxRunner, tmp_path: Path, env: dict[str, str], reason: str
) -> None:
    out = Collected()
    outcome = await run_stage(sandbox, stage(tmp_path, f"echo {RAN}", postgres(env)), out)
    assert outcome.exit_code == SERVICE_EXIT
    assert reason in out.text and RAN not in out.text
    assert failure_class(out, outcome.exit_code) == "config"


async def test_services_the_sandbox_cannot_start_are_refused_by_name(
    sandbox: SandboxRunner, tmp_path: Path
) -> None:
    for services, named in (
        ((postgres(), ServiceProcess(name="db2", image="mysql:8.0")), "(db2)"),
        ((ServiceProcess(name="mongo", image="mongo:7"),), "(mongo)"),
        ((ServiceProcess(name="web", image="nginx:1"),), "(web)"),
        ((postgres(), ServiceProcess(name="other", image="postgres:15")), "one service of a kind"),
    ):
        out = Collected()
        outcome = await run_stage(sandbox, stage(tmp_path, f"echo {RAN}", *services), out)
        assert outcome.exit_code == SERVICE_EXIT and RAN not in out.text
        assert named in out.text and "Docker build host" in out.text, out.text
        assert failure_class(out, outcome.exit_code) == "config"


async def test_a_service_that_fails_to_start_fails_the_stage_with_its_log(
    sandbox: SandboxRunner, tmp_path: Path
) -> None:
    """initdb refuses a `pg_` superuser: its own words end the stage's log, class config."""
    out = Collected()
    env = {**TRUST, "POSTGRES_USER": "pg_admin"}
    process = stage(tmp_path, f"echo {RAN}", postgres(env))
    outcome = await run_stage(sandbox, process, out)
    assert outcome.exit_code == SERVICE_EXIT and RAN not in out.text
    lines = out.text.splitlines()
    assert any(line.startswith("postgres | ") and "pg_" in line for line in lines), out.text
    assert lines[-1].startswith("forgeline: stage services: service postgres (postgres:16)")
    assert "could not be initialised" in lines[-1]
    assert failure_class(out, outcome.exit_code) == "config"
    assert sandbox.cgroups.existing(process.name) == []


async def test_a_service_that_never_becomes_healthy_fails_the_stage_and_is_killed(
    sandbox: SandboxRunner, tmp_path: Path
) -> None:
    """The server is stopped (SIGSTOP from the host) as soon as it starts: it never answers."""
    process = stage(tmp_path, f"echo {RAN}", postgres(health_timeout_seconds=2))
    out = Collected()
    task = asyncio.ensure_future(run_stage(sandbox, process, out))
    postmaster = await wait_for_postmaster(sandbox, process)
    os.kill(postmaster, signal.SIGSTOP)
    outcome = await task
    assert outcome.exit_code == SERVICE_EXIT and RAN not in out.text
    assert "services ready" not in out.text
    assert "never became healthy within 2s" in out.text.splitlines()[-1]
    assert failure_class(out, outcome.exit_code) == "config"
    assert not alive(postmaster)


async def test_cancelling_a_stage_mid_health_wait_leaves_no_process(
    sandbox: SandboxRunner, tmp_path: Path
) -> None:
    process = stage(tmp_path, f"echo {RAN}", postgres(health_timeout_seconds=600))
    out = Collected()
    task = asyncio.ensure_future(run_stage(sandbox, process, out))
    postmaster = await wait_for_postmaster(sandbox, process)
    os.kill(postmaster, signal.SIGSTOP)  # the stage now waits for it, for up to 600 s
    seen = stage_pids(sandbox, process)
    assert postmaster in seen and "services ready" not in out.text
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Already gone: the service and every process of the stage with a command line of its own.
    assert [p for p in seen if alive(p) and cmdline(p) != [""]] == []
    # The sandbox's pid 1 may still be inside its exit (its namespace torn down by the kernel).
    for _ in range(600):
        if not [p for p in seen if alive(p)]:
            break
        await asyncio.sleep(0.05)
    assert [p for p in seen if alive(p)] == []
    assert sandbox.cgroups.existing(process.name) == []
    assert RAN not in out.text
