"""An npm registry on 127.0.0.1 for Node.js toolchain tests: `node-linux-<arch>` releases whose
bin/node is a stand-in (it answers `--version` with its release, and hands anything else to the
host's real node), and npm and corepack repacked from the host's own installation. Counts each
request, and can be told to fail (404, 500, a tampered or hostile tarball, a download that
stalls half way)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from infra.runners.node_toolchain import registry_arch
from tests.loopback_http import serving

HOST_MODULES = Path("/usr/lib/node_modules")
STAND_IN = """#!/bin/sh
case "$1" in --version|-v) echo v{version}; exit 0;; esac
exec /usr/bin/node "$@"
"""


def _tgz(files: dict[str, tuple[bytes, int]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", compresslevel=1) as tar:
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def node_tarball(version: str, *, hostile: bool = False) -> bytes:
    files = {
        "package/bin/node": (STAND_IN.format(version=version).encode(), 0o755),
        "package/LICENSE": (b"MIT\n", 0o644),
        # Some weight, so a download can be cut half way.
        "package/share/doc/node/padding": (bytes(range(256)) * 4096, 0o644),
    }
    if hostile:
        files["package/../../escaped"] = (b"outside\n", 0o644)
    return _tgz(files)


def host_package(name: str) -> tuple[str, dict[str, object], bytes]:
    """The host's installed `name` (npm, corepack) as a registry tarball."""
    source = HOST_MODULES / name
    manifest = json.loads((source / "package.json").read_text())
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", compresslevel=1) as tar:
        tar.add(source, arcname="package")
    return str(manifest["version"]), dict(manifest.get("engines") or {}), out.getvalue()


def integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


@dataclass
class FakeRegistry:
    url: str = ""
    # name -> version -> (tarball, engines); the Node releases with their publication time.
    packages: dict[str, dict[str, tuple[bytes, dict[str, object]]]] = field(default_factory=dict)
    published: dict[str, str] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)
    # "404" (everything), "500-tarballs", "tampered", "stall" (half a tarball, then silence)
    failure: str | None = None
    stalled: threading.Event = field(default_factory=threading.Event)

    def add_node(self, version: str, published: str, *, hostile: bool = False) -> None:
        package = f"node-linux-{registry_arch()}"
        self.packages.setdefault(package, {})[version] = (
            node_tarball(version, hostile=hostile),
            {},
        )
        self.published[version] = published

    def tarball_hits(self, name: str) -> int:
        return sum(n for path, n in self.hits.items() if path.startswith(f"/-/{name}/"))

    def packument(self, name: str) -> dict[str, object] | None:
        releases = self.packages.get(name)
        if releases is None:
            return None
        versions = {
            version: {
                "name": name,
                "version": version,
                "engines": engines,
                "dist": {
                    "tarball": f"{self.url}/-/{name}/{version}.tgz",
                    "integrity": integrity(data),
                },
            }
            for version, (data, engines) in releases.items()
        }
        times = {v: t for v, t in self.published.items() if v in releases}
        return {"name": name, "versions": versions, "time": times}


def _handler(registry: FakeRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return None

        def _send(self, status: int, body: bytes, kind: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            registry.hits[self.path] += 1
            if registry.failure == "404":
                return self._send(404, b'{"error":"not found"}')
            if not self.path.startswith("/-/"):
                document = registry.packument(self.path.lstrip("/"))
                if document is None:
                    return self._send(404, b'{"error":"not found"}')
                return self._send(200, json.dumps(document).encode())
            name, _, file = self.path[3:].partition("/")
            release = registry.packages.get(name, {}).get(file.removesuffix(".tgz"))
            if release is None:
                return self._send(404, b'{"error":"not found"}')
            data = release[0]
            if registry.failure == "500-tarballs":
                return self._send(500, b"upstream failed")
            if registry.failure == "tampered":
                data = data[:-10] + bytes(10)
            if registry.failure == "stall" and name.startswith("node-linux-"):
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                registry.stalled.set()
                time.sleep(600)  # until the test ends and the server goes
                return None
            return self._send(200, data, "application/octet-stream")

    return Handler


@contextmanager
def fake_registry(
    host_packages: dict[str, tuple[str, dict[str, object], bytes]],
) -> Iterator[FakeRegistry]:
    registry = FakeRegistry()
    for name, (version, engines, data) in host_packages.items():
        registry.packages[name] = {version: (data, engines)}
    with serving(_handler(registry)) as registry.url:
        yield registry
