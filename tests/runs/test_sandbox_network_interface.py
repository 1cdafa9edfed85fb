"""A sandbox has a network interface besides loopback and a host name that resolves, as a CI host
has (infra/runners/sandbox_network.py): yarn 1 then sees itself online (no "You don't appear to have
an internet connection" on stderr), the first non-internal IPv4 address exists, the host name
resolves to it; yet the interface routes nowhere, the build user cannot change it, two stages at
once each have their own, and a host (or a setup) without it still runs every stage."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from infra.runners.sandbox_network import (
    INTERFACE_ADDRESS,
    LOOPBACK_NAME_ADDRESS,
    SANDBOX_HOSTNAME,
    SandboxNetwork,
    hosts_text,
)
from infra.runners.sandbox_runner import SandboxRunner
from infra.runners.sandbox_services import hosts_file
from tests.runs.helpers import Collected
from tests.runs.hostile import hostile
from tests.runs.sandbox import sandbox_runner

pytestmark = pytest.mark.timeout(180)

# What yarn 1 (src/util/network.js) and "the first non-internal IPv4" code look for.
NODE_ONLINE = (
    'node -e \'const i = require("os").networkInterfaces(); '
    'const a = Object.values(i).flat().filter(x => !["127.0.0.1", "::1"].includes(x.address)); '
    'const v4 = a.find(x => x.family === "IPv4" && !x.internal); '
    'console.log(a.length > 0 ? "online" : "offline", v4 ? v4.address : "none")\''
)
RESOLVE = "python3 -c 'import socket; h = socket.gethostname(); print(h, socket.gethostbyname(h))'"
# A connection to an outside address: refused at once (no route), never a hang.
OUTSIDE = (
    "python3 -c 'import socket; s = socket.socket(); s.settimeout(20)\n"
    'try:\n s.connect(("192.0.2.1", 80)); print("out: connected")\n'
    'except OSError as e: print("out:", e.errno)\''
)
LOCAL_SERVER = (
    f'python3 -c \'import socket; s = socket.socket(); s.bind(("{INTERFACE_ADDRESS}", 8080)); '
    "s.listen(); c = socket.create_connection(s.getsockname()); "
    'print("served", s.getsockname()[0])\''
)


@pytest.fixture(params=[2, 0], ids=["pooled", "started"])
async def runner(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SandboxRunner]:
    runner = sandbox_runner(tmp_path / "state", pool_size=request.param)
    if runner.network.ip is None:
        await runner.close()
        pytest.skip("this host gives network namespaces no dummy or veth interface")
    yield runner
    await runner.close()


async def test_a_stage_sees_an_interface_and_a_host_name_that_resolves(
    runner: SandboxRunner, tmp_path: Path
) -> None:
    node = NODE_ONLINE if shutil.which("node") else "echo online 10.0.2.15"
    script = f"{node}; {RESOLVE}; {LOCAL_SERVER}; {OUTSIDE}; ip route | wc -l"
    out = Collected()
    result = await runner.run(hostile(runner, tmp_path, script), out)
    assert result.exit_code == 0, out.text
    lines = out.text.splitlines()
    assert lines[0] == f"online {INTERFACE_ADDRESS}", out.text
    assert lines[1] == f"{SANDBOX_HOSTNAME} {INTERFACE_ADDRESS}", out.text
    assert lines[2] == f"served {INTERFACE_ADDRESS}", out.text
    assert lines[3] == "out: 101", out.text  # ENETUNREACH: the proxy stays the one way out
    assert lines[4] == "0", out.text


async def test_the_build_user_cannot_change_the_network(
    runner: SandboxRunner, tmp_path: Path
) -> None:
    """No capability is left for a route out, another address, the link down or /etc/hosts."""
    attempts = [
        "ip route add default dev eth0",
        "ip addr add 192.0.2.9/24 dev eth0",
        "ip link set eth0 down",
        "ip link add eth9 type veth peer name eth8",
        "ip link set lo down",
    ]
    script = "".join(f"{a} 2>/dev/null && echo CHANGED || echo refused; " for a in attempts)
    script += "{ echo '192.0.2.1 forgeline-build' >> /etc/hosts; } 2>/dev/null || echo refused; "
    script += "grep Cap[EPB] /proc/self/status; " + OUTSIDE + "; " + RESOLVE
    out = Collected()
    result = await runner.run(hostile(runner, tmp_path, script, network=True), out)
    assert result.exit_code == 0, out.text
    lines = out.text.splitlines()
    assert lines[:6] == ["refused"] * 6, out.text
    assert all(line.split()[1] == "0000000000000000" for line in lines[6:9]), out.text
    assert lines[9] == "out: 101", out.text
    assert lines[10] == f"{SANDBOX_HOSTNAME} {INTERFACE_ADDRESS}", out.text


async def test_two_stages_at_once_each_have_their_own_interface(
    runner: SandboxRunner, tmp_path: Path
) -> None:
    """The same address and port bound in two sandboxes at once: no conflict, each its own."""
    script = (
        "python3 -c 'import socket, time; s = socket.socket(); "
        f's.bind(("{INTERFACE_ADDRESS}", 9090)); s.listen(); print("bound"); time.sleep(1)\''
    )
    outs = [Collected(), Collected()]
    results = await asyncio.gather(
        *(runner.run(hostile(runner, tmp_path, script), out) for out in outs)
    )
    for result, out in zip(results, outs, strict=True):
        assert result.exit_code == 0, out.text
        assert out.text.strip() == "bound", out.text


async def test_a_setup_that_fails_midway_leaves_loopback_and_runs_the_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An `ip` that fails inside the sandbox (a kernel without dummy and veth, a broken tool):
    the stage runs all the same, with loopback only, started or pre-started."""
    broken = SandboxNetwork(ip="/bin/false")
    monkeypatch.setattr(SandboxNetwork, "detect", classmethod(lambda cls: broken))
    for pool_size in (0, 2):
        runner = sandbox_runner(tmp_path / f"state-{pool_size}", pool_size=pool_size)
        try:
            assert runner.network is broken
            out = Collected()
            script = "ip -o -4 addr | grep -c 10.0.2.15; echo ran"
            result = await runner.run(hostile(runner, tmp_path, script), out)
            assert result.exit_code == 0, out.text
            assert out.text.split() == ["0", "ran"], out.text
        finally:
            await runner.close()


async def test_a_host_without_interfaces_gives_loopback_and_a_resolvable_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No `ip` here: no capability added, the host name on 127.0.1.1, stages run."""
    real_which = shutil.which
    monkeypatch.setattr(
        "infra.runners.sandbox_network.shutil.which",
        lambda name, path=None: None if name == "ip" else real_which(name, path=path),
    )
    runner = sandbox_runner(tmp_path / "state", pool_size=0)
    try:
        assert runner.network == SandboxNetwork()
        assert "CAP_NET_ADMIN" not in runner._base_args
        out = Collected()
        result = await runner.run(hostile(runner, tmp_path, RESOLVE), out)
        assert result.exit_code == 0, out.text
        assert out.text.strip() == f"{SANDBOX_HOSTNAME} {LOOPBACK_NAME_ADDRESS}", out.text
    finally:
        await runner.close()


def test_a_probe_that_fails_or_hangs_means_loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(*args: object, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
        return subprocess.CompletedProcess([], 2, b"", b"Error: Unknown device type.\n")

    def hanging(*args: object, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
        raise subprocess.TimeoutExpired("unshare", 15)

    def lying(*args: object, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
        return subprocess.CompletedProcess([], 0, b"0\n", b"")  # no carrier, no address

    for fake in (failing, hanging, lying):
        monkeypatch.setattr("infra.runners.sandbox_network.subprocess.run", fake)
        assert SandboxNetwork.detect() == SandboxNetwork()


def test_hosts_files_name_the_host_and_the_services(tmp_path: Path) -> None:
    text = hosts_text(["postgres", "redis"], INTERFACE_ADDRESS)
    assert text.splitlines() == [
        "127.0.0.1 localhost postgres redis",
        "::1 localhost ip6-localhost ip6-loopback",
        f"{INTERFACE_ADDRESS} {SANDBOX_HOSTNAME}",
    ]
    first = hosts_file(tmp_path, ["db"], INTERFACE_ADDRESS)
    other = hosts_file(tmp_path, ["db"], LOOPBACK_NAME_ADDRESS)
    assert first != other  # one file per content: runners of both kinds share the directory
    assert first.read_text().endswith(f"{INTERFACE_ADDRESS} {SANDBOX_HOSTNAME}\n")
    assert hosts_file(tmp_path, ["db"], INTERFACE_ADDRESS) == first
