"""What a stage finds in the sandbox that a CI runner (a GitHub Actions runner, a container) has
and common tools expect: a home of the run's own outside the checkout (so `prettier --check .`,
`xo` and `git status` see only the repository), a private /dev/shm where POSIX semaphores and
shared memory work, a named user for `whoami`, `pwd` lookups and git, a UTF-8 locale, /dev/pts for
tools that want a terminal, and a writable /var/tmp; with and without pre-started sandboxes."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from infra.runners import StageProcess
from infra.runners.sandbox_runner import SandboxRunner
from infra.runners.sandbox_workspace import run_home, run_state_dir
from tests.runs.helpers import Collected
from tests.runs.hostile import hostile
from tests.runs.sandbox import sandbox_runner

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(params=[2, 0], ids=["pooled", "started"])
async def runner(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SandboxRunner]:
    runner = sandbox_runner(tmp_path / "state", pool_size=request.param, disk_check_seconds=0.2)
    yield runner
    await runner.close()


def _next_stage(first: StageProcess, script: str, **kw: object) -> StageProcess:
    return StageProcess(
        name=f"fl-{uuid.uuid4().hex[:12]}-next-1",
        script=script,
        workspace=first.workspace,
        root=first.root,
        timeout_seconds=60,
        **kw,  # type: ignore[arg-type]
    )


def _repository(root: Path) -> None:
    root.mkdir(parents=True)
    git = ["git", "-C", str(root), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (root / "index.js").write_text("module.exports = 1;\n")
    subprocess.run([*git, "add", "index.js"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], check=True)


async def test_home_and_caches_live_outside_the_checkout(
    runner: SandboxRunner, tmp_path: Path
) -> None:
    """A package manager's store in the home and files in /tmp are not in the checkout: a
    repository-wide listing sees the repository's files only, git status stays clean, and the
    next stage of the run finds the home as the first left it."""
    script = (
        'echo "home=$HOME"; mkdir -p ~/.local/share/pnpm/store ~/.npm && '
        "echo 'export {}' > ~/.local/share/pnpm/store/index.d.ts && echo t > /tmp/t && "
        "find /workspace -path /workspace/.git -prune -o -print | sort; git status --porcelain"
    )
    first = hostile(runner, tmp_path, script)
    _repository(first.workspace)
    out = Collected()
    result = await runner.run(first, out)
    assert result.exit_code == 0, out.text
    assert out.text.split() == [
        "home=/home/build",
        "/workspace",
        "/workspace/index.js",
    ]
    assert sorted(p.name for p in first.workspace.iterdir()) == [".git", "index.js"]
    second = _next_stage(first, "cat ~/.local/share/pnpm/store/index.d.ts /tmp/t")
    out = Collected()
    assert (await runner.run(second, out)).exit_code == 0, out.text
    assert out.text.split() == ["export", "{}", "t"]
    assert (run_home(first.workspace) / ".npm").is_dir()


async def test_dev_shm_holds_semaphores_and_shared_memory(
    runner: SandboxRunner, tmp_path: Path
) -> None:
    script = (
        "python3 -c '"
        "import multiprocessing as mp\n"
        "from multiprocessing import shared_memory\n"
        "lock = mp.Lock(); queue = mp.Queue()\n"
        "def put(q, l):\n"
        "    with l: q.put(41 + 1)\n"
        "p = mp.Process(target=put, args=(queue, lock)); p.start(); p.join()\n"
        "block = shared_memory.SharedMemory(create=True, size=4096)\n"
        "block.close(); block.unlink()\n"
        'print("got", queue.get(timeout=30))\n'
        "'; stat -c '%a' /dev/shm"
    )
    out = Collected()
    result = await runner.run(hostile(runner, tmp_path, script), out)
    assert result.exit_code == 0, out.text
    assert out.text.split() == ["got", "42", "1777"]


async def test_a_named_user_with_a_locale_a_terminal_and_var_tmp(
    runner: SandboxRunner, tmp_path: Path
) -> None:
    """whoami, the passwd entry's home, getpass, git's identity, a UTF-8 locale, a pseudo
    terminal, /var/tmp, /dev/null and /dev/urandom, as on a CI runner."""
    script = (
        'whoami; id -un; echo "user=$USER logname=$LOGNAME lang=$LANG"; '
        "python3 -c 'import getpass, os, pwd; e = pwd.getpwuid(os.getuid()); "
        'print("pw", e.pw_name, e.pw_dir, getpass.getuser())\'; '
        "python3 -c 'import os, pty; m, s = pty.openpty(); print(\"tty\", os.isatty(s))'; "
        'python3 -c \'print("utf8", "\\u00e9".encode())\'; '
        "git config --global user.name build && git config --global user.email b@example.com && "
        "git init -q /tmp/r && git -C /tmp/r commit -q --allow-empty -m x && echo git-ok; "
        "echo v > /var/tmp/v && cat /tmp/v; head -c 8 /dev/urandom | wc -c; echo x > /dev/null"
    )
    out = Collected()
    result = await runner.run(hostile(runner, tmp_path, script), out)
    assert result.exit_code == 0, out.text
    lines = out.text.splitlines()
    assert lines[:3] == ["build", "build", "user=build logname=build lang=C.UTF-8"], out.text
    assert "pw build /home/build build" in lines
    assert "tty True" in lines and "utf8 b'\\xc3\\xa9'" in lines
    assert "git-ok" in lines and "v" in lines and "8" in lines


async def test_the_runs_home_and_tmp_go_with_its_workspace(
    runner: SandboxRunner, tmp_path: Path
) -> None:
    from core.runs.finishing import remove_workspace

    process = hostile(runner, tmp_path, "echo c > ~/c; echo t > /tmp/t")
    assert (await runner.run(process, Collected())).exit_code == 0
    assert (run_home(process.workspace) / "c").is_file()
    await remove_workspace(process.workspace)
    assert not process.workspace.exists() and not run_state_dir(process.workspace).exists()
