"""Services in the sandbox runner, as GitHub Actions services are to a job: a stage's postgres
and redis are started inside its own sandbox, reachable at their service names and at localhost
(postgres with the declared database, user and authentication), ready before the stage's commands
start; concurrent stages each have their own on the same port, and no other stage nor the host
can reach them."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from infra.runners.base import ServiceProcess, run_stage
from infra.runners.sandbox_runner import SandboxRunner
from tests.runs.helpers import Collected
from tests.runs.sandbox_services_helpers import (
    TRUST,
    postgres,
    stage,
    wait_for_postmaster,
    wait_for_text,
)

pytestmark = pytest.mark.timeout(240)

HOLD = "until [ -e /workspace/go ]; do sleep 0.05; done"


async def test_stage_reaches_its_postgres_by_name_and_at_localhost(
    sandbox: SandboxRunner, tmp_path: Path
) -> None:
    script = (
        'psql -h postgres -U postgres -d test -tAc "select current_database(), current_user"; '
        'psql -h localhost -U postgres -d test -tAc "select 40 + 2"; '
        "getent hosts postgres"
    )
    out = Collected()
    outcome = await run_stage(sandbox, stage(tmp_path, script, postgres()), out)
    assert outcome.exit_code == 0, out.text
    lines = out.text.splitlines()
    assert lines[0].startswith("[forgeline] services ready: postgres (PostgreSQL 18")
    assert "test|postgres" in lines and "42" in lines
    assert any(line.split() == ["127.0.0.1", "localhost", "postgres"] for line in lines)


async def test_password_authentication_as_the_postgres_image_sets_it_up(
    sandbox: SandboxRunner, tmp_path: Path
) -> None:
    """POSTGRES_USER/PASSWORD/DB as the image reads them: the user owns the cluster, TCP asks
    for the password (scram-sha-256), a wrong or missing one is refused."""
    env = {"POSTGRES_USER": "app", "POSTGRES_PASSWORD": "s3cr$t'pw", "POSTGRES_DB": "appdb"}
    query = 'psql -h postgres -U app -d appdb -w -tAc "select current_user, current_database()"'
    script = (
        f"{query} || echo no-password-refused; "
        f"PGPASSWORD=wrong {query} || echo wrong-password-refused; "
        f'PGPASSWORD="$PW" {query}'
    )
    out = Collected()
    process = stage(tmp_path, script, postgres(env), env={"PW": env["POSTGRES_PASSWORD"]})
    outcome = await run_stage(sandbox, process, out)
    assert outcome.exit_code == 0, out.text
    lines = out.text.splitlines()
    assert "no-password-refused" in lines and "wrong-password-refused" in lines
    assert "app|appdb" in lines
    assert "password authentication failed" in out.text


async def test_concurrent_stages_each_have_their_own_postgres_on_the_same_port(
    sandbox: SandboxRunner, tmp_path: Path
) -> None:
    """Both run at once on localhost:5432, each with its own database and data; neither sees
    the other's rows."""
    script = (
        'psql -h postgres -U postgres -d "$DB" -qc "create table mine (v text); '
        "insert into mine values ('$DB')\" && echo inserted; "
        f"{HOLD}; "
        'psql -h localhost -U postgres -d "$DB" -tAc "select string_agg(v, \',\') from mine"; '
        "psql -h localhost -U postgres -d postgres -tAc "
        "\"select datname from pg_database where datname like 'db_%' order by 1\""
    )
    processes = [
        stage(tmp_path, script, postgres({**TRUST, "POSTGRES_DB": db}), env={"DB": db})
        for db in ("db_one", "db_two")
    ]
    outs = [Collected(), Collected()]
    tasks = [
        asyncio.ensure_future(run_stage(sandbox, p, o))
        for p, o in zip(processes, outs, strict=True)
    ]
    for out, task in zip(outs, tasks, strict=True):
        await wait_for_text(out, "inserted", task)
    for process in processes:  # both services are up at once: now let both stages read
        (process.workspace / "go").touch()
    outcomes = await asyncio.gather(*tasks)
    for db, out, outcome in zip(("db_one", "db_two"), outs, outcomes, strict=True):
        assert outcome.exit_code == 0, out.text
        assert out.text.splitlines()[-2:] == [db, db], out.text


async def test_no_other_stage_nor_the_host_reaches_a_stages_service(
    sandbox: SandboxRunner, tmp_path: Path
) -> None:
    owner = stage(
        tmp_path,
        'psql -h postgres -U postgres -d postgres -qc "create database only_mine" && echo up; '
        + HOLD,
        postgres(),
    )
    owner_out = Collected()
    owner_task = asyncio.ensure_future(run_stage(sandbox, owner, owner_out))
    try:
        await wait_for_text(owner_out, "up", owner_task)
        # The host: the service lives in the stage's network namespace, not the worker's.
        postmaster = await wait_for_postmaster(sandbox, owner)
        assert os.readlink(f"/proc/{postmaster}/ns/net") != os.readlink("/proc/self/ns/net")
        # Another stage without services: nothing listens on its loopback.
        probe = (
            "import socket\ntry:\n socket.create_connection(('127.0.0.1', 5432), 2)\n"
            " print('reached')\nexcept ConnectionRefusedError:\n print('refused')\n"
        )
        other_out = Collected()
        other = stage(tmp_path, f'/usr/bin/python3 -c "{probe}"')
        assert (await run_stage(sandbox, other, other_out)).exit_code == 0, other_out.text
        assert other_out.text.splitlines() == ["refused"]
        # Another stage with a postgres of its own: its own cluster, without the owner's database.
        mine_out = Collected()
        mine = stage(
            tmp_path,
            "psql -h postgres -U postgres -d postgres -tAc "
            "\"select count(*) from pg_database where datname = 'only_mine'\"",
            postgres(),
        )
        assert (await run_stage(sandbox, mine, mine_out)).exit_code == 0, mine_out.text
        assert mine_out.text.splitlines()[-1] == "0"
    finally:
        (owner.workspace / "go").touch()
        assert (await owner_task).exit_code == 0, owner_out.text


async def test_redis_beside_postgres_by_name_and_at_localhost(
    sandbox: SandboxRunner, tmp_path: Path
) -> None:
    """A stage with both: each answers at its own name and port of the stage's loopback."""
    script = (
        "redis-cli -h cache set greeting hello >/dev/null && redis-cli -h localhost get greeting; "
        'psql -h postgres -U postgres -d test -tAc "select 1"'
    )
    cache = ServiceProcess(name="cache", image="redis:7", health_command="redis-cli ping")
    out = Collected()
    outcome = await run_stage(sandbox, stage(tmp_path, script, postgres(), cache), out)
    assert outcome.exit_code == 0, out.text
    lines = out.text.splitlines()
    assert lines[0].startswith("[forgeline] services ready: postgres (PostgreSQL 18")
    assert lines[1].startswith("[forgeline] services ready: cache (Redis 6")
    assert lines[2:] == ["hello", "1"]
