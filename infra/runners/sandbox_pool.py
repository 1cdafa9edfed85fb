"""Sandboxes started before their stage asks: namespaces, mounts, cgroup and build user ready,
a shell of the build user's waiting on a pipe. One stage each, then the whole sandbox is gone.

A slot directory per sandbox on a shared tmpfs (`SandboxConfig.slots_dir`) is bound into it at
/workspace, /tmp, the build user's home and /run/forgeline (read-only). When a stage takes the
sandbox, the host binds the run's workspace, its temporary directory, its home and (for a
networked stage) the egress proxy's socket onto the slot; mount propagation carries them into
the waiting sandbox. The stage's commands and environment then arrive over the pipe; its output
leaves through a FIFO of the slot, so the stage's end is seen when its own processes end, not
after the namespaces are torn down (which happens after the result, with the slot's removal).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import shlex
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from infra.runners import mounts
from infra.runners.cgroups import Cgroups, Limits, StageCgroup
from infra.runners.sandbox_args import SANDBOX_WORKSPACE, SandboxConfig
from infra.runners.sandbox_workspace import SandboxUnavailable

log = logging.getLogger("forgeline.sandbox")

READY = b"forgeline-sandbox-ready\n"
# The build user's shell in a waiting sandbox: say it is ready, then run what the host sends
# (its own generated, quoted commands, ending in the stage's exec). Reaching the end is a failure.
WAITER = "printf 'forgeline-sandbox-ready\\n'; . /dev/stdin; exit 125"
CONTROL = "/run/forgeline"
OUTPUT_FIFO = "out"
# A slot's mount points of the run's checkout, temporary directory and home.
SLOT_DIRS = ("ws", "tmp", "home")
SPAWN_SECONDS = 30.0
# A pool grown by demand goes back to its configured size after this long without a take.
IDLE_SECONDS = 30.0
GROUP_PREFIX = "fl-pool-"
_names = itertools.count(1)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def can_hand_over(env: dict[str, str], script: str) -> bool:
    """Whether the waiting shell can take this stage: variables it can export by name, and no
    NUL byte (which no exec could carry either)."""
    texts = [script, *env.values()]
    return all(_IDENTIFIER.fullmatch(k) for k in env) and not any("\0" in t for t in texts)


def handover(cwd: str, env: dict[str, str], argv: list[str], disk_blocks: int | None) -> bytes:
    """The commands the waiting shell sources: output to the slot's FIFO, the stage's directory,
    a clean environment, then the stage itself in place of the shell."""
    lines = [
        f"exec 0</dev/null >{CONTROL}/{OUTPUT_FIFO} 2>&1 || exit 125",
        f"cd -- {shlex.quote(cwd)} || exit 125",
        "unset OLDPWD",
    ]
    if disk_blocks is not None:
        lines.append(f"ulimit -f {disk_blocks} || exit 125")
    lines += [f"export {shlex.quote(f'{key}={value}')}" for key, value in env.items()]
    lines.append("exec " + " ".join(shlex.quote(a) for a in argv))
    return ("\n".join(lines) + "\n").encode()


@dataclass
class PooledSandbox:
    """One waiting sandbox and everything of the host's it holds."""

    slot: Path
    group: StageCgroup
    proc: asyncio.subprocess.Process
    message_fd: int
    output_fd: int
    # Held open by the host until the stage has ended: a FIFO without writers reads as EOF.
    keepalive_fd: int
    bound: list[Path] = field(default_factory=list)

    @property
    def workspace_mount(self) -> Path:
        return self.slot / "ws"

    @property
    def tmp_mount(self) -> Path:
        return self.slot / "tmp"

    @property
    def home_mount(self) -> Path:
        return self.slot / "home"

    @property
    def socket_mount(self) -> Path:
        return self.slot / "ctl" / "egress.sock"

    def bind(self, source_fd: int, target: Path) -> None:
        mounts.bind_descriptor(source_fd, target)
        self.bound.append(target)

    def send(self, message: bytes) -> None:
        """Hand the stage over (the pipe holds 64 KiB; a larger message is written blocking
        by the caller's thread)."""
        fd, self.message_fd = self.message_fd, -1
        try:
            view = memoryview(message)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)

    def release_output(self) -> None:
        """The stage ended: its own processes are the FIFO's last writers."""
        fd, self.keepalive_fd = self.keepalive_fd, -1
        if fd >= 0:
            os.close(fd)

    def destroy(self) -> None:
        """Kill what is left, unmount the slot, remove the group and the slot (blocking)."""
        self.group.signal_all()
        self.group.destroy_patiently()
        for target in reversed(self.bound):
            with contextlib.suppress(OSError):
                mounts.detach(target)
        self.release_output()
        for fd in (self.message_fd, self.output_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.message_fd = self.output_fd = -1
        shutil.rmtree(self.slot, ignore_errors=True)


class SandboxPool:
    """Sandboxes waiting for stages. `take()` hands one out and starts its replacement at once
    (while the stage runs, not after it); `retire()` tears it down after its stage. The number
    waiting follows demand: `config.pool_size` at rest, one more each time a stage finds none
    waiting (up to `config.pool_max`), back to `pool_size` after IDLE_SECONDS without a take."""

    def __init__(
        self,
        config: SandboxConfig,
        cgroups: Cgroups,
        command: Callable[[Path, list[Path]], list[str]],
    ) -> None:
        self.config = config
        self.cgroups = cgroups
        # The command starting a sandbox bound to a slot directory, in a cgroup (its procs files).
        self.command = command
        self.prefix = f"{os.getpid()}-{next(_names)}-"
        self.ready: list[PooledSandbox] = []
        self.starting = 0
        self.target = config.pool_size
        # Stages that found no sandbox waiting and started their own.
        self.misses = 0
        self.last_take = 0.0
        self._trim_handle: asyncio.TimerHandle | None = None
        self.tasks: set[asyncio.Future[None]] = set()
        # Slot set-up and tear-down block on the kernel (cgroup directories, dying namespaces):
        # threads of the pool's own, so a burst of stages never starves the default executor,
        # and tear-down has its own, so a replacement is never queued behind dying sandboxes.
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sandbox-pool")
        self.teardown = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sandbox-teardown")
        self.closed = False
        self.prepared = False
        self.usable = False  # prepared, and the mount API probed
        self._preparing = asyncio.Lock()

    def prepare(self) -> None:
        """The shared slots tmpfs mounted, and what dead processes' pools left there removed."""
        if self.prepared:
            return
        mounts.ensure_shared_tmpfs(self.config.slots_dir)
        self._remove_orphans()
        self.prepared = True

    async def prepare_once(self, probe: Path) -> None:
        """`prepare()` and a probe that this host can bind by descriptor, once however many
        stages ask at once (OSError: no pool here)."""
        if self.usable:
            return
        async with self._preparing:
            if not self.usable:
                await asyncio.to_thread(self.prepare)
                why_not = await asyncio.to_thread(mounts.mount_api_works, probe)
                if why_not is not None:
                    raise mounts.MountUnavailable(why_not)
                self.usable = True

    def _remove_orphans(self) -> None:
        with contextlib.suppress(OSError), os.scandir(self.config.slots_dir) as entries:
            for entry in entries:
                if not entry.is_dir(follow_symlinks=False) or _alive(entry.name):
                    continue
                slot = Path(entry.path)
                for target in (*(slot / d for d in SLOT_DIRS), slot / "ctl" / "egress.sock"):
                    with contextlib.suppress(OSError):
                        mounts.detach(target)
                shutil.rmtree(slot, ignore_errors=True)
        for group in self.cgroups.existing(GROUP_PREFIX):
            if not _alive(group.name.removeprefix(GROUP_PREFIX)):
                group.destroy()

    async def take(self) -> PooledSandbox:
        loop = asyncio.get_running_loop()
        self.last_take = loop.time()
        try:
            while self.ready:
                sandbox = self.ready.pop()
                if sandbox.proc.returncode is None:
                    return sandbox
                self._discard(sandbox)  # died while waiting: never handed out
            self.misses += 1
            self._grow(loop)
            return await self.start()
        finally:
            self._refill()  # the replacement starts while this stage runs

    def _grow(self, loop: asyncio.AbstractEventLoop) -> None:
        """One more waiting sandbox wanted (up to `pool_max`); shrunk again when idle."""
        ceiling = max(self.config.pool_size, self.config.pool_max)
        if self.target >= ceiling:
            return
        self.target += 1
        if self._trim_handle is None:
            self._trim_handle = loop.call_later(IDLE_SECONDS, self._trim)

    def _trim(self) -> None:
        self._trim_handle = None
        if self.closed or self.target <= self.config.pool_size:
            return
        loop = asyncio.get_running_loop()
        idle = loop.time() - self.last_take
        if idle < IDLE_SECONDS:
            self._trim_handle = loop.call_later(IDLE_SECONDS - idle, self._trim)
            return
        self.target = self.config.pool_size
        while len(self.ready) > self.target:
            self._discard(self.ready.pop(0))  # the oldest first

    def _refill(self) -> None:
        while not self.closed and len(self.ready) + self.starting < self.target:
            self.starting += 1
            task = asyncio.create_task(self._start_waiting())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _start_waiting(self) -> None:
        try:
            sandbox = await self.start()
        except Exception as exc:  # the stage that asks next starts its own and sees why
            log.warning("starting a waiting sandbox: %s", exc)
            return
        finally:
            self.starting -= 1
        if self.closed:
            self._discard(sandbox)
        else:
            self.ready.append(sandbox)

    def _prepare_slot(self, name: str) -> tuple[Path, StageCgroup]:
        """The slot's directories, its output FIFO (the build user's) and the sandbox's cgroup
        (blocking: cgroup directories take a kernel-wide lock)."""
        cfg = self.config
        slot = cfg.slots_dir / name
        control = slot / "ctl"
        for directory in (slot, *(slot / d for d in SLOT_DIRS), control):
            directory.mkdir(mode=0o755)
        (control / "egress.sock").touch(mode=0o644)
        fifo = control / OUTPUT_FIFO
        os.mkfifo(fifo, 0o600)
        os.chown(fifo, cfg.uid, cfg.gid)
        limits = Limits(cfg.memory_mb * 1024 * 1024, cfg.pids_limit, cfg.cpus)
        try:
            return slot, self.cgroups.create(f"{GROUP_PREFIX}{name}", limits)
        except BaseException:
            shutil.rmtree(slot, ignore_errors=True)
            raise

    async def start(self) -> PooledSandbox:
        cfg = self.config
        loop = asyncio.get_running_loop()
        slot, group = await loop.run_in_executor(
            self.executor, self._prepare_slot, f"{self.prefix}{next(_names)}"
        )
        fifo = slot / "ctl" / OUTPUT_FIFO
        output_fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        keepalive_fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        read_fd, message_fd = os.pipe2(os.O_CLOEXEC)
        # The waiting shell (the build user) reads its stage from the pipe by path.
        os.fchown(read_fd, cfg.uid, cfg.gid)
        # bwrap's own output (and the ready line). Not an asyncio pipe of the process: its wait()
        # would then last until the sandbox's pid 1 has torn its namespaces down.
        control_read, control_write = os.pipe2(os.O_CLOEXEC)
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.command(slot, group.procs_files),
                env={"PATH": "/usr/bin:/bin"},
                stdin=read_fd,
                stdout=control_write,
                stderr=control_write,
                start_new_session=True,
            )
        except BaseException:
            for fd in (message_fd, output_fd, keepalive_fd, control_read):
                os.close(fd)
            await loop.run_in_executor(self.teardown, group.destroy)
            shutil.rmtree(slot, ignore_errors=True)
            raise
        finally:
            os.close(read_fd)
            os.close(control_write)
        sandbox = PooledSandbox(slot, group, proc, message_fd, output_fd, keepalive_fd)
        try:
            line = await _ready_line(control_read)
            if not line.startswith(READY):
                raise SandboxUnavailable(line.decode(errors="replace").strip() or "bwrap failed")
        except BaseException:
            sandbox.group.signal_all()
            await asyncio.shield(loop.run_in_executor(self.teardown, sandbox.destroy))
            raise
        return sandbox

    def _discard(self, sandbox: PooledSandbox) -> None:
        loop = asyncio.get_running_loop()
        task: asyncio.Future[None]
        try:
            task = loop.run_in_executor(self.teardown, sandbox.destroy)
        except RuntimeError:  # closed: a stage that outlived its runner's close
            task = asyncio.ensure_future(asyncio.to_thread(sandbox.destroy))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def retire(self, sandbox: PooledSandbox) -> None:
        """The stage is over: the sandbox is torn down in the background, never used again (its
        replacement started when the stage took it; one more if that start failed)."""
        self._discard(sandbox)
        self._refill()

    async def close(self) -> None:
        self.closed = True
        if self._trim_handle is not None:
            self._trim_handle.cancel()
            self._trim_handle = None
        while self.ready:
            self._discard(self.ready.pop())
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)
        self.executor.shutdown(wait=False)
        self.teardown.shutdown(wait=False)


async def read_pipe(fd: int) -> tuple[asyncio.StreamReader, asyncio.ReadTransport]:
    """A stream over the pipe or FIFO `fd`; closing the transport closes the descriptor."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**20)
    pipe = open(fd, "rb", buffering=0)  # noqa: SIM115 (the transport owns and closes it)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    return reader, transport


async def _ready_line(fd: int) -> bytes:
    """The sandbox's first line (the ready line, or bwrap's error), then its control pipe closed:
    nothing else is read from it."""
    reader, transport = await read_pipe(fd)
    try:
        async with asyncio.timeout(SPAWN_SECONDS):
            line = await reader.readline()
            if line != READY:
                line += await reader.read(4096)
        return line
    finally:
        transport.close()


def _alive(name: str) -> bool:
    """Whether the process a slot or group name starts with (its pid) still runs."""
    pid = name.split("-", 1)[0]
    if not pid.isdigit():
        return True  # not ours to judge
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def workspace_path(workdir: str) -> str:
    return f"{SANDBOX_WORKSPACE}/{workdir}" if workdir else SANDBOX_WORKSPACE
