"""The build sandbox's only way out: an HTTP(S) proxy on a Unix socket, outside the sandbox.

A sandboxed stage has a network namespace of its own with nothing but loopback; a forwarder inside
it hands connections to this socket. The proxy resolves the name itself and connects only to
addresses outside internal networks (no loopback, private, link-local/metadata, CGNAT, multicast
or reserved ranges, whatever a name resolves to), so PostgreSQL, Temporal, the API and cloud
metadata stay out of reach while package registries work. `CONNECT host:port` tunnels TLS;
absolute-form `GET http://...` requests are forwarded one per connection. Operators may allow
extra networks (an internal mirror) and chain to an upstream proxy (`FORGELINE_BUILD_PROXY`).

Runs inside the build host (`EgressProxy.start`) or alone:
`python -m infra.runners.egress_proxy --socket PATH [--allow CIDR]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ipaddress
import logging
import os
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger("forgeline.egress")

CLONE_NEWNET = 0x40000000

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Where a stage finds the proxy: its own loopback, in its own network namespace.
PROXY_PORT = 3128
MAX_HEAD_BYTES = 16_384
CONNECT_TIMEOUT = 15.0
HEAD_TIMEOUT = 30.0
# Where builds never go: this host, its private networks, link-local (cloud metadata), carrier
# NAT, benchmarking, multicast and reserved space, and the IPv6 prefixes that can carry an IPv4
# destination inside (NAT64, 6to4). Everything else is the internet.
INTERNAL_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "64:ff9b::/96",
        "64:ff9b:1::/48",
        "2002::/16",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
)


def proxy_environment(port: int = PROXY_PORT) -> dict[str, str]:
    """The variables that point a stage's tools (curl, pip, npm, uv, git, JVM builds) at the
    proxy on its loopback; its own loopback services stay direct."""
    proxy = f"http://127.0.0.1:{port}"
    no_proxy = "localhost,127.0.0.1,::1"
    return {
        "HTTP_PROXY": proxy,
        "HTTPS_PROXY": proxy,
        "http_proxy": proxy,
        "https_proxy": proxy,
        "NO_PROXY": no_proxy,
        "no_proxy": no_proxy,
        "JAVA_TOOL_OPTIONS": (
            f"-Dhttp.proxyHost=127.0.0.1 -Dhttp.proxyPort={port} "
            f"-Dhttps.proxyHost=127.0.0.1 -Dhttps.proxyPort={port} "
            "-Dhttp.nonProxyHosts=localhost|127.0.0.1"
        ),
    }


def listen_in_namespace(pid: int, port: int = PROXY_PORT) -> socket.socket:
    """A listening socket on 127.0.0.1:`port` inside the network namespace of process `pid` (a
    container with no network of its own): made by a short-lived thread that joins that namespace,
    so nothing needs to run inside the container. The socket stays in that namespace; accepting
    from it works from any thread."""
    result: list[socket.socket | BaseException] = []

    def join_and_listen() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            with open(f"/proc/{pid}/ns/net", "rb") as namespace:
                if libc.setns(namespace.fileno(), CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into the stage's network: {os.strerror(err)}")
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", port))
            listener.listen(64)
            listener.setblocking(False)
            result.append(listener)
        except BaseException as exc:
            result.append(exc)

    # A thread of its own: the namespace it joins is never the worker's again.
    thread = threading.Thread(target=join_and_listen, name=f"egress-listen-{pid}", daemon=True)
    thread.start()
    thread.join()
    outcome = result[0]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


class EgressRefused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class EgressPolicy:
    """No internal address (INTERNAL_NETWORKS), except networks the operator allows explicitly."""

    allow: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_strings(cls, networks: Iterable[str]) -> EgressPolicy:
        return cls(tuple(ipaddress.ip_network(n, strict=False) for n in networks))

    def permits(self, address: IPAddress) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in net for net in self.allow if net.version == address.version):
            return True
        return not any(
            address in net for net in INTERNAL_NETWORKS if net.version == address.version
        )


@dataclass
class EgressStats:
    tunnels: int = 0
    refused: int = 0


def _split_host_port(authority: str, default_port: int) -> tuple[str, int]:
    host, port = authority, default_port
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise EgressRefused(400, "malformed host")
        host, rest = authority[1:end], authority[end + 1 :]
        if rest.startswith(":"):
            port = int(rest[1:])
    elif authority.count(":") == 1:
        host, _, port_text = authority.partition(":")
        port = int(port_text)
    if not host or not 0 < port < 65536:
        raise EgressRefused(400, "malformed host or port")
    return host, port


class EgressProxy:
    def __init__(self, policy: EgressPolicy | None = None, upstream: str | None = None) -> None:
        self.policy = policy or EgressPolicy()
        self.upstream = _split_host_port(urlsplit(upstream).netloc, 3128) if upstream else None
        self.stats = EgressStats()
        self._server: asyncio.AbstractServer | None = None

    async def start(self, socket_path: Path) -> None:
        socket_path.parent.mkdir(parents=True, exist_ok=True)
        socket_path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(
            self._handle, path=str(socket_path), limit=MAX_HEAD_BYTES
        )
        # Sandboxes run as the unprivileged build user; the socket is reachable only where it
        # is bind-mounted (each sandbox) and by the host's own users.
        os.chmod(socket_path, 0o666)  # noqa: S103

    async def serve_socket(self, listener: socket.socket) -> asyncio.AbstractServer:
        """Serve connections arriving on a listening socket made elsewhere (a stage's loopback)."""
        return await asyncio.start_server(self._handle, sock=listener, limit=MAX_HEAD_BYTES)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def resolve(self, host: str, port: int) -> IPAddress:
        """One address to connect to, never one the policy refuses (checked after resolution,
        and the connection goes to that address, so a second lookup cannot rebind the name)."""
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            candidates = [literal]
        else:
            loop = asyncio.get_running_loop()
            try:
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as exc:
                raise EgressRefused(502, f"cannot resolve {host}: {exc}") from None
            candidates = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
        refused = [a for a in candidates if not self.policy.permits(a)]
        if refused or not candidates:
            raise EgressRefused(403, f"{host} resolves to an address builds may not reach")
        return candidates[0]

    async def _open(
        self, host: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        address = await self.resolve(host, port)
        if self.upstream is not None:
            up_host, up_port = self.upstream
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(up_host, up_port), CONNECT_TIMEOUT
            )
            target = f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"
            writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
            status = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CONNECT_TIMEOUT)
            if b" 200" not in status.split(b"\r\n", 1)[0]:
                writer.close()
                raise EgressRefused(502, "upstream proxy refused the tunnel")
            return reader, writer
        try:
            return await asyncio.wait_for(
                asyncio.open_connection(str(address), port), CONNECT_TIMEOUT
            )
        except (OSError, TimeoutError) as exc:
            raise EgressRefused(502, f"cannot connect to {host}:{port}: {exc}") from None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: asyncio.StreamWriter | None = None
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                return
            request_line, _, header_block = head.decode("latin-1").partition("\r\n")
            parts = request_line.split(" ")
            if len(parts) != 3:
                raise EgressRefused(400, "malformed request line")
            method, target, version = parts
            try:
                if method == "CONNECT":
                    host, port = _split_host_port(target, 443)
                    up_reader, upstream = await self._open(host, port)
                    writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                else:
                    url = urlsplit(target)
                    if url.scheme != "http" or not url.netloc:
                        raise EgressRefused(400, "only CONNECT and absolute http:// requests")
                    host, port = _split_host_port(url.netloc, 80)
                    up_reader, upstream = await self._open(host, port)
                    path = url.path or "/"
                    if url.query:
                        path += "?" + url.query
                    headers = [
                        line
                        for line in header_block.split("\r\n")
                        if line
                        and line.split(":", 1)[0].strip().lower()
                        not in ("proxy-connection", "proxy-authorization", "connection")
                    ]
                    rewritten = "\r\n".join(
                        [f"{method} {path} {version}", *headers, "Connection: close", "", ""]
                    )
                    upstream.write(rewritten.encode("latin-1"))
            except ValueError:
                raise EgressRefused(400, "malformed host or port") from None
            self.stats.tunnels += 1
            await writer.drain()
            await asyncio.gather(_pipe(reader, upstream), _pipe(up_reader, writer))
        except EgressRefused as refusal:
            if refusal.status == 403:
                self.stats.refused += 1
                log.info("egress refused: %s", refusal.reason)
            body = f"forgeline egress proxy: {refusal.reason}\n".encode()
            with contextlib.suppress(OSError):
                writer.write(
                    f"HTTP/1.1 {refusal.status} {'Forbidden' if refusal.status == 403 else 'Error'}"
                    f"\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
                    "Connection: close\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (writer, upstream):
                if w is not None:
                    w.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        with contextlib.suppress(OSError):
            if writer.can_write_eof():
                writer.write_eof()


async def _serve(socket_path: Path, allow: list[str], upstream: str | None) -> None:
    proxy = EgressProxy(EgressPolicy.from_strings(allow), upstream)
    await proxy.start(socket_path)
    print(f"egress proxy listening on {socket_path}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("--allow", action="append", default=[], help="CIDR builds may reach")
    parser.add_argument("--upstream", default=None, help="upstream HTTP proxy URL")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    asyncio.run(_serve(args.socket, args.allow, args.upstream))


if __name__ == "__main__":
    main()
