"""A sandbox's network interface besides loopback, and its host name in /etc/hosts, as a CI host
(a GitHub Actions or GitLab runner, a container) has them.

A stage's network namespace holds loopback only: its one way out is the forwarder to the egress
proxy on 127.0.0.1. Tools that look at the interfaces conclude from that that there is no network:
yarn 1 prints "You don't appear to have an internet connection" on stderr for every command (an
address other than 127.0.0.1 and ::1 on some interface means online to it), which breaks the tests
that compare a spawned command's stderr with a snapshot; code that takes the first non-internal
IPv4 address finds none. And a host name that /etc/hosts does not name fails Java's
`InetAddress.getLocalHost()` and Python's `socket.gethostbyname(socket.gethostname())`.

So each sandbox gets an `eth0` with a private address of its own, as a /32: it adds no route, and
every connection out still goes through the proxy or fails at once as before; the address itself
is local (a server bound to it answers inside the sandbox). The host name resolves to it, as in a
Docker container. The interface is made inside the sandbox's namespace before the build user takes
over (CAP_NET_ADMIN, dropped with every other capability by setpriv): a dummy interface where the
kernel has one, else a veth pair with both ends inside. The runner checks once, in a throwaway
namespace, that this works here; when it does not (no `ip`, neither kind of interface), sandboxes
keep loopback only and the host name resolves to 127.0.1.1, as on Debian.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass

log = logging.getLogger("forgeline.sandbox")

SANDBOX_HOSTNAME = "forgeline-build"
INTERFACE = "eth0"
PEER = "eth0-peer"
INTERFACE_ADDRESS = "10.0.2.15"
# The host name's address when there is no interface: on loopback, as Debian's installer does.
LOOPBACK_NAME_ADDRESS = "127.0.1.1"
STANDARD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PROBE_TIMEOUT_SECONDS = 15


def setup_script(ip: str) -> str:
    """Shell that makes the interface (best effort: a failure leaves loopback only and the stage
    runs all the same), then runs "$@"."""
    return (
        f"{{ {ip} link add {INTERFACE} type dummy || "
        f"{{ {ip} link add {INTERFACE} type veth peer name {PEER} && "
        f"{ip} link set {PEER} up; }}; }} 2>/dev/null && "
        f"{ip} addr add {INTERFACE_ADDRESS}/32 dev {INTERFACE} 2>/dev/null && "
        f"{ip} link set {INTERFACE} up 2>/dev/null; "
        'exec "$@"'
    )


def hosts_text(names: list[str], hostname_address: str) -> str:
    """/etc/hosts: localhost (and `names`, the stage's services) on loopback, the host name."""
    local = " ".join(["localhost", *names])
    return (
        f"127.0.0.1 {local}\n::1 localhost ip6-localhost ip6-loopback\n"
        f"{hostname_address} {SANDBOX_HOSTNAME}\n"
    )


@dataclass(frozen=True)
class SandboxNetwork:
    """What this host can give a sandbox: `ip` (None: loopback only)."""

    ip: str | None = None

    @property
    def hostname_address(self) -> str:
        return INTERFACE_ADDRESS if self.ip is not None else LOOPBACK_NAME_ADDRESS

    @property
    def caps(self) -> tuple[str, ...]:
        """The capability the setup needs inside the sandbox (setpriv drops it after)."""
        return ("CAP_NET_ADMIN",) if self.ip is not None else ()

    def setup_argv(self) -> list[str]:
        """Put before setpriv: makes the interface, then execs the rest of the command."""
        if self.ip is None:
            return []
        return ["/bin/sh", "-c", setup_script(self.ip), "forgeline-network"]

    @classmethod
    def detect(cls) -> SandboxNetwork:
        """The interface when a throwaway network namespace gets one here, else loopback only."""
        ip = shutil.which("ip", path=STANDARD_PATH)
        unshare = shutil.which("unshare", path=STANDARD_PATH)
        if ip is None or unshare is None:
            log.warning("sandboxes have loopback only: `ip` (iproute2) or `unshare` is missing")
            return cls()
        check = f"cat /sys/class/net/{INTERFACE}/carrier && {ip} -o -4 addr show dev {INTERFACE}"
        probe = [unshare, "--net", "/bin/sh", "-c", setup_script(ip), "probe", "/bin/sh", "-c"]
        try:
            result = subprocess.run(
                [*probe, check],
                capture_output=True,
                env={"PATH": STANDARD_PATH},
                timeout=PROBE_TIMEOUT_SECONDS,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("sandboxes have loopback only: the interface check failed: %s", exc)
            return cls()
        text = result.stdout.decode(errors="replace")
        if result.returncode != 0 or not text.startswith("1") or INTERFACE_ADDRESS not in text:
            log.warning(
                "sandboxes have loopback only: no dummy or veth interface here (%s)",
                result.stderr.decode(errors="replace").strip()[:200] or text.strip()[:200],
            )
            return cls()
        return cls(ip=ip)
