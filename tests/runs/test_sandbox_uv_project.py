"""uv's project environment in the real sandbox: each Python stage's own (UV_PROJECT_ENVIRONMENT
in its directory in the run's home), so stages running beside each other on one checkout (matrix
legs, lint beside test) never share `.venv` in the workspace, where one `uv sync` removed files
another was writing ("failed to remove directory /workspace/.venv/lib")."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from infra.runners import StageProcess
from infra.runners.python_stages import UV_PROJECT_DIR, host_stage_dir, stage_base
from infra.runners.sandbox_runner import SandboxRunner
from tests.runs.helpers import Collected
from tests.runs.sandbox import sandbox_runner

pytestmark = pytest.mark.timeout(300)

# What `uv sync` does to its project environment, without uv: make it and fill it, slowly, so
# two stages at once overlap.
SYNC = (
    'python -m venv --without-pip "$UV_PROJECT_ENVIRONMENT" && '
    'for i in 1 2 3 4 5 6 7 8 9 10; do echo "$i" > "$UV_PROJECT_ENVIRONMENT/lib/f$i"; '
    "sleep 0.05; done && "
    'ls "$UV_PROJECT_ENVIRONMENT/lib" | wc -l && echo "project=$UV_PROJECT_ENVIRONMENT"'
)


@pytest.fixture
async def runner(tmp_path: Path) -> AsyncIterator[SandboxRunner]:
    runner = sandbox_runner(tmp_path / "state")
    yield runner
    await runner.close()


def stage(root: Path, script: str, *, leg: str, env: dict[str, str] | None = None) -> StageProcess:
    return StageProcess(
        name=f"fl-{uuid.uuid4().hex[:12]}-test_{leg}_-1",
        script=script,
        workspace=root,
        root=root,
        timeout_seconds=120,
        image=f"python:{leg}",
        network=False,
        env=env or {},
    )


async def test_concurrent_legs_of_one_checkout_get_their_own_project_environment(
    runner: SandboxRunner, tmp_path: Path
) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    legs = [stage(root, SYNC, leg="3.11"), stage(root, SYNC, leg="3.11")]
    outs = [Collected(), Collected()]
    outcomes = await asyncio.gather(*(runner.run(p, o) for p, o in zip(legs, outs, strict=True)))
    projects = []
    for process, outcome, out in zip(legs, outcomes, outs, strict=True):
        assert outcome.exit_code == 0, out.text
        line = next(x for x in out.text.splitlines() if x.startswith("project="))
        project = line.split("=", 1)[1]
        assert project == f"{stage_base(process.name)}/{UV_PROJECT_DIR}"
        assert not project.startswith("/workspace")
        projects.append(project)
    assert projects[0] != projects[1]
    # Nothing in the checkout; each stage's environment gone with its stage.
    assert not (root / ".venv").exists()
    for process in legs:
        assert not host_stage_dir(root, process.name).exists()


async def test_a_stage_that_sets_its_own_project_environment_keeps_it(
    runner: SandboxRunner, tmp_path: Path
) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    process = stage(
        root, 'echo "project=$UV_PROJECT_ENVIRONMENT"', leg="3.11",
        env={"UV_PROJECT_ENVIRONMENT": ".venv"},
    )  # fmt: skip
    out = Collected()
    outcome = await runner.run(process, out)
    assert outcome.exit_code == 0, out.text
    assert "project=.venv" in out.text


async def test_a_hostile_link_in_place_of_the_project_environment_writes_nothing_outside(
    runner: SandboxRunner, tmp_path: Path
) -> None:
    """The stage replaces its project environment with a link to the host's /etc: the sandbox
    has no host /etc to write to, and the link goes with the stage's directory."""
    root = tmp_path / "ws"
    root.mkdir()
    script = (
        'ln -s /etc "$UV_PROJECT_ENVIRONMENT" && '
        'touch "$UV_PROJECT_ENVIRONMENT/forgeline-probe" 2>/dev/null && echo wrote-etc; exit 0'
    )
    process = stage(root, script, leg="3.11")
    out = Collected()
    outcome = await runner.run(process, out)
    assert outcome.exit_code == 0, out.text
    assert "wrote-etc" not in out.text
    assert not Path("/etc/forgeline-probe").exists()
    assert not host_stage_dir(root, process.name).exists()


async def test_a_stage_stopped_midway_leaves_no_project_environment(
    runner: SandboxRunner, tmp_path: Path
) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    script = (
        'python -m venv --without-pip "$UV_PROJECT_ENVIRONMENT" && touch /workspace/go && sleep 60'
    )
    process = stage(root, script, leg="3.11")
    task = asyncio.create_task(runner.run(process, Collected()))
    for _ in range(600):
        if (root / "go").exists():
            break
        await asyncio.sleep(0.1)
    assert (root / "go").exists()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not host_stage_dir(root, process.name).exists()
