"""Hostile builds: a stage's script tries each escape from its runner, and each attempt fails.

Every isolated runner (the bubblewrap sandbox and Docker) gets the same scripts; the network
scenarios that need the egress proxy run on the sandbox. Traffic goes only to loopback listeners
this test opens, or to listeners inside network namespaces this test creates.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from infra.runners import Runner, StageProcess
from infra.runners.cgroups import Cgroups
from infra.runners.sandbox_runner import SandboxRunner
from infra.runners.sandbox_workspace import workspace_usage
from tests.runs.helpers import Collected, process_gone
from tests.runs.sandbox import sandbox_runner

MARKER = f"hostile-marker-{uuid.uuid4().hex}"


class Listener:
    """A loopback TCP listener that counts the connections it accepts."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


def hostile(
    runner: Runner, tmp_path: Path, script: str, *, image: str | None = None, **kw: object
) -> StageProcess:
    root = tmp_path / "workspaces" / uuid.uuid4().hex
    return StageProcess(
        name=f"fl-{uuid.uuid4().hex[:12]}-hostile-1",
        script=script,
        workspace=root,
        root=root,
        timeout_seconds=float(kw.pop("timeout", 30)),  # type: ignore[arg-type]
        image=image,
        **kw,  # type: ignore[arg-type]
    )


def _image(runner: Runner, request: pytest.FixtureRequest) -> str | None:
    return request.getfixturevalue("busybox_image") if runner.kind == "docker" else None


# A TCP connect from inside the stage, with whatever the image has (python3 or busybox nc).
CONNECT = (
    "probe() { if command -v python3 >/dev/null; then "
    'python3 -c "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 2)" '
    '"$1" "$2" 2>/dev/null; else nc -w 2 "$1" "$2" </dev/null >/dev/null 2>&1; fi; }; '
)


async def test_stage_cannot_read_other_processes_environment(
    runner: Runner, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The worker's environment (its keys) and a neighbour's secrets stay unreadable."""
    victim = subprocess.Popen(
        ["sleep", "60"], env={"PATH": os.environ["PATH"], "TENANT_SECRET": MARKER}
    )
    os.environ["FORGELINE_TEST_WORKER_SECRET"] = MARKER
    try:
        out = Collected()
        script = (
            "cat /proc/*/environ 2>/dev/null | tr '\\000' '\\n' | grep -c hostile-marker; "
            "ls /proc | grep -c '^[0-9]'; "
            f"cat /proc/{victim.pid}/environ 2>&1 | head -c 300; echo; "
            "cat /proc/1/environ 2>&1 | head -c 300; echo; true"
        )
        result = await runner.run(
            hostile(runner, tmp_path, script, image=_image(runner, request)), out
        )
    finally:
        victim.kill()
        victim.wait()
        del os.environ["FORGELINE_TEST_WORKER_SECRET"]
    assert result.exit_code == 0, out.text
    assert MARKER not in out.text
    lines = out.text.splitlines()
    assert lines[0] == "0"
    assert int(lines[1]) < 10, "the stage sees processes that are not its own"


async def test_stage_cannot_read_the_data_dir_or_another_workspace(
    runner: Runner, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "encryption.key").write_text(MARKER)
    (data_dir / "bootstrap.json").write_text(MARKER)
    other = tmp_path / "workspaces" / "other-tenant-run"
    other.mkdir(parents=True)
    (other / ".env.production").write_text(MARKER)
    script = (
        f"cat {data_dir}/encryption.key {data_dir}/bootstrap.json 2>&1; "
        f"cat {other}/.env.production 2>&1; echo LISTING $(ls -a /workspace/..); "
        "grep -rs hostile-marker / --exclude-dir=proc --exclude-dir=sys 2>/dev/null | head -3; "
        "cat /etc/shadow 2>&1 | head -2; true"
    )
    out = Collected()
    result = await runner.run(hostile(runner, tmp_path, script, image=_image(runner, request)), out)
    assert result.exit_code == 0, out.text
    assert MARKER not in out.text
    listing = next(line for line in out.text.splitlines() if line.startswith("LISTING"))
    assert "other-tenant-run" not in listing


async def test_stage_runs_as_an_unprivileged_user_without_capabilities(
    runner: Runner, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    script = "id -u; grep -E '^Cap(Eff|Prm|Bnd)' /proc/self/status; touch /usr/x 2>&1; true"
    out = Collected()
    result = await runner.run(hostile(runner, tmp_path, script, image=_image(runner, request)), out)
    assert result.exit_code == 0, out.text
    uid = int(out.text.splitlines()[0])
    assert uid not in (0, os.getuid())
    assert "CapEff:\t0000000000000000" in out.text
    assert not Path("/usr/x").exists()


async def test_stage_cannot_reach_host_loopback_services(
    runner: Runner, tmp_path: Path, request: pytest.FixtureRequest, listener: Listener, settings
) -> None:
    """Not a listener of this test, not PostgreSQL, not the Temporal frontend."""
    from urllib.parse import urlsplit

    db_port = urlsplit(settings.database_url).port
    temporal_port = int(settings.temporal_address.rsplit(":", 1)[1])
    for port in (db_port, temporal_port):  # they do listen, seen from the host
        with socket.create_connection(("127.0.0.1", port), 2):
            pass
    ports = [listener.port, db_port, temporal_port]
    script = CONNECT + "".join(
        f'if probe 127.0.0.1 {p}; then echo "REACHED {p}"; else echo "blocked {p}"; fi; '
        for p in ports
    )
    out = Collected()
    result = await runner.run(hostile(runner, tmp_path, script, image=_image(runner, request)), out)
    assert result.exit_code == 0, out.text
    assert "REACHED" not in out.text
    assert out.text.count("blocked") == 3
    assert listener.accepted == 0


async def test_a_fork_storm_is_bounded(
    runner: Runner, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # Each child that really started leaves a line; forks past the limit fail.
    script = (
        "i=0; while [ $i -lt 400 ]; do (echo x >> spawned; exec sleep 30) & i=$((i+1)); done "
        "2>/dev/null; echo stormed"
    )
    process = hostile(
        runner, tmp_path, script, image=_image(runner, request), pids_limit=64, timeout=60
    )
    out = Collected()
    await runner.run(process, out)
    spawned = len((process.workspace / "spawned").read_text().splitlines())
    assert 0 < spawned < 64, out.text
    assert await process_gone(runner, process.name)


async def test_ignoring_sigterm_does_not_outlive_the_timeout(
    runner: Runner, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    script = "trap '' TERM; (trap '' TERM; setsid sleep 300 2>/dev/null || sleep 300) & sleep 300"
    process = hostile(runner, tmp_path, script, image=_image(runner, request), timeout=2)
    result = await runner.run(process, Collected())
    assert result.timed_out
    assert await process_gone(runner, process.name)


async def test_cancel_kills_every_process_of_the_stage(
    runner: Runner, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    script = "nohup sleep 300 >/dev/null 2>&1 & echo started; sleep 300"
    process = hostile(runner, tmp_path, script, image=_image(runner, request), timeout=120)
    out = Collected()
    task = asyncio.create_task(runner.run(process, out))
    for _ in range(200):
        if "started" in out.text:
            break
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await process_gone(runner, process.name)


async def test_memory_limit_is_enforced(
    runner: Runner, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # A 256 MB buffer, filled, in a 64 MB stage.
    script = "dd if=/dev/zero of=/dev/null bs=268435456 count=1 2>/dev/null && echo allocated"
    out = Collected()
    result = await runner.run(
        hostile(runner, tmp_path, script, image=_image(runner, request), memory_mb=64), out
    )
    assert result.exit_code != 0, out.text
    assert "allocated" not in out.text


# The sandbox's own guarantees ---------------------------------------------------------------


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[SandboxRunner]:
    runner = sandbox_runner(tmp_path / "state", disk_check_seconds=0.2)
    yield runner
    await runner.close()


async def test_a_disk_fill_is_stopped(sandbox: SandboxRunner, tmp_path: Path) -> None:
    script = "i=0; while true; do head -c 4194304 /dev/zero > fill.$i || true; i=$((i+1)); done"
    process = hostile(sandbox, tmp_path, script, disk_mb=32, timeout=120)
    out = Collected()
    result = await sandbox.run(process, out)
    assert result.exit_code == 137 and not result.timed_out
    assert "exceeded the disk limit of 32 MB" in out.text
    assert await process_gone(sandbox, process.name)
    # Stopped within one check of the limit, not at the end of the disk (or of the timeout).
    assert workspace_usage(process.workspace, 1 << 40) < 2 * 1024**3


async def test_a_single_file_cannot_exceed_the_disk_limit(
    sandbox: SandboxRunner, tmp_path: Path
) -> None:
    out = Collected()
    process = hostile(sandbox, tmp_path, "head -c 50000000 /dev/zero > big; echo rc=$?", disk_mb=8)
    await sandbox.run(process, out)
    assert (process.workspace / "big").stat().st_size <= 8 * 1024 * 1024


async def test_environment_is_built_from_scratch(sandbox: SandboxRunner, tmp_path: Path) -> None:
    os.environ["FORGELINE_TEST_LEAK"] = MARKER
    try:
        out = Collected()
        await sandbox.run(
            hostile(sandbox, tmp_path, "env; echo PATH=$PATH", env={"MINE": "1"}), out
        )
    finally:
        del os.environ["FORGELINE_TEST_LEAK"]
    env = dict(line.split("=", 1) for line in out.text.splitlines() if "=" in line)
    assert MARKER not in out.text
    assert env["MINE"] == "1"
    assert env["HOME"].startswith("/workspace/") and env["TMPDIR"] == "/tmp"
    assert ".venv" not in env["PATH"] and sys.prefix not in env["PATH"]
    assert not {k for k in env if "PROXY" in k.upper()}, "no proxy without network"


async def test_concurrent_runs_have_their_own_tmp(sandbox: SandboxRunner, tmp_path: Path) -> None:
    """Fixed paths such as /tmp/req.txt are per run, not shared by concurrent builds."""
    script = 'echo "$WHO" > /tmp/req.txt; sleep 1; cat /tmp/req.txt'
    outs = [Collected(), Collected()]
    await asyncio.gather(
        *(
            sandbox.run(hostile(sandbox, tmp_path, script, env={"WHO": f"run-{i}"}), outs[i])
            for i in range(2)
        )
    )
    assert [o.text.strip() for o in outs] == ["run-0", "run-1"]


async def test_remove_stale_kills_a_crashed_workers_stage(
    sandbox: SandboxRunner, tmp_path: Path
) -> None:
    """A stage whose worker died (the runner's task gone) is found by its cgroup and killed."""
    process = hostile(sandbox, tmp_path, "echo up; sleep 300", timeout=300)
    out = Collected()
    task = asyncio.create_task(sandbox.run(process, out))
    for _ in range(200):
        if "up" in out.text:
            break
        await asyncio.sleep(0.05)
    assert Cgroups().existing(process.name)
    killed = await sandbox.remove_stale(process.name[:-1])
    assert killed == 1
    await asyncio.wait_for(task, 30)
    assert await process_gone(sandbox, process.name)


# Network: the egress proxy is the only way out --------------------------------------------


async def test_without_network_nothing_is_reachable(sandbox: SandboxRunner, tmp_path: Path) -> None:
    out = Collected()
    script = (
        CONNECT
        + "ip -o addr 2>/dev/null | grep -v ' lo ' | wc -l; probe 127.0.0.1 3128 || echo no-proxy"
    )
    await sandbox.run(hostile(sandbox, tmp_path, script), out)
    assert out.text.split() == ["0", "no-proxy"]


async def test_through_the_proxy_loopback_stays_unreachable(
    sandbox: SandboxRunner, tmp_path: Path, listener: Listener
) -> None:
    curl = "curl -s -m 5 --noproxy '' -x http://127.0.0.1:3128"
    port = listener.port
    script = (
        f"{curl} http://127.0.0.1:{port}/; echo; {curl} http://localhost:{port}/; echo; "
        f"{curl} -p http://[::ffff:127.0.0.1]:{port}/ -o /dev/null -w '%{{http_code}}\\n'"
    )
    out = Collected()
    result = await sandbox.run(hostile(sandbox, tmp_path, script, network=True), out)
    assert result.exit_code == 0 or result.exit_code == 56, out.text
    assert out.text.count("builds may not reach") == 2, out.text
    assert listener.accepted == 0


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=30)


@pytest.fixture
def test_namespace() -> Iterator[str]:
    """A network namespace of this test's own, with metadata-like, private and TEST-NET
    addresses on its loopback device (never a real host)."""
    name = f"fltest-{uuid.uuid4().hex[:8]}"
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        for address in ("169.254.169.254/32", "10.213.0.5/32", "198.51.100.7/32"):
            _ip("-n", name, "addr", "add", address, "dev", "lo")
        yield name
    finally:
        _ip("netns", "delete", name, check=False)


async def test_private_and_metadata_addresses_refused_inside_a_namespace(
    tmp_path: Path, test_namespace: str
) -> None:
    """The proxy runs inside a namespace where a metadata service, a private host and a public
    host (TEST-NET) all answer: the public one is reachable through it, the others are not."""
    log_file = tmp_path / "hits.log"
    server = subprocess.Popen(
        [
            "ip", "netns", "exec", test_namespace, sys.executable, "-c",
            "import http.server, sys\n"
            "class H(http.server.BaseHTTPRequestHandler):\n"
            "    def do_GET(self):\n"
            "        open(sys.argv[1], 'a').write(self.headers['Host'] + '\\n')\n"
            "        self.send_response(200); self.end_headers(); self.wfile.write(b'reached')\n"
            "    def log_message(self, *a): pass\n"
            "http.server.ThreadingHTTPServer(('0.0.0.0', 80), H).serve_forever()\n",
            str(log_file),
        ]
    )  # fmt: skip
    socket_path = tmp_path / "egress.sock"
    proxy = subprocess.Popen(
        ["ip", "netns", "exec", test_namespace, sys.executable, "-m",
         "infra.runners.egress_proxy", "--socket", str(socket_path)],
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    try:
        for _ in range(100):
            if socket_path.exists():
                break
            await asyncio.sleep(0.1)
        # The listeners answer inside the namespace (the control for the assertions below).
        check = subprocess.run(
            ["ip", "netns", "exec", test_namespace, "curl", "-s", "-m", "5", "http://10.213.0.5/"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert check.stdout == "reached"
        log_file.write_text("")
        # The runner uses the proxy inside the test namespace instead of starting its own.
        runner = sandbox_runner(tmp_path / "state", proxy_socket=socket_path)
        script = "".join(
            f"echo {host}: $(curl -s -m 5 http://{host}/); "
            for host in ("169.254.169.254", "10.213.0.5", "198.51.100.7")
        )
        out = Collected()
        await runner.run(hostile(runner, tmp_path, script, network=True), out)
    finally:
        for proc in (proxy, server):
            proc.kill()
            proc.wait()
    text = out.text
    assert "198.51.100.7: reached" in text, text
    assert "169.254.169.254: forgeline egress proxy" in text
    assert "10.213.0.5: forgeline egress proxy" in text
    assert log_file.read_text().split() == ["198.51.100.7"]


async def test_a_normal_build_installs_from_the_registry(
    sandbox: SandboxRunner, tmp_path: Path
) -> None:
    """The ordinary case still works: npm installs a package through the egress proxy."""
    if shutil.which("npm") is None:
        pytest.fail("npm is not installed on this machine")
    script = (
        "npm init -y >/dev/null && npm install --no-audit --no-fund is-number@7.0.0 && "
        "node -e \"console.log(require('is-number')(5))\""
    )
    out = Collected()
    result = await sandbox.run(hostile(sandbox, tmp_path, script, network=True, timeout=180), out)
    assert result.exit_code == 0, out.text
    assert out.text.strip().endswith("true")


def test_sandbox_refused_settings() -> None:
    """The unisolated runner is a development flag, refused in production."""
    from pydantic import ValidationError

    from forgeline.settings import Settings

    with pytest.raises(ValidationError, match="unsafe-local"):
        Settings(
            environment="production",
            container_runner="unsafe-local",
            encryption_keys="x" * 44,
            database_url="postgresql://a@localhost/b",
            temporal_address="localhost:7233",
        )


async def test_stage_cannot_drive_temporal(
    runner: Runner, tmp_path: Path, request: pytest.FixtureRequest, settings
) -> None:
    """The `temporal` CLI of the worker's environment is not there, and the frontend it would
    call (to send an approval update to another tenant's deployment) is not reachable."""
    cli = Path(sys.prefix) / "bin" / "temporal"
    assert cli.exists()
    address = settings.temporal_address
    script = (
        f"{cli} workflow update execute --address {address} --workflow-id deployment-x "
        "--name approve 2>&1 | head -2; "
        f"temporal workflow update execute --address {address} --workflow-id deployment-x "
        "--name approve 2>&1 | head -2; true"
    )
    out = Collected()
    result = await runner.run(hostile(runner, tmp_path, script, image=_image(runner, request)), out)
    assert result.exit_code == 0, out.text
    assert out.text.count("not found") + out.text.count("No such file") >= 2, out.text


def test_an_artifact_swapped_for_a_symlink_after_collection_is_not_uploaded(
    tmp_path: Path,
) -> None:
    """A concurrent stage of the same run swaps a collected artifact for a link to a host file
    between collection and upload: the worker (root) reads nothing outside the workspace."""
    from core.runs import artifacts
    from infra.storage import LocalObjectStore

    secret = tmp_path / "host-secret"
    secret.write_text(MARKER)
    workspace = tmp_path / "ws"
    (workspace / "dist").mkdir(parents=True)
    (workspace / "dist" / "app.js").write_text("ok")
    (workspace / "dist" / "keep.txt").write_text("kept")
    files, refused = artifacts.collect(workspace, ["dist/**"])
    assert {f.name for f in files} == {"dist/app.js", "dist/keep.txt"} and not refused
    (workspace / "dist" / "app.js").unlink()
    (workspace / "dist" / "app.js").symlink_to(secret)
    store = LocalObjectStore(tmp_path / "objects")
    uploaded = artifacts.upload(store, "runs/r/artifacts/s/1", files)
    assert [a.name for a in uploaded] == ["dist/keep.txt"]
    stored = b"".join(p.read_bytes() for p in (tmp_path / "objects").rglob("*") if p.is_file())
    assert MARKER.encode() not in stored


async def test_cpu_quota_is_set_on_the_stage_group(sandbox: SandboxRunner, tmp_path: Path) -> None:
    """A stage limited to half a core gets that quota from the kernel (its group's cpu limit),
    not from its own goodwill: a busy loop cannot take more."""
    process = hostile(sandbox, tmp_path, "echo up; while :; do :; done", cpus=0.5, timeout=30)
    out = Collected()
    task = asyncio.create_task(sandbox.run(process, out))
    try:
        for _ in range(200):
            if "up" in out.text:
                break
            await asyncio.sleep(0.05)
        [group] = Cgroups().existing(process.name)
        cpu = group.dirs["cpu"]
        if group.unified:
            assert (cpu / "cpu.max").read_text().split() == ["50000", "100000"]
        else:
            assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "50000"
            assert (cpu / "cpu.cfs_period_us").read_text().strip() == "100000"
        assert group.pids(), "the busy loop runs inside the group"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert await process_gone(sandbox, process.name)


@pytest.mark.parametrize("planted", [".forgeline-sandbox/tmp", ".forgeline-sandbox"])
async def test_a_link_planted_for_the_next_stage_does_not_mount_a_host_path(
    sandbox: SandboxRunner, tmp_path: Path, planted: str
) -> None:
    """A stage turns the run's temporary directory (or its parent) into a link to a host path;
    the next stage's /tmp is still a directory of the workspace, and the host path is
    untouched."""
    host_dir = tmp_path / "host-dir"
    host_dir.mkdir()
    (host_dir / "secret").write_text(MARKER)
    first = hostile(sandbox, tmp_path, f"rm -rf /workspace/{planted}; echo planted")
    await sandbox.run(first, Collected())
    link = first.workspace / planted
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.exists() or link.is_symlink():
        import shutil as _shutil

        _shutil.rmtree(link) if link.is_dir() and not link.is_symlink() else link.unlink()
    link.symlink_to(host_dir)  # as the stage would have (outside its view of the path)
    out = Collected()
    second = StageProcess(
        name=f"fl-{uuid.uuid4().hex[:12]}-hostile-2",
        script="cat /tmp/secret 2>&1; echo written > /tmp/dropped; ls /tmp",
        workspace=first.workspace,
        root=first.root,
        timeout_seconds=30,
    )
    result = await sandbox.run(second, out)
    assert result.exit_code == 0, out.text
    assert MARKER not in out.text
    assert sorted(p.name for p in host_dir.iterdir()) == ["secret"]
    assert (first.workspace / ".forgeline-sandbox" / "tmp" / "dropped").is_file()


async def test_the_sandbox_directory_does_not_dirty_a_checkout(
    sandbox: SandboxRunner, tmp_path: Path
) -> None:
    """A pipeline checking for a clean tree sees none of the sandbox's home or /tmp, and a
    declared artifact glob does not pick them up."""
    process = hostile(sandbox, tmp_path, "echo cache > $HOME/c; echo t > /tmp/t; git status -s")
    root = process.workspace
    root.mkdir(parents=True)
    git = ["git", "-C", str(root), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (root / "app.txt").write_text("app")
    subprocess.run([*git, "add", "app.txt"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], check=True)
    out = Collected()
    result = await sandbox.run(process, out)
    assert result.exit_code == 0, out.text
    assert out.text == "", out.text
    from core.runs import artifacts

    files, _ = artifacts.collect(root, ["**"])
    names = [f.name for f in files]
    assert "app.txt" in names and not [n for n in names if "forgeline-sandbox" in n]


class HTTPListener:
    """A tiny HTTP server on a loopback address, counting the requests that reach it."""

    def __init__(self, host: str) -> None:
        import http.server

        hits: list[str] = []
        self.hits = hits

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"reached")

            def log_message(self, *args: object) -> None:
                return None

        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("allowed", [False, True], ids=["default-policy", "allow-listed"])
async def test_docker_network_stages_leave_only_through_the_proxy(
    docker_engine, busybox_image: str, tmp_path: Path, allowed: bool
) -> None:
    """A Docker stage that asks for network gets no network of its own: the egress proxy
    listens on its loopback. A host address is refused by the proxy's policy, and reached
    through it only when the operator allow-lists it; a direct connection goes nowhere."""
    from infra.runners.docker_runner import DockerRunner
    from infra.runners.egress_proxy import EgressPolicy, EgressProxy

    target = HTTPListener("127.0.0.2")
    policy = EgressPolicy.from_strings(["127.0.0.2/32"] if allowed else [])
    runner = DockerRunner(
        docker_engine,
        busybox_image,
        egress=EgressProxy(policy),
        state_dir=tmp_path / "state",
    )
    url = f"http://127.0.0.2:{target.port}/"
    script = (
        f"echo interfaces=$(grep -c : /proc/net/dev); "
        f"echo via-proxy=$(wget -q -O- {url} 2>&1); "
        f"echo direct=$(http_proxy= wget -q -T 3 -O- {url} 2>&1 || echo failed)"
    )
    out = Collected()
    try:
        result = await runner.run(
            hostile(runner, tmp_path, script, image=busybox_image, network=True), out
        )
    finally:
        target.close()
    assert result.exit_code == 0, out.text
    lines = dict(line.split("=", 1) for line in out.text.splitlines() if "=" in line)
    assert lines["interfaces"] == "1", out.text  # loopback only
    if allowed:
        assert lines["via-proxy"] == "reached", out.text
        assert target.hits == ["/"]
    else:
        assert "403" in lines["via-proxy"], out.text
        assert target.hits == []
    assert "reached" not in lines["direct"], out.text
    assert not list((tmp_path / "state" / "egress").iterdir())
