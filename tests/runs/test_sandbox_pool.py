"""Sandboxes started ahead of their stages: each serves exactly one stage, a later stage (of the
same run or another) sees nothing of an earlier one's sandbox, and what a killed worker's pool
left behind is removed by the next runner."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from infra.runners import StageProcess
from infra.runners.sandbox_pool import GROUP_PREFIX
from infra.runners.sandbox_runner import SandboxRunner
from tests.runs.helpers import Collected
from tests.runs.hostile import MARKER
from tests.runs.sandbox import sandbox_runner

# Which sandbox a stage ran in: its namespaces, by inode.
WHERE = "readlink /proc/self/ns/pid /proc/self/ns/net /proc/self/ns/mnt /proc/self/ns/ipc"


def stage(root: Path, script: str, **kw: object) -> StageProcess:
    return StageProcess(
        name=f"fl-{uuid.uuid4().hex[:12]}-pool-1",
        script=script,
        workspace=root,
        root=root,
        timeout_seconds=30,
        **kw,  # type: ignore[arg-type]
    )


def host_processes_with(marker: str) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if marker.encode() in Path(entry.path, "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


async def gone(marker: str) -> bool:
    """Killed processes may take a moment to be reaped; a bounded wait, not a timing claim."""
    for _ in range(200):
        if not host_processes_with(marker):
            return True
        await asyncio.sleep(0.05)
    return False


@pytest.fixture
async def pooled(tmp_path: Path) -> AsyncIterator[SandboxRunner]:
    runner = sandbox_runner(tmp_path / "state", pool_size=2)
    yield runner
    await runner.close()


async def test_a_later_stage_sees_nothing_of_an_earlier_sandbox(
    pooled: SandboxRunner, tmp_path: Path
) -> None:
    """Stage one leaves a process running, a file in its sandbox's /dev/shm, a shared memory
    segment in its IPC namespace and a file in its run's /tmp; the next stage of the same run,
    and a stage of another run, find none of it but the run's own /tmp."""
    run_a = tmp_path / "run-a"
    run_b = tmp_path / "run-b"
    first = Collected()
    leave = (
        f"echo {MARKER} > /dev/shm/left; echo {MARKER} > /tmp/left-in-run; ipcmk -M 4096; "
        f"setsid sh -c 'sleep 300; : {MARKER}' >/dev/null 2>&1 < /dev/null & "
        "sleep 0.2; echo left"
    )
    assert (await pooled.run(stage(run_a, leave), first)).exit_code == 0
    assert await gone(MARKER), "the first stage's background process outlived it"
    look = (
        "echo shm:$(ls -A /dev/shm); echo ipc:$(ipcs -m | grep -c '^0x'); "
        'printf %s "$NEEDLE" > "$HOME/needle"; '
        'echo procs:$(grep -lFf "$HOME/needle" /proc/[0-9]*/cmdline 2>/dev/null); '
        "echo tmp:$(cat /tmp/left-in-run 2>/dev/null)"
    )
    same_run, other_run = Collected(), Collected()
    needle = {"NEEDLE": MARKER}  # by variable: the looking stage's own command line lacks it
    assert (await pooled.run(stage(run_a, look, env=needle), same_run)).exit_code == 0
    assert (await pooled.run(stage(run_b, look, env=needle), other_run)).exit_code == 0
    assert "Shared memory id" in first.text and first.text.endswith("left\n"), first.text
    for out in (same_run, other_run):
        lines = out.text.splitlines()
        assert {"shm:", "ipc:0", "procs:"} <= set(lines), out.text
    # The run's own /tmp is the run's (kept across its stages), never another run's.
    assert f"tmp:{MARKER}" in same_run.text.splitlines()
    assert "tmp:" in other_run.text.splitlines()


async def test_each_of_many_concurrent_stages_gets_a_sandbox_of_its_own(
    pooled: SandboxRunner, tmp_path: Path
) -> None:
    """More stages at once than sandboxes waiting: every stage still runs alone in its own."""
    outs = [Collected() for _ in range(6)]
    results = await asyncio.gather(
        *(
            # Each stays alive a while, so the six overlap: the kernel reuses the number of a
            # namespace that is gone, and only live namespaces can be compared.
            pooled.run(stage(tmp_path / f"run-{i}", f"{WHERE}; ls /workspace; sleep 3"), outs[i])
            for i in range(6)
        )
    )
    assert all(r.exit_code == 0 for r in results)
    seen = [set(out.text.splitlines()[:4]) for out in outs]
    assert all(len(ns) == 4 for ns in seen)
    assert len(set().union(*seen)) == 6 * 4, "two stages shared a namespace"


async def test_hostile_handover_input_is_data(pooled: SandboxRunner, tmp_path: Path) -> None:
    """Quotes, newlines and command substitutions in variables and the script reach the stage
    as data; a name the waiting shell cannot export still runs (in a sandbox of its own)."""
    value = "a'b\"c\n$(touch /workspace/pwned-env) `id` ; exit 7 '\\''"
    script = "printf '%s|' \"$TRICKY\"; printf '%s' \"$(echo '$(touch /workspace/x)')\""
    out = Collected()
    root = tmp_path / "run"
    result = await pooled.run(stage(root, script, env={"TRICKY": value}), out)
    assert result.exit_code == 0
    assert out.text == f"{value}|$(touch /workspace/x)"
    assert not (root / "pwned-env").exists() and not (root / "x").exists()
    odd = Collected()
    result = await pooled.run(stage(root, 'echo "ran $OK"', env={"A-B": "1", "OK": "yes"}), odd)
    assert result.exit_code == 0 and odd.text == "ran yes\n"


async def test_cancelled_pooled_stage_leaves_nothing_running(
    pooled: SandboxRunner, tmp_path: Path
) -> None:
    marker = f"cancel-{uuid.uuid4().hex}"
    task = asyncio.create_task(
        pooled.run(stage(tmp_path / "run", f"sh -c 'sleep 300; : {marker}' & wait"), Collected())
    )
    for _ in range(200):
        if host_processes_with(marker):
            break
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await gone(marker)


CHILD = """
import asyncio, os, sys
from pathlib import Path
from infra.runners import StageProcess
from infra.runners.sandbox_runner import SandboxConfig, SandboxRunner

async def main() -> None:
    runner = SandboxRunner(SandboxConfig(state_dir=Path(sys.argv[1]), pool_size=2))
    root = Path(sys.argv[1]) / "ws"
    await runner.run(StageProcess(name="fl-child-pool-1", script="true", workspace=root,
                                  root=root, timeout_seconds=30), lambda b: asyncio.sleep(0))
    while len(runner.pool.ready) < 2:  # two waiting when the worker dies
        await asyncio.sleep(0.05)
    print(os.getpid(), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_a_killed_workers_waiting_sandboxes_are_removed(tmp_path: Path) -> None:
    """SIGKILL a worker with sandboxes waiting: the next runner on the host removes their slot
    directories and cgroups (and kills whatever of them was left)."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path / "child")],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert child.stdout is not None
    pid = int((await asyncio.to_thread(child.stdout.readline)).strip())
    runner = sandbox_runner(tmp_path / "state", pool_size=1)
    assert runner.pool is not None
    slots = runner.config.slots_dir
    assert [p for p in slots.iterdir() if p.name.startswith(f"{pid}-")]
    assert runner.cgroups.existing(f"{GROUP_PREFIX}{pid}-")
    os.kill(pid, signal.SIGKILL)
    child.wait()
    try:
        out = Collected()
        result = await runner.run(stage(tmp_path / "run", "echo ok"), out)
        assert result.exit_code == 0 and out.text == "ok\n"
        assert not [p for p in slots.iterdir() if p.name.startswith(f"{pid}-")]
        assert not runner.cgroups.existing(f"{GROUP_PREFIX}{pid}-")
    finally:
        await runner.close()
