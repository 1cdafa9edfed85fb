"""Sandbox runner: each stage in bubblewrap namespaces as an unprivileged user, under cgroup limits.

The embedded default. What a stage sees and may do:
- its own PID, IPC, UTS and network namespaces; a fresh /proc showing only its own processes;
- a read-only toolchain (/usr and a short list of /etc files), the run's workspace read-write at
  /workspace, and nothing else of the host: no data dir, no other run's workspace, no keys;
- the build user (`FORGELINE_BUILD_UID`, never the worker's), no capabilities, no-new-privileges;
- a network of loopback only; when the stage asks for network, a forwarder on 127.0.0.1:3128 to
  the egress proxy outside (infra/runners/egress_proxy.py), the one way out;
- CPU, memory and process limits from its own cgroup, a disk limit on the workspace, and a kill
  of every process in the group on exit, timeout or cancel.
The environment is built from scratch: a clean PATH, HOME and TMPDIR inside the workspace, and
only the proxy and CA settings the operator configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from infra.runners.base import OutputCallback, Runner, StageOutcome, StageProcess
from infra.runners.cgroups import Cgroups, Limits, StageCgroup
from infra.runners.egress_proxy import (
    PROXY_PORT,
    EgressPolicy,
    EgressProxy,
    proxy_environment,
)
from infra.runners.local_runner import close_output, end_output, pump_output
from infra.runners.sandbox_workspace import (
    SANDBOX_DIR,
    SandboxUnavailable,
    prepare_workspace,
    workspace_usage,
)

log = logging.getLogger("forgeline.sandbox")

SANDBOX_WORKSPACE = "/workspace"
# Inside the sandbox (its own mount namespace): not the host's /tmp.
SANDBOX_TMP = "/tmp"  # noqa: S108
PROXY_SOCKET = "/run/forgeline/egress.sock"
STANDARD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Read-only host files a toolchain needs (TLS roots, dynamic linker, time zone, MIME, services).
ETC_FILES = (
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "alternatives",
    "localtime",
    "timezone",
    "mime.types",
    "os-release",
    "debian_version",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "protocols",
    "services",
    "profile",
    "bash.bashrc",
    "inputrc",
    "java-17-openjdk",
    "java-21-openjdk",
)
ROOT_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
CA_VARIABLES = (
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "PIP_CERT",
    "GIT_SSL_CAINFO",
    "AWS_CA_BUNDLE",
    "CARGO_HTTP_CAINFO",
)
SANDBOX_CA = "/etc/forgeline/ca.pem"
DISK_EXCEEDED_EXIT = 137


@dataclass(frozen=True)
class SandboxConfig:
    state_dir: Path
    uid: int = 61000
    gid: int = 61000
    memory_mb: int = 4096
    pids_limit: int = 1024
    disk_mb: int = 10240
    cpus: float | None = None
    toolchain: tuple[Path, ...] = ()
    ca_bundle: Path | None = None
    pass_host_ca: bool = False
    egress_allow: tuple[str, ...] = ()
    upstream_proxy: str | None = None
    # An egress proxy run elsewhere (its own process or service): the runner starts none.
    proxy_socket: Path | None = None
    disk_check_seconds: float = 1.0


def _require(tool: str) -> str:
    path = shutil.which(tool, path=STANDARD_PATH)
    if path is None:
        raise SandboxUnavailable(
            f"{tool} is not installed: run scripts/ensure-sandbox.sh (apt-get install "
            "bubblewrap socat util-linux)"
        )
    return path


class SandboxRunner(Runner):
    kind = "sandbox"

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.bwrap = _require("bwrap")
        self.setpriv = _require("setpriv")
        self.socat = _require("socat")
        if os.geteuid() != 0:
            raise SandboxUnavailable("the sandbox runner needs root to create its namespaces")
        self.cgroups = Cgroups()
        self.state_dir = config.state_dir
        self.etc_dir = self.state_dir / "etc"
        self._write_identity_files()
        self.proxy_socket = config.proxy_socket or self.state_dir / "egress" / "egress.sock"
        self._proxy: EgressProxy | None = None
        self._proxy_lock = asyncio.Lock()
        self._base_args = self._static_args()

    # Set-up, once per runner -------------------------------------------------------------
    def _write_identity_files(self) -> None:
        uid, gid = self.config.uid, self.config.gid
        home = f"{SANDBOX_WORKSPACE}/{SANDBOX_DIR}/home"
        files = {
            "passwd": f"root:x:0:0::/nonexistent:/usr/sbin/nologin\n"
            f"build:x:{uid}:{gid}:Forgeline build:{home}:/bin/sh\n",
            "group": f"root:x:0:\nbuild:x:{gid}:\n",
            "hosts": "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n",
            "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
            "hostname": "forgeline-build\n",
        }
        self.etc_dir.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (self.etc_dir / name).write_text(text)

    def _static_args(self) -> list[str]:
        args = [
            self.bwrap,
            "--unshare-pid",
            "--unshare-net",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--hostname",
            "forgeline-build",
            "--die-with-parent",
            "--new-session",
            # setpriv (below) needs these to become the build user; it then drops every one.
            "--cap-drop",
            "ALL",
            "--cap-add",
            "CAP_SETUID",
            "--cap-add",
            "CAP_SETGID",
            "--cap-add",
            "CAP_SETPCAP",
            "--ro-bind",
            "/usr",
            "/usr",
        ]
        for name in ROOT_DIRS:
            path = Path("/") / name
            if path.is_symlink():
                args += ["--symlink", os.readlink(path), f"/{name}"]
            elif path.is_dir():
                args += ["--ro-bind", str(path), f"/{name}"]
        args += ["--perms", "0755", "--dir", "/etc"]
        for name in ETC_FILES:
            if (Path("/etc") / name).exists():
                args += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
        for name in ("passwd", "group", "hosts", "nsswitch.conf", "hostname"):
            args += ["--ro-bind", str(self.etc_dir / name), f"/etc/{name}"]
        for extra in self.config.toolchain:
            args += ["--ro-bind", str(extra), str(extra)]
        if self.config.ca_bundle is not None:
            args += ["--ro-bind", str(self.config.ca_bundle), SANDBOX_CA]
        args += ["--proc", "/proc", "--dev", "/dev", "--perms", "0755", "--tmpfs", "/run"]
        return args

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

    # One stage ---------------------------------------------------------------------------
    def environment(self, process: StageProcess) -> dict[str, str]:
        home = f"{SANDBOX_WORKSPACE}/{SANDBOX_DIR}/home"
        env = {
            "PATH": f"{home}/.local/bin:{STANDARD_PATH}",
            "HOME": home,
            "TMPDIR": SANDBOX_TMP,
            "USER": "build",
            "LOGNAME": "build",
            "SHELL": "/bin/sh",
            "LANG": "C.UTF-8",
        }
        if self.config.ca_bundle is not None:
            env |= dict.fromkeys(CA_VARIABLES, SANDBOX_CA)
        elif self.config.pass_host_ca:
            env |= {k: os.environ[k] for k in CA_VARIABLES if k in os.environ}
        if process.network:
            env |= proxy_environment(PROXY_PORT)
        env |= process.env
        env["FORGELINE_PROCESS"] = process.name
        return env

    def _argv(self, process: StageProcess, root: Path, tmp_fd: int) -> list[str]:
        cfg = self.config
        workdir = SANDBOX_WORKSPACE
        if process.workdir:
            workdir = f"{SANDBOX_WORKSPACE}/{process.workdir}"
        args = [*self._base_args, "--bind", str(root), SANDBOX_WORKSPACE]
        args += ["--bind-fd", str(tmp_fd), SANDBOX_TMP, "--chdir", workdir]
        if process.network:
            args += ["--perms", "0755", "--dir", str(Path(PROXY_SOCKET).parent)]
            args += ["--ro-bind", str(self.proxy_socket), PROXY_SOCKET]
        args += [
            "--",
            self.setpriv,
            f"--reuid={cfg.uid}",
            f"--regid={cfg.gid}",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
            "--",
        ]
        if process.network:
            # The forwarder first, then the script once it listens (the script's own line
            # numbers stay its own: it runs as `sh -c` of its own).
            forward = (
                f"{self.socat} TCP-LISTEN:{PROXY_PORT},bind=127.0.0.1,fork,reuseaddr "
                f"UNIX-CONNECT:{PROXY_SOCKET} 2>/dev/null & "
                "i=0; until grep -q ':0C38 00000000:0000 0A' /proc/net/tcp; do "
                'i=$((i+1)); [ "$i" -gt 400 ] && break; sleep 0.005; done; '
                'exec /bin/sh -c "$0"'
            )
            return [*args, "/bin/sh", "-c", forward, process.script]
        return [*args, "/bin/sh", "-c", process.script]

    async def run(self, process: StageProcess, on_output: OutputCallback) -> StageOutcome:
        cfg = self.config
        root = process.root or process.workspace
        root.mkdir(parents=True, exist_ok=True)
        tmp_fd = await asyncio.to_thread(prepare_workspace, root, cfg.uid, cfg.gid)
        try:
            return await self._run(process, on_output, root, tmp_fd)
        finally:
            os.close(tmp_fd)

    async def _run(
        self, process: StageProcess, on_output: OutputCallback, root: Path, tmp_fd: int
    ) -> StageOutcome:
        cfg = self.config
        if process.network:
            await self._ensure_proxy()
        limits = Limits(
            memory_bytes=(process.memory_mb or cfg.memory_mb) * 1024 * 1024,
            pids=process.pids_limit or cfg.pids_limit,
            cpus=process.cpus or cfg.cpus,
        )
        group = await asyncio.to_thread(self.cgroups.create, process.name, limits)
        # The launcher joins the stage's cgroup, sets the limits only rlimits can (largest file,
        # no core dumps; soft and hard, so the build user cannot raise them), then becomes the
        # sandbox: every process of the stage is in the group from its first instruction.
        disk_blocks = (process.disk_mb or cfg.disk_mb) * 1024 * 1024 // 512  # sh counts 512 B
        join = 'for f in "$@"; do [ "$f" = -- ] && break; echo $$ > "$f" || exit 125; shift; done; '
        limit = f"ulimit -c 0 && ulimit -f {disk_blocks} || exit 125; "
        argv = [
            "/bin/sh",
            "-c",
            join + limit + 'shift; exec "$@"',
            "launcher",
            *map(str, group.procs_files),
            "--",
            *self._argv(process, root, tmp_fd),
        ]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                env=self.environment(process),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                pass_fds=(tmp_fd,),
            )
        except BaseException:
            await asyncio.to_thread(group.destroy)
            raise
        pump: asyncio.Task[None] | None = None
        disk_limit = (process.disk_mb or cfg.disk_mb) * 1024 * 1024
        over_disk = asyncio.Event()
        watch = asyncio.create_task(self._watch_disk(root, disk_limit, group, over_disk))
        try:
            pump = asyncio.create_task(pump_output(proc, on_output))
            timed_out = False
            try:
                async with asyncio.timeout(process.timeout_seconds):
                    await proc.wait()
            except TimeoutError:
                timed_out = True
            # Whatever the stage left running (background jobs, a SIGTERM-ignoring child) dies
            # with it and releases the output pipe.
            await asyncio.to_thread(group.kill)
            exit_code = await end_output(proc, pump, stopped=timed_out or over_disk.is_set())
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
            await asyncio.shield(asyncio.to_thread(group.kill))
            if pump is not None:
                pump.cancel()
            close_output(proc)
            with contextlib.suppress(BaseException):
                await asyncio.shield(proc.wait())
            raise
        finally:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
            await asyncio.shield(asyncio.to_thread(group.destroy))

    async def _watch_disk(
        self, root: Path, limit: int, group: StageCgroup, over: asyncio.Event
    ) -> None:
        while True:
            await asyncio.sleep(self.config.disk_check_seconds)
            if await asyncio.to_thread(workspace_usage, root, limit) > limit:
                over.set()
                await asyncio.to_thread(group.kill)
                return

    async def remove_stale(self, prefix: str) -> int:
        stale = await asyncio.to_thread(self.cgroups.existing, prefix)
        for group in stale:
            await asyncio.to_thread(group.destroy)
        return len(stale)

    async def close(self) -> None:
        if self._proxy is not None:
            await self._proxy.close()
            self._proxy = None


def sandbox_works(config: SandboxConfig) -> str | None:
    """None when a trivial sandboxed command runs here, else why not (for `auto` and errors)."""
    try:
        runner = SandboxRunner(config)
    except (SandboxUnavailable, OSError) as exc:
        return str(exc)
    probe = [
        *runner._base_args,
        "--",
        runner.setpriv,
        f"--reuid={config.uid}",
        f"--regid={config.gid}",
        "--clear-groups",
        "--",
        "/bin/true",
    ]
    result = subprocess.run(probe, capture_output=True, env={"PATH": STANDARD_PATH}, timeout=30)
    if result.returncode != 0:
        return result.stderr.decode(errors="replace").strip() or "bwrap failed"
    return None
