"""Both runners, same scenarios: output, exit codes, timeout, cancel kills, stale cleanup."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

import pytest

from infra.containers import ContainerEngine, ImageUnavailable
from infra.runners import Runner, StageProcess, process_name, process_prefix
from infra.runners.docker_runner import DockerRunner
from tests.runs.helpers import Collected


def spec(tmp_path: Path, script: str, *, name: str = "fl-r1-build-1", timeout: float = 20, **kw):
    return StageProcess(
        name=name, script=script, workspace=tmp_path / "ws", timeout_seconds=timeout, **kw
    )


async def test_success_output_and_env(runner: Runner, tmp_path: Path) -> None:
    out = Collected()
    result = await runner.run(
        spec(
            tmp_path,
            'echo "hello $GREETING"; echo err >&2; echo data > out.txt',
            env={"GREETING": "world"},
        ),
        out,
    )
    assert result.exit_code == 0 and not result.timed_out
    assert "hello world" in out.text and "err" in out.text
    assert (tmp_path / "ws" / "out.txt").read_text() == "data\n"


async def test_failing_exit_code(runner: Runner, tmp_path: Path) -> None:
    result = await runner.run(spec(tmp_path, "echo failing; exit 3"), Collected())
    assert result.exit_code == 3


async def test_metacharacters_in_env_are_inert(runner: Runner, tmp_path: Path) -> None:
    branch = 'main; touch pwned && echo $(id) `id` "quote'
    out = Collected()
    result = await runner.run(
        spec(tmp_path, 'printf "%s\\n" "$FORGELINE_BRANCH"', env={"FORGELINE_BRANCH": branch}), out
    )
    assert result.exit_code == 0
    assert out.text.strip() == branch
    assert not (tmp_path / "ws" / "pwned").exists()


async def test_timeout_kills(runner: Runner, tmp_path: Path) -> None:
    out = Collected()
    started = time.monotonic()
    result = await runner.run(spec(tmp_path, "echo start; sleep 30; echo never", timeout=1.5), out)
    assert result.timed_out
    assert time.monotonic() - started < 15
    assert "never" not in out.text


async def test_cancel_kills_process(runner: Runner, tmp_path: Path) -> None:
    out = Collected()
    marker = tmp_path / "ws" / "alive"
    task = asyncio.create_task(
        runner.run(spec(tmp_path, "while true; do date > alive; sleep 0.2; done"), out)
    )
    for _ in range(100):
        if marker.exists():
            break
        await asyncio.sleep(0.1)
    assert marker.exists()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await asyncio.sleep(1.0)
    first = marker.read_text()
    await asyncio.sleep(1.0)
    assert marker.read_text() == first, "the stage kept running after cancel"


async def test_remove_stale_predecessor(runner: Runner, tmp_path: Path) -> None:
    old = process_name("r2", "test", 1)
    marker = tmp_path / "ws" / "beat"
    task = asyncio.create_task(
        runner.run(
            spec(tmp_path, "while true; do date > beat; sleep 0.2; done", name=old), Collected()
        )
    )
    for _ in range(100):
        if marker.exists():
            break
        await asyncio.sleep(0.1)
    # What a crashed worker leaves behind: the process/container of attempt 1, still running.
    removed = await runner.remove_stale(process_prefix("r2", "test"))
    assert removed == 1
    await asyncio.sleep(1.0)
    first = marker.read_text()
    await asyncio.sleep(1.0)
    assert marker.read_text() == first
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


async def test_background_children_do_not_outlive_stage(runner: Runner, tmp_path: Path) -> None:
    result = await runner.run(
        spec(
            tmp_path,
            "(while true; do date > bg; sleep 0.2; done) >/dev/null 2>&1 & sleep 0.5; echo started",
        ),
        Collected(),
    )
    assert result.exit_code == 0
    await asyncio.sleep(0.8)
    first = (tmp_path / "ws" / "bg").read_text()
    await asyncio.sleep(1.0)
    assert (tmp_path / "ws" / "bg").read_text() == first


def test_local_runner_is_not_leaking_pidfiles(tmp_path: Path) -> None:
    from infra.runners.local_runner import LocalProcessRunner

    runner = LocalProcessRunner(tmp_path / "state")
    asyncio.run(runner.run(spec(tmp_path, "true"), Collected()))
    assert os.listdir(runner.pid_dir) == []


async def test_local_runner_applies_resource_limits(tmp_path: Path) -> None:
    from infra.runners.local_runner import LocalProcessRunner

    out = Collected()
    runner = LocalProcessRunner(tmp_path / "state")
    result = await runner.run(
        spec(tmp_path, "ulimit -t; ulimit -H -t; ulimit -c; ulimit -v", timeout=20, memory_mb=512),
        out,
    )
    assert result.exit_code == 0
    cpu, cpu_hard, core, vmem = out.text.split()
    assert (cpu, cpu_hard, core, vmem) == ("25", "30", "0", str(512 * 1024))


async def test_local_runner_errors_keep_the_scripts_line_numbers(tmp_path: Path) -> None:
    """The limits are set on the script's first line, not on lines of their own: the shell
    reports the script's errors at the script's own line numbers."""
    from infra.runners.local_runner import LocalProcessRunner

    out = Collected()
    runner = LocalProcessRunner(tmp_path / "state")
    script = "echo first\nno_such_command_here"
    result = await runner.run(spec(tmp_path, script, timeout=20), out)
    assert result.exit_code == 127
    assert out.text.startswith("first\n")
    assert "2: no_such_command_here: not found" in out.text


async def test_an_image_the_engine_cannot_get_is_a_clear_error(
    docker_engine: ContainerEngine, busybox_image: str, tmp_path: Path
) -> None:
    """A stage image that is neither on the engine nor pullable (here: no registry at all) fails
    with what to do about it, and leaves no container behind."""
    runner = DockerRunner(docker_engine, busybox_image)
    missing = "registry.invalid/forgeline/never-built:1"
    with pytest.raises(ImageUnavailable) as raised:
        await runner.run(spec(tmp_path, "true", image=missing), Collected())
    message = str(raised.value)
    assert missing in message and "FORGELINE_CONTAINER_RUNNER=sandbox" in message
    assert await runner.remove_stale(process_prefix("r1", "build")) == 0


def test_local_runner_with_the_pidfd_child_watcher(tmp_path: Path) -> None:
    """As in worker.py: stage processes are awaited through a pidfd in the event loop, with no
    thread per process; exit codes and output arrive as with the default watcher."""
    import threading

    from infra.runners.local_runner import LocalProcessRunner, watch_children_with_pidfd

    runner = LocalProcessRunner(tmp_path / "state")

    async def stages() -> list[tuple[int, str, int]]:
        assert watch_children_with_pidfd()
        results = []
        for code in (0, 3):
            out = Collected()
            threads = threading.active_count()
            outcome = await runner.run(spec(tmp_path, f"echo out-{code}; exit {code}"), out)
            results.append((outcome.exit_code, out.text, threading.active_count() - threads))
        return results

    try:
        assert asyncio.run(stages()) == [(0, "out-0\n", 0), (3, "out-3\n", 0)]
    finally:
        asyncio.set_child_watcher(asyncio.ThreadedChildWatcher())


def test_missing_suffix_finds_what_the_stream_dropped() -> None:
    from infra.runners.docker_runner import missing_suffix

    assert missing_suffix(b"a\nyyys3c", b"yyys3cr3t") == b"r3t"
    assert missing_suffix(b"a\nyyys3cr3t", b"yyys3cr3t") == b""
    assert missing_suffix(b"xxabc", b"abcabc") == b"abc"
    assert missing_suffix(b"xxabcabc", b"abcabc") == b""
    assert missing_suffix(b"", b"tail") == b"tail"
    assert missing_suffix(b"unrelated", b"tail") == b""


async def test_docker_output_without_final_newline_arrives_whole(
    docker_engine: ContainerEngine, busybox_image: str, tmp_path: Path
) -> None:
    """The engine's follow stream can end before its last partial message; the runner takes it
    from the stored log (seen losing it 2 times in 12 before)."""
    runner = DockerRunner(docker_engine, busybox_image)
    script = "echo a; head -c 65533 /dev/zero | tr '\\0' y; printf %s s3cr3t-Value/with+chars"
    for attempt in range(12):
        out = Collected()
        result = await runner.run(
            spec(tmp_path, script, name=f"fl-r1-tail-{attempt}", image=busybox_image), out
        )
        assert result.exit_code == 0
        assert out.data == b"a\n" + b"y" * 65533 + b"s3cr3t-Value/with+chars", attempt


async def test_output_of_a_finished_stage_waits_out_a_stalled_log_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stage that ends by itself while its log store stalls (a database outage) loses no line:
    only a stage stopped by its timeout has its undelivered output dropped after a bound."""
    from infra.runners import local_runner
    from tests.runs.sandbox import sandbox_runner

    monkeypatch.setattr(local_runner, "PUMP_DRAIN_SECONDS", 0.3)
    runner = sandbox_runner(tmp_path / "state")
    stalled = asyncio.Event()
    out = Collected()

    async def slow_store(chunk: bytes) -> None:
        if not stalled.is_set():
            stalled.set()
            await asyncio.sleep(1.5)  # the store is down for five drain bounds
        await out(chunk)

    script = 'i=0; while [ $i -lt 20 ]; do echo "line-$i"; i=$((i+1)); done'
    result = await runner.run(spec(tmp_path, script, name="fl-r1-stall-1"), slow_store)
    await runner.close()
    assert result.exit_code == 0
    assert out.text.split() == [f"line-{i}" for i in range(20)]
