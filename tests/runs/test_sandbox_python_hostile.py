"""Python stages against hostile builds and interrupted ones, in the real sandbox: a link the
build leaves where its virtualenvs live is never followed by the host's clean-up, a half-made
virtualenv of a crashed process is not reused, and a stage stopped mid-way leaves none behind."""

from __future__ import annotations

import asyncio
import os
import shlex
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from infra.runners import StageProcess
from infra.runners.python_stages import VENVS, host_stage_dir, setup_script, stage_base
from infra.runners.python_toolchain import PythonInstall
from infra.runners.sandbox_runner import SandboxRunner
from infra.runners.sandbox_workspace import run_home
from tests.runs.helpers import Collected
from tests.runs.sandbox import sandbox_runner

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
async def runner(tmp_path: Path) -> AsyncIterator[SandboxRunner]:
    runner = sandbox_runner(tmp_path / "state")
    yield runner
    await runner.close()


def python_stage(root: Path, script: str, *, timeout: float = 120) -> StageProcess:
    return StageProcess(
        name=f"fl-{uuid.uuid4().hex[:12]}-python-1",
        script=script,
        workspace=root,
        root=root,
        timeout_seconds=timeout,
        image="python:3.11",
    )


async def test_a_link_left_where_the_venvs_live_is_not_followed_by_the_clean_up(
    runner: SandboxRunner, tmp_path: Path
) -> None:
    """The stage swaps its virtualenvs directory for a link to a host directory holding a
    directory of the stage's name: the host's removal after the stage leaves it alone."""
    process = python_stage(tmp_path / "ws", "")
    victim = tmp_path / "victim"
    (victim / process.name).mkdir(parents=True)
    (victim / process.name / "keep").write_text("host data")
    venvs = "/home/build/" + "/".join(VENVS)
    script = f"rm -rf {venvs} && ln -s {victim} {venvs} && echo swapped"
    process = StageProcess(**{**process.__dict__, "script": script})
    out = Collected()
    outcome = await runner.run(process, out)
    assert outcome.exit_code == 0, out.text
    assert "swapped" in out.text
    assert (victim / process.name / "keep").read_text() == "host data"


async def test_a_crashed_processs_half_made_venv_is_not_reused(
    runner: SandboxRunner, tmp_path: Path
) -> None:
    root = tmp_path / "ws"
    process = python_stage(root, "")
    script = (
        'test -e "$VIRTUAL_ENV/lib/leftover" && echo reused || echo clean; '
        "python -c 'import sys; print(sys.prefix)'"
    )
    process = StageProcess(**{**process.__dict__, "script": script})
    leftover = host_stage_dir(root, process.name) / "venv"
    (leftover / "lib").mkdir(parents=True)
    (leftover / "lib" / "leftover").write_text("from a crashed worker")
    (leftover / "pyvenv.cfg").write_text("home = /nonexistent\n")
    # As the crashed stage (the build user) left it.
    for path in [run_home(root), *run_home(root).rglob("*")]:
        os.lchown(path, runner.config.uid, runner.config.gid)
    out = Collected()
    outcome = await runner.run(process, out)
    assert outcome.exit_code == 0, out.text
    assert "clean" in out.text and "reused" not in out.text
    assert f"{stage_base(process.name)}/venv" in out.text
    assert not (host_stage_dir(root, process.name)).exists()


async def test_a_stage_stopped_mid_way_leaves_no_venv(
    runner: SandboxRunner, tmp_path: Path
) -> None:
    root = tmp_path / "ws"
    process = python_stage(root, "echo started; sleep 120", timeout=30)
    out = Collected()
    outcome = await runner.run(process, out)
    assert outcome.timed_out, out.text
    assert "started" in out.text
    assert not (host_stage_dir(root, process.name)).exists()


@pytest.mark.parametrize(
    "script", ["echo 'it''s' \"$0\"", "exit 7", "printf '%s\\n' \"$(printf 'a\\tb')\"; #'"]
)
def test_the_stages_own_script_reaches_its_shell_unchanged(script: str) -> None:
    """The stage's script is one quoted word of the setup: whatever it holds runs as written,
    never as part of the setup."""
    install = PythonInstall("3.11.2", Path("/usr/bin/python3.11"))
    setup = setup_script(install, stage_base("fl-x-test-1"), script)
    last = setup.rstrip("\n").splitlines()[-1]
    assert shlex.split(last) == ["exec", "/bin/sh", "-c", script]


async def test_concurrent_first_stages_share_one_read_only_seed(
    runner: SandboxRunner, tmp_path: Path
) -> None:
    """Two stages of a fresh build host at once: one seed is made (a crashed maker's half-made
    one beside it is ignored), both virtualenvs get pip by copy, and no stage can change it."""
    seeds = runner.config.state_dir / "python-seeds"
    (seeds / ".3.11.0-crashed").mkdir(parents=True)  # a maker killed mid-way left this
    script = (
        "pip --version; touch /opt/forgeline/python-seeds/x 2>/dev/null && echo seed-written; "
        "rm -rf /opt/forgeline/python-seeds/3.* 2>/dev/null; true"
    )
    outs = [Collected(), Collected()]
    outcomes = await asyncio.gather(
        *(runner.run(python_stage(tmp_path / f"ws{i}", script), outs[i]) for i in range(2))
    )
    for outcome, out in zip(outcomes, outs, strict=True):
        assert outcome.exit_code == 0, out.text
        assert "/venv/lib/python3" in out.text and "site-packages/pip" in out.text, out.text
        assert "seed-written" not in out.text
    made = sorted(p.name for p in seeds.iterdir() if not p.name.startswith("."))
    assert len(made) == 1 and made[0].startswith("3.11."), made
    assert (seeds / made[0] / "site-packages").is_dir()
    assert [p.name for p in seeds.iterdir() if p.name.startswith(".")] == [".3.11.0-crashed"]
