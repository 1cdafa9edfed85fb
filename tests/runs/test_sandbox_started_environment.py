"""A started sandbox (no waiting one to take: services, no pool) gets the stage's variables only
in the stage's own processes, after the switch to the build user: the host's root shell, bwrap
and the root steps inside the sandbox run with a fixed environment, so a variable such as
LD_PRELOAD or PATH set by a pipeline never reaches a process that runs as root."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from infra.runners.sandbox_args import feed_environment
from infra.runners.sandbox_runner import SandboxRunner
from tests.runs.helpers import Collected
from tests.runs.hostile import MARKER, hostile
from tests.runs.sandbox import sandbox_runner

pytestmark = pytest.mark.timeout(180)

PRELOAD = "/nonexistent-forgeline-preload.so"


@pytest.fixture(params=[0, 2], ids=["started", "pooled"])
async def runner(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SandboxRunner]:
    runner = sandbox_runner(tmp_path / "state", pool_size=request.param)
    yield runner
    await runner.close()


async def test_ld_preload_reaches_only_the_stage(runner: SandboxRunner, tmp_path: Path) -> None:
    """The dynamic loader names every process that starts with LD_PRELOAD set: only the stage's
    own shell may be one (before, the host's root launcher, bwrap and the root steps inside the
    sandbox were too)."""
    out = Collected()
    stage = hostile(runner, tmp_path, "echo ran", env={"LD_PRELOAD": PRELOAD})
    result = await runner.run(stage, out)
    assert result.exit_code == 0, out.text
    assert out.text.count(PRELOAD) == 1, out.text
    assert out.text.splitlines()[-1] == "ran"


async def test_stage_variables_arrive_whole_and_nothing_else(
    runner: SandboxRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PATH and a large value reach the stage as set; the worker's own variables never do."""
    monkeypatch.setenv("FORGELINE_TEST_HOST", MARKER)
    env = {"PATH": "/nowhere:/usr/local/bin:/usr/bin:/bin", "BIG": "x" * 30_000}
    script = 'printf "%s\\n" "$PATH"; echo "big=${#BIG}"; env | grep -c FORGELINE_TEST_HOST'
    out = Collected()
    result = await runner.run(hostile(runner, tmp_path, script, env=env), out)
    assert result.exit_code == 1, out.text  # grep -c found nothing
    assert out.text.splitlines() == [env["PATH"], "big=30000", "0"]
    assert MARKER not in out.text


async def test_a_stage_path_never_picks_the_setup_tools(
    runner: SandboxRunner, tmp_path: Path
) -> None:
    """The stage's PATH names a directory of its checkout holding `cat`, `env`, `sh` and `ip`
    that print the marker: only the stage's own commands may find them."""
    stage = hostile(runner, tmp_path, "echo stage-ran", env={"PATH": "/workspace/bin:/usr/bin"})
    tools = (stage.root or stage.workspace) / "bin"
    tools.mkdir(parents=True)
    for name in ("cat", "env", "sh", "ip", "setpriv", "bwrap"):
        (tools / name).write_text(f"#!/bin/sh\necho {MARKER}\n")
        (tools / name).chmod(0o755)
    out = Collected()
    assert (await runner.run(stage, out)).exit_code == 0, out.text
    assert MARKER not in out.text and out.text.splitlines()[-1] == "stage-ran"


async def test_tricky_value_is_exact(runner: SandboxRunner, tmp_path: Path) -> None:
    tricky = "a'b\"c $(id -u) `id -u` ; echo injected\nline2 \\ end *"
    out = Collected()
    stage = hostile(runner, tmp_path, 'printf "%s" "$TRICKY"', env={"TRICKY": tricky})
    assert (await runner.run(stage, out)).exit_code == 0
    assert out.text == tricky


async def test_two_stages_at_once_each_see_their_own(runner: SandboxRunner, tmp_path: Path) -> None:
    outs = [Collected(), Collected()]
    stages = [
        hostile(runner, tmp_path, 'sleep 0.2; echo "me=$WHO"', env={"WHO": who})
        for who in ("first", "second")
    ]
    results = await asyncio.gather(*(runner.run(s, o) for s, o in zip(stages, outs, strict=True)))
    assert [r.exit_code for r in results] == [0, 0]
    assert [o.text.splitlines()[-1] for o in outs] == ["me=first", "me=second"]


async def test_a_sandbox_that_ends_before_reading_costs_no_error() -> None:
    """The sandbox died before its reader ran (setup failed, killed): writing the environment
    meets a closed pipe, which is not an error of its own; the exit code tells what happened."""
    proc = await asyncio.create_subprocess_exec(
        "/bin/sh", "-c", "exit 7", stdin=asyncio.subprocess.PIPE
    )
    await proc.wait()
    await feed_environment(proc.stdin, {"BIG": "x" * 2_000_000}, asyncio.sleep(0))
    assert proc.returncode == 7
