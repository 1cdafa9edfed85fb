"""Hostile builds, what a stage cannot read or reach: other processes' environments, the data
dir and other workspaces, root or capabilities, the host's loopback services, the Temporal
frontend. Every isolated runner (the bubblewrap sandbox and Docker) gets the same scripts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from infra.runners import Runner
from tests.runs.helpers import Collected
from tests.runs.hostile import (
    CONNECT,
    MARKER,
    Listener,
    hostile,
    image_for,
)


async def test_stage_cannot_read_other_processes_environment(
    runner: Runner, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The worker's environment (its keys) and a neighbour's secrets stay unreadable."""
    victim = subprocess.Popen(
        ["sleep", "60"], env={"PATH": os.environ["PATH"], "TENANT_SECRET": MARKER}
    )
    os.environ["FORGELINE_TEST_WORKER_SECRET"] = MARKER
    try:
        out = Collected()
        script = (
            "cat /proc/*/environ 2>/dev/null | tr '\\000' '\\n' | grep -c hostile-marker; "
            "ls /proc | grep -c '^[0-9]'; "
            f"cat /proc/{victim.pid}/environ 2>&1 | head -c 300; echo; "
            "cat /proc/1/environ 2>&1 | head -c 300; echo; true"
        )
        result = await runner.run(
            hostile(runner, tmp_path, script, image=image_for(runner, request)), out
        )
    finally:
        victim.kill()
        victim.wait()
        del os.environ["FORGELINE_TEST_WORKER_SECRET"]
    assert result.exit_code == 0, out.text
    assert MARKER not in out.text
    lines = out.text.splitlines()
    assert lines[0] == "0"
    assert int(lines[1]) < 10, "the stage sees processes that are not its own"


async def test_stage_cannot_read_the_data_dir_or_another_workspace(
    runner: Runner, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "encryption.key").write_text(MARKER)
    (data_dir / "bootstrap.json").write_text(MARKER)
    other = tmp_path / "workspaces" / "other-tenant-run"
    other.mkdir(parents=True)
    (other / ".env.production").write_text(MARKER)
    script = (
        f"cat {data_dir}/encryption.key {data_dir}/bootstrap.json 2>&1; "
        f"cat {other}/.env.production 2>&1; echo LISTING $(ls -a /workspace/..); "
        "grep -rs hostile-marker / --exclude-dir=proc --exclude-dir=sys 2>/dev/null | head -3; "
        "cat /etc/shadow 2>&1 | head -2; true"
    )
    out = Collected()
    # The grep reads the whole read-only toolchain (/usr and the Python installations mounted).
    result = await runner.run(
        hostile(runner, tmp_path, script, image=image_for(runner, request), timeout=180), out
    )
    assert result.exit_code == 0, out.text
    assert MARKER not in out.text
    listing = next(line for line in out.text.splitlines() if line.startswith("LISTING"))
    assert "other-tenant-run" not in listing


async def test_stage_runs_as_an_unprivileged_user_without_capabilities(
    runner: Runner, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    script = "id -u; grep -E '^Cap(Eff|Prm|Bnd)' /proc/self/status; touch /usr/x 2>&1; true"
    out = Collected()
    result = await runner.run(
        hostile(runner, tmp_path, script, image=image_for(runner, request)), out
    )
    assert result.exit_code == 0, out.text
    uid = int(out.text.splitlines()[0])
    assert uid not in (0, os.getuid())
    assert "CapEff:\t0000000000000000" in out.text
    assert not Path("/usr/x").exists()


async def test_stage_cannot_reach_host_loopback_services(
    runner: Runner, tmp_path: Path, request: pytest.FixtureRequest, listener: Listener, settings
) -> None:
    """Not a listener of this test, not PostgreSQL, not the Temporal frontend."""
    from urllib.parse import urlsplit

    db_port = urlsplit(settings.database_url).port
    temporal_port = int(settings.temporal_address.rsplit(":", 1)[1])
    for port in (db_port, temporal_port):  # they do listen, seen from the host
        with socket.create_connection(("127.0.0.1", port), 2):
            pass
    ports = [listener.port, db_port, temporal_port]
    script = CONNECT + "".join(
        f'if probe 127.0.0.1 {p}; then echo "REACHED {p}"; else echo "blocked {p}"; fi; '
        for p in ports
    )
    out = Collected()
    result = await runner.run(
        hostile(runner, tmp_path, script, image=image_for(runner, request)), out
    )
    assert result.exit_code == 0, out.text
    assert "REACHED" not in out.text
    assert out.text.count("blocked") == 3
    assert listener.accepted == 0


async def test_stage_cannot_drive_temporal(
    runner: Runner, tmp_path: Path, request: pytest.FixtureRequest, settings
) -> None:
    """The `temporal` CLI of the worker's environment is not there, and the frontend it would
    call (to send an approval update to another tenant's deployment) is not reachable."""
    cli = Path(sys.prefix) / "bin" / "temporal"
    assert cli.exists()
    address = settings.temporal_address
    script = (
        f"{cli} workflow update execute --address {address} --workflow-id deployment-x "
        "--name approve 2>&1 | head -2; "
        f"temporal workflow update execute --address {address} --workflow-id deployment-x "
        "--name approve 2>&1 | head -2; true"
    )
    out = Collected()
    result = await runner.run(
        hostile(runner, tmp_path, script, image=image_for(runner, request)), out
    )
    assert result.exit_code == 0, out.text
    assert out.text.count("not found") + out.text.count("No such file") >= 2, out.text
