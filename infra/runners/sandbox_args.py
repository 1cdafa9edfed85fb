"""What a bubblewrap sandbox is made of: its configuration, the read-only view of the host it
gets (bwrap arguments), the build user it becomes, the launcher that puts it in its cgroup under
its rlimits, and the environment a stage starts with (built from scratch)."""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path

from infra.runners.base import StageProcess
from infra.runners.cgroups import Limits
from infra.runners.egress_proxy import PROXY_PORT, proxy_environment
from infra.runners.sandbox_network import LOOPBACK_NAME_ADDRESS, SANDBOX_HOSTNAME, hosts_text
from infra.runners.sandbox_workspace import SandboxUnavailable

SANDBOX_WORKSPACE = "/workspace"
# Inside the sandbox (its own mount namespace): not the host's /tmp.
SANDBOX_TMP = "/tmp"  # noqa: S108
# The build user's home: the run's own (infra/runners/sandbox_workspace.py), outside the checkout.
SANDBOX_HOME = "/home/build"
PROXY_SOCKET = "/run/forgeline/egress.sock"
# What new virtualenvs start with (infra/runners/python_seeds.py): the state directory's
# python-seeds, read-only at a fixed path (the state directory may lie under /tmp).
PYTHON_SEEDS = "python-seeds"
PYTHON_SEEDS_MOUNT = "/opt/forgeline/python-seeds"
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
# The forwarder to the egress proxy first, then the script once it listens (the script's own
# line numbers stay its own: it runs as `sh -c` of its own, the script as "$0").
FORWARD_SCRIPT = (
    "{socat} TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr "
    "UNIX-CONNECT:{socket} 2>/dev/null & "
    "i=0; until grep -q ':0C38 00000000:0000 0A' /proc/net/tcp; do "
    'i=$((i+1)); [ "$i" -gt 400 ] && break; sleep 0.005; done; '
    'exec /bin/sh -c "$0"'
)


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
    # Sandboxes started ahead of the stages that will use them (one stage each, then gone);
    # 0 starts every sandbox when its stage asks.
    pool_size: int = 2
    # How many may wait when stages keep finding none waiting (back to pool_size when idle).
    pool_max: int = 6
    # A tmpfs of the pool's slot directories, shared by every runner of this host.
    slots_dir: Path = Path("/run/forgeline-sandbox-slots")
    # Where Python installations besides /usr are looked for (infra/runners/python_toolchain.py);
    # None: the usual roots (pyenv, uv-managed, /opt/python). A registry mirror for pip and uv.
    python_roots: tuple[Path, ...] | None = None
    python_index_url: str | None = None
    # The npm registry (or mirror) Node.js toolchains are downloaded from; None: npmjs.org.
    node_registry_url: str | None = None
    # Each sandbox's own /dev/shm (POSIX semaphores and shared memory: multiprocessing, browsers);
    # its pages count against the stage's memory limit too.
    shm_mb: int = 512


def require_tool(tool: str) -> str:
    path = shutil.which(tool, path=STANDARD_PATH)
    if path is None:
        raise SandboxUnavailable(
            f"{tool} is not installed: run scripts/ensure-sandbox.sh (apt-get install "
            "bubblewrap socat util-linux)"
        )
    return path


def write_identity_files(
    etc_dir: Path, uid: int, gid: int, hostname_address: str = LOOPBACK_NAME_ADDRESS
) -> None:
    home = SANDBOX_HOME
    files = {
        "passwd": f"root:x:0:0::/nonexistent:/usr/sbin/nologin\n"
        f"build:x:{uid}:{gid}:Forgeline build:{home}:/bin/sh\n",
        "group": f"root:x:0:\nbuild:x:{gid}:\n",
        # The host name resolves (infra/runners/sandbox_network.py), as on a CI host.
        "hosts": hosts_text([], hostname_address),
        "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
        "hostname": f"{SANDBOX_HOSTNAME}\n",
    }
    etc_dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (etc_dir / name).write_text(text)


def static_args(
    bwrap: str, etc_dir: Path, config: SandboxConfig, extra_caps: tuple[str, ...] = ()
) -> list[str]:
    """The bwrap arguments every sandbox shares: namespaces, capabilities, the read-only host.
    `extra_caps`: what a step before setpriv needs (it drops them all with the others)."""
    args = [
        bwrap,
        "--unshare-pid",
        "--unshare-net",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--hostname",
        SANDBOX_HOSTNAME,
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
        *(arg for cap in extra_caps for arg in ("--cap-add", cap)),
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
        args += ["--ro-bind", str(etc_dir / name), f"/etc/{name}"]
    made: set[Path] = set()
    for extra in config.toolchain:
        # Its parents made traversable (bwrap would create /root of a /root/... path 0700).
        for parent in reversed(extra.parents[:-1]):
            if parent.parts[1] not in ("usr", "etc", *ROOT_DIRS) and parent not in made:
                made.add(parent)
                args += ["--perms", "0755", "--dir", str(parent)]
        args += ["--ro-bind", str(extra), str(extra)]
    seeds = config.state_dir / PYTHON_SEEDS
    if seeds.is_dir():
        args += ["--perms", "0755", "--dir", "/opt", "--perms", "0755", "--dir", "/opt/forgeline"]
        args += ["--ro-bind", str(seeds), PYTHON_SEEDS_MOUNT]
    if config.ca_bundle is not None:
        args += ["--ro-bind", str(config.ca_bundle), SANDBOX_CA]
    args += ["--proc", "/proc", "--dev", "/dev", "--perms", "0755", "--tmpfs", "/run"]
    # What a CI runner has and common tools expect: a private, bounded /dev/shm, /var/tmp
    # (the run's /tmp), /etc/mtab, and /home for the build user's home mounted per stage.
    shm = str(config.shm_mb * 1024 * 1024)
    args += ["--perms", "1777", "--size", shm, "--tmpfs", "/dev/shm"]  # noqa: S108 - its own
    args += ["--perms", "0755", "--dir", "/var", "--symlink", "../tmp", "/var/tmp"]  # noqa: S108
    args += ["--symlink", "../proc/self/mounts", "/etc/mtab"]
    args += ["--perms", "0755", "--dir", "/home"]
    return args


def become_build_user(setpriv: str, config: SandboxConfig) -> list[str]:
    """setpriv to the build user with no capabilities and no new privileges, then `--`."""
    return [
        setpriv,
        f"--reuid={config.uid}",
        f"--regid={config.gid}",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        "--",
    ]


def launcher(procs_files: list[Path], disk_mb: int, argv: list[str]) -> list[str]:
    """A shell that joins the stage's cgroup, sets the limits only rlimits can (largest file,
    no core dumps; soft and hard, so the build user cannot raise them), then becomes `argv`:
    every process of the sandbox is in the group from its first instruction."""
    disk_blocks = disk_mb * 1024 * 1024 // 512  # sh counts 512-byte blocks
    join = 'for f in "$@"; do [ "$f" = -- ] && break; echo $$ > "$f" || exit 125; shift; done; '
    limit = f"ulimit -c 0 && ulimit -f {disk_blocks} || exit 125; "
    return [
        "/bin/sh",
        "-c",
        join + limit + 'shift; exec "$@"',
        "launcher",
        *map(str, procs_files),
        "--",
        *argv,
    ]


def forward_script(socat: str) -> str:
    return FORWARD_SCRIPT.format(socat=socat, port=PROXY_PORT, socket=PROXY_SOCKET)


def stage_environment(config: SandboxConfig, process: StageProcess) -> dict[str, str]:
    """A stage's environment from scratch: clean PATH, the run's HOME and TMPDIR, only the
    operator's proxy and CA settings, then the stage's own variables."""
    home = SANDBOX_HOME
    env = {
        "PATH": f"{home}/.local/bin:{STANDARD_PATH}",
        "HOME": home,
        "TMPDIR": SANDBOX_TMP,
        "USER": "build",
        "LOGNAME": "build",
        "SHELL": "/bin/sh",
        "LANG": "C.UTF-8",
    }
    if config.ca_bundle is not None:
        env |= dict.fromkeys(CA_VARIABLES, SANDBOX_CA)
    elif config.pass_host_ca:
        env |= {k: os.environ[k] for k in CA_VARIABLES if k in os.environ}
    if process.network:
        env |= proxy_environment(PROXY_PORT)
    env |= process.env
    env["FORGELINE_PROCESS"] = process.name
    return env


def stage_limits(config: SandboxConfig, process: StageProcess) -> Limits:
    """The stage's cgroup limits: its own where it sets them, else the runner's."""
    return Limits(
        memory_bytes=(process.memory_mb or config.memory_mb) * 1024 * 1024,
        pids=process.pids_limit or config.pids_limit,
        cpus=process.cpus or config.cpus,
    )


# A started sandbox: the host's launcher, bwrap and the root steps inside the sandbox run with
# this fixed environment, never the stage's (a pipeline's LD_PRELOAD or PATH would otherwise
# reach processes that run as root). The first process after the switch to the build user reads
# the stage's environment from its stdin and execs the stage with exactly that environment.
HOST_ENVIRONMENT = {"PATH": STANDARD_PATH}
# (stdin is read, not reopened: the host's pipe is not the build user's to open.)
STAGE_ENVIRONMENT_READER = ["/bin/sh", "-c", 'eval "$(cat)"; exit 125', "stage"]


def stage_environment_message(env: dict[str, str]) -> bytes:
    """What the reader runs: stdin back to /dev/null, then the stage (its argv are the
    reader's arguments) with the stage's environment and nothing else."""
    pairs = " ".join(shlex.quote(f"{key}={value}") for key, value in env.items())
    return f'exec 0</dev/null || exit 125\nexec /usr/bin/env -i -- {pairs} "$@"\n'.encode()


async def feed_environment(
    stdin: asyncio.StreamWriter | None, env: dict[str, str], output: Awaitable[None]
) -> None:
    """The stage's environment written to the started sandbox's reader, beside its output."""

    async def feed() -> None:
        if stdin is None:
            return
        try:
            stdin.write(stage_environment_message(env))
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the sandbox ended before reading it: its exit code says why
        finally:
            stdin.close()

    await asyncio.gather(feed(), output)
