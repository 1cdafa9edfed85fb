"""Sandbox runner: each stage in bubblewrap namespaces as an unprivileged user, under cgroup limits.

The embedded default. What a stage sees and may do:
- its own PID, IPC, UTS and network namespaces; a fresh /proc showing only its own processes;
- a read-only toolchain (/usr and a short list of /etc files), the run's workspace read-write at
  /workspace, and nothing else of the host: no data dir, no other run's workspace, no keys;
- the build user (`FORGELINE_BUILD_UID`, never the worker's), no capabilities, no-new-privileges;
- loopback and an eth0 of no route (infra/runners/sandbox_network.py); when the stage asks for
  network, a forwarder on 127.0.0.1:3128 to the egress proxy, the one way out (egress_proxy.py);
- CPU, memory and process limits from its own cgroup, a disk limit on the workspace, and a kill
  of every process in the group on exit, timeout or cancel.
The environment is built from scratch: a clean PATH, the run's HOME and /tmp (beside the checkout,
never in it), a private bounded /dev/shm, and only the operator's proxy and CA settings.
Sandboxes start ahead of their stages, one stage each (infra/runners/sandbox_pool.py); a stage
with services (infra/runners/sandbox_services.py) or that the pool cannot take starts its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

from infra.runners.base import OutputCallback, Runner, StageOutcome, StageProcess
from infra.runners.cgroups import Cgroups, Limits, StageCgroup
from infra.runners.egress_proxy import EgressPolicy, EgressProxy
from infra.runners.local_runner import PUMP_DRAIN_SECONDS, close_output, pump_output
from infra.runners.node_stages import node_mount_args, sandbox_toolchains, wrap_runner
from infra.runners.python_seeds import python_mounts
from infra.runners.python_stages import run_python_aware
from infra.runners.python_toolchain import discover_pythons
from infra.runners.sandbox_args import (
    DISK_EXCEEDED_EXIT,
    HOST_ENVIRONMENT,
    PROXY_SOCKET,
    SANDBOX_HOME,
    SANDBOX_TMP,
    SANDBOX_WORKSPACE,
    STAGE_ENVIRONMENT_READER,
    STANDARD_PATH,
    SandboxConfig,
    become_build_user,
    feed_environment,
    forward_script,
    launcher,
    require_tool,
    stage_environment,
    stage_limits,
    static_args,
    write_identity_files,
)
from infra.runners.sandbox_network import SandboxNetwork
from infra.runners.sandbox_pool import (
    CONTROL,
    WAITER,
    PooledSandbox,
    SandboxPool,
    can_hand_over,
    handover,
    read_pipe,
    workspace_path,
)
from infra.runners.sandbox_services import refuse_services, with_services
from infra.runners.sandbox_workspace import (
    RunDirectories,
    SandboxUnavailable,
    ensure_run_home,
    prepare_workspace,
    watch_run_disk,
)

__all__ = ["SandboxConfig", "SandboxRunner", "sandbox_works"]

log = logging.getLogger("forgeline.sandbox")
PIPE_BUFFER = 65536  # a larger hand-over is written from a thread while the shell reads it


class SandboxRunner(Runner):
    kind = "sandbox"
    service_refusal = refuse_services

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.bwrap = require_tool("bwrap")
        self.setpriv = require_tool("setpriv")
        self.socat = require_tool("socat")
        if os.geteuid() != 0:
            raise SandboxUnavailable("the sandbox runner needs root to create its namespaces")
        self.cgroups = Cgroups()
        self.state_dir = config.state_dir
        self.etc_dir = self.state_dir / "etc"
        self.network = SandboxNetwork.detect()
        write_identity_files(self.etc_dir, config.uid, config.gid, self.network.hostname_address)
        self.proxy_socket = config.proxy_socket or self.state_dir / "egress" / "egress.sock"
        self._proxy: EgressProxy | None = None
        self._proxy_lock = asyncio.Lock()
        self.pythons = discover_pythons(config.python_roots)  # outside /usr: mounted read-only
        extra = replace(config, toolchain=(*config.toolchain, *python_mounts(config, self.pythons)))
        self.node = sandbox_toolchains(config)  # Node.js per image, mounted read-only
        base = static_args(self.bwrap, self.etc_dir, extra, self.network.caps)
        self._base_args = base + node_mount_args(self.node)
        self._become = [*self.network.setup_argv(), *become_build_user(self.setpriv, config)]
        self._staged = wrap_runner(self.node, self._run)
        self.pool: SandboxPool | None = None
        if config.pool_size > 0:
            self.pool = SandboxPool(config, self.cgroups, self._waiting_command)

    async def _ensure_proxy(self) -> None:
        if self._proxy is not None or self.config.proxy_socket is not None:
            return
        async with self._proxy_lock:
            if self._proxy is None:
                proxy = EgressProxy(
                    EgressPolicy.from_strings(self.config.egress_allow),
                    self.config.upstream_proxy,
                )
                await proxy.start(self.proxy_socket)
                self._proxy = proxy

    def _stage_argv(self, process: StageProcess) -> list[str]:
        if process.network:
            return ["/bin/sh", "-c", forward_script(self.socat), process.script]
        return ["/bin/sh", "-c", process.script]

    # A sandbox that waits for its stage --------------------------------------------------
    def _waiting_command(self, slot: Path, procs_files: list[Path]) -> list[str]:
        args = [*self._base_args, "--bind", str(slot / "ws"), SANDBOX_WORKSPACE]
        args += ["--bind", str(slot / "tmp"), SANDBOX_TMP, "--ro-bind", str(slot / "ctl"), CONTROL]
        args += ["--bind", str(slot / "home"), SANDBOX_HOME]
        args += ["--chdir", "/", "--", *self._become]
        return launcher(procs_files, self.config.disk_mb, [*args, "/bin/sh", "-c", WAITER])

    async def _pool_takes(self, process: StageProcess) -> bool:
        if self.pool is None or process.services:
            return False
        if process.disk_mb is not None and process.disk_mb > self.config.disk_mb:
            return False  # the waiting shell can lower its file-size limit, never raise it
        if not can_hand_over(stage_environment(self.config, process), process.script):
            return False
        try:  # once, however many first stages ask at once (they share the probe's paths)
            await self.pool.prepare_once(self.state_dir / "probe")
        except OSError as exc:
            log.warning("sandboxes start with their stages (no pool): %s", exc)
            self.pool = None
            return False
        return True

    # One stage ---------------------------------------------------------------------------
    async def run(self, process: StageProcess, on_output: OutputCallback) -> StageOutcome:
        return await run_python_aware(process, on_output, self.pythons, self.config, self._staged)

    async def _run(self, process: StageProcess, on_output: OutputCallback) -> StageOutcome:
        cfg = self.config
        root = process.root or process.workspace
        root.mkdir(parents=True, exist_ok=True)
        if root.stat().st_uid == cfg.uid:  # already the build user's: a few system calls
            dirs = prepare_workspace(root, cfg.uid, cfg.gid)
        else:  # the first stage: the whole checkout changes hands
            dirs = await asyncio.to_thread(prepare_workspace, root, cfg.uid, cfg.gid)
        try:
            if process.network:
                await self._ensure_proxy()
            pool = self.pool
            if pool is not None and await self._pool_takes(process):
                sandbox = await pool.take()
                try:
                    if self._assign(sandbox, process, root, dirs):
                        return await self._run_pooled(sandbox, process, on_output)
                finally:
                    pool.retire(sandbox)
            return await self._run_started(process, on_output, root, dirs)
        finally:
            dirs.close()

    def _assign(
        self, sandbox: PooledSandbox, process: StageProcess, root: Path, dirs: RunDirectories
    ) -> bool:
        """The stage's cgroup name and limits, its workspace, temporary directory and (with
        network) the proxy's socket bound onto the sandbox's slot. False, and no more pool,
        when this host cannot make those mounts."""
        cfg = self.config
        limits = stage_limits(self.config, process)
        # Named after the attempt, as a sandbox started for it would be (remove_stale finds it).
        sandbox.group = self.cgroups.rename(sandbox.group, process.name)
        if limits != Limits(cfg.memory_mb * 1024 * 1024, cfg.pids_limit, cfg.cpus):
            self.cgroups.apply(sandbox.group, limits)
        try:
            root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                sandbox.bind(root_fd, sandbox.workspace_mount)
            finally:
                os.close(root_fd)
            sandbox.bind(dirs.tmp_fd, sandbox.tmp_mount)
            sandbox.bind(dirs.home_fd, sandbox.home_mount)
            if process.network:
                socket_fd = os.open(self.proxy_socket, os.O_PATH | os.O_CLOEXEC)
                try:
                    sandbox.bind(socket_fd, sandbox.socket_mount)
                finally:
                    os.close(socket_fd)
        except OSError as exc:
            log.warning("sandboxes start with their stages (no pool): %s", exc)
            self.pool = None
            return False
        return True

    async def _run_pooled(
        self, sandbox: PooledSandbox, process: StageProcess, on_output: OutputCallback
    ) -> StageOutcome:
        cfg = self.config
        limits = stage_limits(self.config, process)
        root = process.root or process.workspace
        disk_blocks = None
        if process.disk_mb is not None and process.disk_mb < cfg.disk_mb:
            disk_blocks = process.disk_mb * 1024 * 1024 // 512
        message = handover(
            workspace_path(process.workdir),
            stage_environment(self.config, process),
            self._stage_argv(process),
            disk_blocks,
        )
        output_fd, sandbox.output_fd = sandbox.output_fd, -1
        reader, transport = await read_pipe(output_fd)
        try:
            if len(message) <= PIPE_BUFFER:
                sandbox.send(message)
            else:
                await asyncio.to_thread(sandbox.send, message)

            async def pump() -> None:
                while chunk := await reader.read(65536):
                    await on_output(chunk)

            async def ended() -> None:
                # Every process of the stage gets its SIGKILL; the FIFO then reaches EOF once
                # the last of them is gone (the namespaces are torn down after the result).
                sandbox.group.signal_all()
                sandbox.release_output()

            return await self._supervise(
                process, on_output, root, sandbox.group, limits, sandbox.proc, pump(), ended
            )
        finally:
            transport.close()

    # A sandbox started for its stage -----------------------------------------------------
    def _argv(self, process: StageProcess, root: Path, dirs: RunDirectories) -> list[str]:
        args = [*self._base_args, "--bind", str(root), SANDBOX_WORKSPACE]
        args += ["--bind-fd", str(dirs.tmp_fd), SANDBOX_TMP]
        args += ["--bind-fd", str(dirs.home_fd), SANDBOX_HOME]
        args += ["--chdir", workspace_path(process.workdir)]
        if process.network:
            args += ["--perms", "0755", "--dir", str(Path(PROXY_SOCKET).parent)]
            args += ["--ro-bind", str(self.proxy_socket), PROXY_SOCKET]
        user = ["--", *self._become, *STAGE_ENVIRONMENT_READER]
        argv, host = self._stage_argv(process), self.network.hostname_address
        return with_services(process, self.state_dir, args, user, argv, host)

    async def _run_started(
        self, process: StageProcess, on_output: OutputCallback, root: Path, dirs: RunDirectories
    ) -> StageOutcome:
        limits = stage_limits(self.config, process)
        group = await asyncio.to_thread(self.cgroups.create, process.name, limits)
        argv = launcher(
            group.procs_files,
            process.disk_mb or self.config.disk_mb,
            self._argv(process, root, dirs),
        )
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                env=HOST_ENVIRONMENT,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                pass_fds=(dirs.tmp_fd, dirs.home_fd),
            )
        except BaseException:
            await asyncio.to_thread(group.destroy)
            raise
        try:
            return await self._supervise(
                process,
                on_output,
                root,
                group,
                limits,
                proc,
                feed_environment(
                    proc.stdin,
                    stage_environment(self.config, process),
                    pump_output(proc, on_output),
                ),
                lambda: asyncio.to_thread(group.kill),
                close=lambda: close_output(proc),
            )
        finally:
            await asyncio.shield(asyncio.to_thread(group.destroy))

    async def _supervise(
        self,
        process: StageProcess,
        on_output: OutputCallback,
        root: Path,
        group: StageCgroup,
        limits: Limits,
        proc: asyncio.subprocess.Process,
        output: Awaitable[None],
        ended: Callable[[], Awaitable[None]],
        close: Callable[[], None] | None = None,
    ) -> StageOutcome:
        """Until the stage's first process exits (or its timeout, disk limit or cancel): then
        every process of it killed, the rest of its output delivered, the exit code returned."""
        cfg = self.config
        disk_limit = (process.disk_mb or cfg.disk_mb) * 1024 * 1024
        over_disk = asyncio.Event()
        watch = asyncio.create_task(
            watch_run_disk(root, disk_limit, cfg.disk_check_seconds, group.kill, over_disk)
        )
        pump = asyncio.ensure_future(output)
        try:
            timed_out = False
            try:
                async with asyncio.timeout(process.timeout_seconds):
                    await proc.wait()
            except TimeoutError:
                timed_out = True
            # Whatever the stage left running (background jobs, a SIGTERM-ignoring child) dies
            # with it and releases the output pipe.
            await ended()
            stopped = timed_out or over_disk.is_set()
            done, _ = await asyncio.wait({pump}, timeout=PUMP_DRAIN_SECONDS if stopped else None)
            if done:
                pump.result()
            else:  # a stalled log store: what it did not take is dropped
                pump.cancel()
                await asyncio.gather(pump, return_exceptions=True)
                if close is not None:
                    close()
            exit_code = await proc.wait()
            if over_disk.is_set():
                await on_output(
                    f"\nforgeline: stage stopped: its workspace exceeded the disk limit of "
                    f"{disk_limit // (1024 * 1024)} MB\n".encode()
                )
                return StageOutcome(exit_code=DISK_EXCEEDED_EXIT)
            if group.memory_exceeded() and exit_code != 0:
                await on_output(
                    f"\nforgeline: a process of the stage was killed: memory limit of "
                    f"{limits.memory_bytes // (1024 * 1024)} MB reached\n".encode()
                )
            return StageOutcome(exit_code=exit_code, timed_out=timed_out)
        except BaseException:
            await asyncio.shield(ended())
            pump.cancel()
            if close is not None:
                close()
            with contextlib.suppress(BaseException):
                await asyncio.shield(proc.wait())
                await asyncio.shield(asyncio.to_thread(group.wait_empty))
            raise
        finally:
            watch.cancel()
            await asyncio.gather(watch, pump, return_exceptions=True)

    async def stage_home(self, root: Path) -> Path | None:
        return await asyncio.to_thread(ensure_run_home, root, self.config.uid, self.config.gid)

    async def remove_stale(self, prefix: str) -> int:
        stale = self.cgroups.existing(prefix)  # a directory listing: no thread hop
        for group in stale:
            await asyncio.to_thread(group.destroy)
        return len(stale)

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
        if self._proxy is not None:
            await self._proxy.close()
            self._proxy = None


def sandbox_works(config: SandboxConfig) -> str | None:
    """None when a trivial sandboxed command runs here, else why not (for `auto` and errors)."""
    try:
        runner = SandboxRunner(config)
    except (SandboxUnavailable, OSError) as exc:
        return str(exc)
    probe = [*runner._base_args, "--", *become_build_user(runner.setpriv, config), "/bin/true"]
    result = subprocess.run(probe, capture_output=True, env={"PATH": STANDARD_PATH}, timeout=30)
    if result.returncode != 0:
        return result.stderr.decode(errors="replace").strip() or "bwrap failed"
    return None
