"""UNISOLATED local process runner: each stage is `sh -c` in its own process group, in the run
workspace, with the worker's own identity, files and network.

For development only (`FORGELINE_CONTAINER_RUNNER=unsafe-local`), refused in production: a build
run this way can read everything the worker can. Resource limits are set by the shell before
the script (`ulimit`); cancel and timeout kill the whole group. A pidfile per attempt lets a retry
after a worker crash kill the orphaned group of its predecessor.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from infra.runners.base import OutputCallback, Runner, StageOutcome, StageProcess

_BASE_ENV_KEYS = ("PATH", "LANG", "LC_ALL", "TZ")
# Once a stage's processes are killed, what is left in its pipe is short: a sink that has not
# taken it after this long (a stalled log store) loses it rather than holding the stage open.
PUMP_DRAIN_SECONDS = 10.0


def _limited_argv(process: StageProcess) -> tuple[list[str], Callable[[], None] | None]:
    """`sh -c script` under resource limits, without a preexec_fn.

    A preexec_fn forces fork() of the whole worker (on the event loop, for every stage) instead
    of Python's fast vfork path. So the shell sets the limits itself, with `ulimit` on the
    script's first line (line numbers in its errors stay the script's own): one exec per stage.
    Limits `ulimit` cannot set portably (processes: `-p` in dash, `-u` in bash) go through
    util-linux `prlimit`, which execs the shell (one exec more); without it, a preexec_fn.
    """
    cpu_seconds = int(process.timeout_seconds) + 5
    memory = process.memory_mb * 1024 * 1024 if process.memory_mb else None
    # RLIMIT_NPROC counts every process of the user and root ignores it: only when unprivileged.
    nproc = process.pids_limit if os.geteuid() != 0 else None
    if not nproc:
        # Hard then soft (the soft CPU limit sends SIGXCPU, the hard one SIGKILL); both for the
        # rest, so the script cannot raise them again.
        limits = [f"ulimit -t {cpu_seconds + 5}", f"ulimit -S -t {cpu_seconds}", "ulimit -c 0"]
        if memory:
            limits.append(f"ulimit -v {memory // 1024}")
        guard = " && ".join(limits)
        prologue = f'{{ {guard}; }} || {{ echo "cannot set resource limits" >&2; exit 125; }}; '
        return ["/bin/sh", "-c", prologue + process.script], None
    shell = ["/bin/sh", "-c", process.script]
    prlimit = shutil.which("prlimit")
    if prlimit:
        args = [prlimit, f"--cpu={cpu_seconds}:{cpu_seconds + 5}", "--core=0"]
        if memory:
            args.append(f"--as={memory}")
        args.append(f"--nproc={nproc}")
        return [*args, "--", *shell], None

    def apply() -> None:
        # Runs in the child between fork and exec: only async-signal-safe work here.
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if memory:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))

    return shell, apply


def watch_children_with_pidfd() -> bool:
    """Have asyncio wait for stage processes through a pidfd in the running event loop, instead
    of Python 3.11's default of one thread per process blocked in waitpid() (a thread started per
    stage, and a wake-up through it when the stage ends). For the worker process: call once from
    its event loop. Later Pythons deprecate child watchers; they keep their default. Returns
    whether the pidfd watcher is in use."""
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return False
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return False  # a kernel without pidfds (before Linux 5.3)
    watcher = asyncio.PidfdChildWatcher()
    watcher.attach_loop(asyncio.get_running_loop())
    asyncio.set_child_watcher(watcher)
    return True


async def pump_output(proc: asyncio.subprocess.Process, on_output: OutputCallback) -> None:
    assert proc.stdout is not None
    while chunk := await proc.stdout.read(65536):
        await on_output(chunk)


def close_output(proc: asyncio.subprocess.Process) -> None:
    """Close the stage's output pipe. asyncio's wait() returns only once the pipe is closed,
    and a pipe whose reader stopped (its sink stalled, its pump cancelled) never reaches EOF."""
    transport = getattr(proc, "_transport", None)
    if transport is not None:
        transport.close()


async def end_output(
    proc: asyncio.subprocess.Process, pump: asyncio.Task[None], *, stopped: bool
) -> int:
    """After the stage's processes are gone: the rest of their output, then the exit code.

    A stage that ended by itself has produced all it will (what is left is buffered, bounded):
    every byte is delivered, however long the log store takes (an outage of it is ridden out
    by the store's own retries). A stage stopped by its timeout may have been flooding a
    stalled store: what did not arrive within PUMP_DRAIN_SECONDS is dropped."""
    done, _ = await asyncio.wait({pump}, timeout=PUMP_DRAIN_SECONDS if stopped else None)
    if not done:
        pump.cancel()
        await asyncio.gather(pump, return_exceptions=True)
        close_output(proc)
        return await proc.wait()
    pump.result()
    return await proc.wait()


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class LocalProcessRunner(Runner):
    kind = "unsafe-local"

    def __init__(self, state_dir: Path) -> None:
        self.pid_dir = state_dir / "pids"
        self.pid_dir.mkdir(parents=True, exist_ok=True)

    def _env(self, process: StageProcess) -> dict[str, str]:
        env = {k: os.environ[k] for k in _BASE_ENV_KEYS if k in os.environ}
        env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        env["HOME"] = str(process.workspace)
        env.update(process.env)
        env["FORGELINE_PROCESS"] = process.name
        return env

    async def run(self, process: StageProcess, on_output: OutputCallback) -> StageOutcome:
        process.workspace.mkdir(parents=True, exist_ok=True)
        argv, preexec = _limited_argv(process)
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=process.workspace,
            env=self._env(process),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=preexec,
        )
        pidfile = self.pid_dir / f"{process.name}.pid"
        pidfile.write_text(str(proc.pid))
        pump: asyncio.Task[None] | None = None
        try:
            pump = asyncio.create_task(pump_output(proc, on_output))
            timed_out = False
            try:
                async with asyncio.timeout(process.timeout_seconds):
                    exit_code = await proc.wait()
            except TimeoutError:
                timed_out = True
            # Background children die with their stage (and release the pipe they hold).
            _kill_group(proc.pid)
            exit_code = await end_output(proc, pump, stopped=timed_out)
            if timed_out:
                return StageOutcome(exit_code=exit_code, timed_out=True)
            return StageOutcome(exit_code=exit_code)
        except BaseException:
            _kill_group(proc.pid)
            if pump is not None:
                pump.cancel()
            close_output(proc)
            with contextlib.suppress(BaseException):
                await asyncio.shield(proc.wait())
            raise
        finally:
            pidfile.unlink(missing_ok=True)

    async def remove_stale(self, prefix: str) -> int:
        removed = 0
        # A prefix match, not glob(): glob compiles a regular expression per distinct pattern,
        # and every stage attempt has its own prefix.
        with os.scandir(self.pid_dir) as entries:
            stale = [
                Path(entry.path)
                for entry in entries
                if entry.name.startswith(prefix) and entry.name.endswith(".pid")
            ]
        for pidfile in stale:
            with contextlib.suppress(ValueError, OSError):
                pid = int(pidfile.read_text().strip())
                # The pid may have been reused since the crash: only kill our own process.
                marker = f"FORGELINE_PROCESS={pidfile.stem}".encode()
                if marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                    _kill_group(pid)
                    removed += 1
            pidfile.unlink(missing_ok=True)
        return removed
