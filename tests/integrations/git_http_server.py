"""A private git forge on loopback for clone tests: `git http-backend` behind a small HTTP server
that answers every request without the right Basic credentials (`x-access-token:<token>`, a
token `authorize` accepts for that repository) with 401, and records who asked."""

from __future__ import annotations

import base64
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from tests.loopback_http import serving

# (token, "owner/name") -> whether the token may read that repository.
Authorize = Callable[[str, str], bool]


@dataclass
class GitForge:
    root: Path
    authorize: Authorize
    url: str = ""
    # (repository, token or None, HTTP status answered), in arrival order.
    requests: list[tuple[str, str | None, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def publish(self, work_tree: Path, full_name: str) -> None:
        """A bare copy of `work_tree` served as `full_name`; call again to push new commits."""
        bare = self.root / f"{full_name}.git"
        if not bare.exists():
            bare.parent.mkdir(parents=True, exist_ok=True)
            _git("init", "-q", "--bare", str(bare))
            _git("-C", str(bare), "config", "uploadpack.allowAnySHA1InWant", "true")
        _git("-C", str(work_tree), "push", "-q", "--force", str(bare), "HEAD:refs/heads/main")
        _git("-C", str(bare), "symbolic-ref", "HEAD", "refs/heads/main")

    def tokens_used(self) -> set[str]:
        with self.lock:
            return {t for _, t, status in self.requests if t is not None and status < 400}

    def refused(self) -> list[tuple[str, str | None, int]]:
        with self.lock:
            return [r for r in self.requests if r[2] == 401]


def _git(*args: str) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GIT_CONFIG_GLOBAL": os.devnull}
    subprocess.run(["git", *args], env=env, check=True, capture_output=True)


def _credentials(header: str) -> tuple[str, str] | None:
    if not header.startswith("Basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    except ValueError:
        return None
    return user, password


def _handler(forge: GitForge) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def _serve(self, method: str) -> None:
            path, _, query = self.path.partition("?")
            parts = path.strip("/").split("/")
            repository = "/".join(parts[:2]).removesuffix(".git")
            credentials = _credentials(self.headers.get("Authorization", ""))
            token = credentials[1] if credentials else None
            allowed = (
                credentials is not None
                and credentials[0] == "x-access-token"
                and forge.authorize(credentials[1], repository)
            )
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if not allowed:
                self._record(repository, token, 401)
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="forge"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "GIT_PROJECT_ROOT": str(forge.root),
                "GIT_HTTP_EXPORT_ALL": "1",
                "GIT_CONFIG_GLOBAL": os.devnull,
                "REQUEST_METHOD": method,
                "PATH_INFO": path,
                "QUERY_STRING": query,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
                "REMOTE_USER": "x-access-token",
                "REMOTE_ADDR": "127.0.0.1",
                "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
                "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            }
            done = subprocess.run(
                ["git", "http-backend"], input=body, env=env, capture_output=True, check=False
            )
            head, _, payload = done.stdout.partition(b"\r\n\r\n")
            if not payload and b"\n\n" in head:
                head, _, payload = done.stdout.partition(b"\n\n")
            status = 200
            headers: list[tuple[str, str]] = []
            for line in head.decode(errors="replace").splitlines():
                name, _, value = line.partition(":")
                if name.lower() == "status":
                    status = int(value.strip().split()[0])
                elif name:
                    headers.append((name, value.strip()))
            self._record(repository, token, status)
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _record(self, repository: str, token: str | None, status: int) -> None:
            with forge.lock:
                forge.requests.append((repository, token, status))

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def running_git_forge(root: Path, authorize: Authorize) -> Iterator[GitForge]:
    forge = GitForge(root=root, authorize=authorize)
    with serving(_handler(forge)) as forge.url:
        yield forge
