"""Python stages in the real bubblewrap sandbox: the image's Python in a clean virtualenv of the
stage's own, first on PATH; pip and on-demand tools installing from a package index that the
test serves inside a network namespace of its own, reached only through the egress proxy."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from infra.runners import StageProcess
from infra.runners.python_stages import host_stage_dir, stage_base
from infra.runners.python_toolchain import choose_python, discover_pythons, requested_python
from infra.runners.sandbox_runner import SandboxRunner
from tests.runs.helpers import Collected
from tests.runs.python_index import PackageIndex, closure, package_index, repack, tiny_wheel
from tests.runs.sandbox import sandbox_runner

pytestmark = pytest.mark.timeout(300)

TINY = "def greet(name):\n    return f'hello {name}'\n"
# A stand-in for Poetry on the test's index: what the stage gets when it calls `poetry`.
FAKE_POETRY = "def main():\n    print('fake poetry 0.1 at work')\n"
PROJECT_TEST = "import tiny\n\n\ndef test_greets():\n    assert tiny.greet('ci') == 'hello ci'\n"
# Until a file of the workspace exists (bounded: 60 s).
WAIT_FOR = 'i=0; until [ -e {0} ]; do i=$((i+1)); [ "$i" -gt 600 ] && exit 3; sleep 0.1; done; '


@pytest.fixture
async def index(tmp_path: Path) -> AsyncIterator[PackageIndex]:
    wheels_dir = tmp_path / "wheels"
    wheels_dir.mkdir()
    wheels = [repack(name, wheels_dir) for name in closure(["pytest"])]
    wheels.append(tiny_wheel(wheels_dir, "tiny", "1.0", TINY))
    wheels.append(tiny_wheel(wheels_dir, "poetry", "0.1", FAKE_POETRY, console="poetry"))
    async with package_index(tmp_path, wheels) as served:
        yield served


@pytest.fixture
async def runner(tmp_path: Path, index: PackageIndex) -> AsyncIterator[SandboxRunner]:
    runner = sandbox_runner(
        tmp_path / "state", proxy_socket=index.proxy_socket, python_index_url=index.url
    )
    yield runner
    await runner.close()


def python_stage(
    root: Path, script: str, *, image: str = "python:3.11", network: bool = True
) -> StageProcess:
    return StageProcess(
        name=f"fl-{uuid.uuid4().hex[:12]}-python-1",
        script=script,
        workspace=root,
        root=root,
        timeout_seconds=240,
        image=image,
        network=network,
    )


async def test_pip_installs_from_the_index_and_pytest_passes(
    runner: SandboxRunner, tmp_path: Path, index: PackageIndex
) -> None:
    root = tmp_path / "ws"
    (root / "tests").mkdir(parents=True)
    (root / "tests" / "test_tiny.py").write_text(PROJECT_TEST)
    (root / "requirements.txt").write_text("tiny==1.0\npytest\n")
    script = (
        "pip install -r requirements.txt && python -m pytest -q && "
        'echo "venv=$VIRTUAL_ENV" && echo "pip=$(command -v pip)"'
    )
    process = python_stage(root, script)
    out = Collected()
    outcome = await runner.run(process, out)
    assert outcome.exit_code == 0, out.text
    assert outcome.notes == ()
    first = out.text.splitlines()[0]
    assert first.startswith("forgeline: Python 3.11."), out.text
    assert "1 passed" in out.text
    venv = f"{stage_base(process.name)}/venv"
    assert f"venv={venv}" in out.text
    assert f"pip={venv}/bin/pip" in out.text
    # Through the proxy to the namespace's index; the venv is gone with its stage.
    assert "/simple/tiny/" in index.hits.read_text()
    assert not (host_stage_dir(root, process.name)).exists()


async def test_the_workers_venv_is_not_reachable_and_writes_outside_fail(
    runner: SandboxRunner, tmp_path: Path
) -> None:
    worker_prefix = sys.prefix  # this test process's own virtualenv
    script = (
        'echo "path=$PATH"; '
        "python -c 'import sys; print(\"prefix=\" + sys.prefix)'; "
        "python -c 'import sys; print(\"base=\" + sys.base_prefix)'; "
        f"test -e {worker_prefix}/bin/python && echo worker-venv-visible; "
        'base=$(python -c "import sys; print(sys.base_prefix)"); '
        'touch "$base/forgeline-probe" 2>/dev/null && echo wrote-base; '
        "touch /usr/lib/forgeline-probe 2>/dev/null && echo wrote-usr; "
        "mkdir /opt/forgeline-probe 2>/dev/null && echo wrote-opt; "
        "touch /workspace/inside && echo wrote-workspace"
    )
    out = Collected()
    outcome = await runner.run(python_stage(tmp_path / "ws", script, network=False), out)
    assert outcome.exit_code == 0, out.text
    lines = dict(line.split("=", 1) for line in out.text.splitlines() if "=" in line)
    assert worker_prefix not in lines["path"]
    assert lines["path"].split(":")[0].endswith("/venv/bin")
    assert lines["prefix"].startswith("/home/build/.cache/forgeline/venvs/")
    assert lines["base"] != worker_prefix
    for refused in ("worker-venv-visible", "wrote-base", "wrote-usr", "wrote-opt"):
        assert refused not in out.text, out.text
    assert "wrote-workspace" in out.text


async def test_two_concurrent_python_stages_do_not_share_a_venv(
    runner: SandboxRunner, tmp_path: Path
) -> None:
    """Two stages of one run, at the same time in the same workspace: what one installs the
    other does not see."""
    root = tmp_path / "ws"
    installer = (
        'pip install -q tiny==1.0 && echo "$VIRTUAL_ENV" > a-venv && touch a-installed && '
        + WAIT_FOR.format("b-checked")
        + "python -c 'import tiny; print(tiny.greet(\"a\"))'"
    )
    checker = (
        WAIT_FOR.format("a-installed")
        + 'echo "$VIRTUAL_ENV" > b-venv; '
        + "python -c 'import tiny' 2>/dev/null && echo leaked || echo isolated; touch b-checked"
    )
    out_a, out_b = Collected(), Collected()
    a, b = await asyncio.gather(
        runner.run(python_stage(root, installer), out_a),
        runner.run(python_stage(root, checker), out_b),
    )
    assert a.exit_code == 0, out_a.text
    assert b.exit_code == 0, out_b.text
    assert "hello a" in out_a.text
    assert "isolated" in out_b.text and "leaked" not in out_b.text
    assert (root / "a-venv").read_text() != (root / "b-venv").read_text()


async def test_a_version_the_host_lacks_is_said_first_and_recorded(
    runner: SandboxRunner, tmp_path: Path
) -> None:
    installs = discover_pythons(None)
    request = requested_python("python:3.99")
    assert request is not None
    expected = choose_python(request, installs).install
    assert expected is not None
    out = Collected()
    outcome = await runner.run(
        python_stage(
            tmp_path / "ws", 'python -V && "$UV_PYTHON" -V', image="python:3.99", network=False
        ),
        out,
    )
    assert outcome.exit_code == 0, out.text
    first = out.text.splitlines()[0]
    assert first.startswith("forgeline: warning: image python:3.99 asks for Python 3.99"), first
    assert f"runs with Python {expected.version} instead" in first
    # The virtualenv's Python, and the one uv makes its own environments with.
    assert out.text.splitlines()[-2:] == [f"Python {expected.version}"] * 2, out.text
    assert len(outcome.notes) == 1 and "Python 3.99" in outcome.notes[0]


async def test_a_stage_that_calls_poetry_gets_it_from_the_index(
    runner: SandboxRunner, tmp_path: Path, index: PackageIndex
) -> None:
    """Not installed by the stage: the first call installs it into a virtualenv of its own
    (like pipx), the second finds it there; the stage's own virtualenv stays without it."""
    script = "poetry && poetry && python -m pip show poetry >/dev/null 2>&1 || echo not-in-venv"
    out = Collected()
    outcome = await runner.run(python_stage(tmp_path / "ws", script), out)
    assert outcome.exit_code == 0, out.text
    assert out.text.count("installing it from the package index") == 1, out.text
    assert out.text.count("fake poetry 0.1 at work") == 2
    assert "not-in-venv" in out.text
    assert "/simple/poetry/" in index.hits.read_text()


async def test_a_stage_of_another_image_runs_as_before(
    runner: SandboxRunner, tmp_path: Path
) -> None:
    out = Collected()
    process = python_stage(tmp_path / "ws", 'echo "venv=${VIRTUAL_ENV:-none}"', image="node:20")
    outcome = await runner.run(process, out)
    assert outcome.exit_code == 0, out.text
    assert out.text == "venv=none\n"
