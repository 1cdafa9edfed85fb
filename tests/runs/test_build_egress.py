"""A build's network: the egress proxy is the only way out, and it refuses loopback, private and
metadata addresses. Traffic goes only to loopback listeners this test opens, or to listeners
inside network namespaces this test creates."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.runners.sandbox_runner import SandboxRunner
from tests.runs.helpers import Collected
from tests.runs.hostile import (
    CONNECT,
    HTTPListener,
    Listener,
    hostile,
)
from tests.runs.sandbox import sandbox_runner

# Network: the egress proxy is the only way out --------------------------------------------


async def test_without_network_nothing_is_reachable(sandbox: SandboxRunner, tmp_path: Path) -> None:
    out = Collected()
    script = (
        CONNECT
        # No route anywhere: eth0's address is its own only (infra/runners/sandbox_network.py).
        + "ip route 2>/dev/null | wc -l; probe 127.0.0.1 3128 || echo no-proxy"
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
