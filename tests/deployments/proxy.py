"""A real Caddy for the deployment tests: its own admin and HTTP ports on 127.0.0.1, stoppable and
restartable mid-test; requests to app hosts go to its loopback port with the Host header."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx

from infra.proxy_routes import caddy_config


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class CaddyProcess:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.admin_port = free_port()
        self.http_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)
        self.config = root / "caddy.json"
        self.config.write_text(
            json.dumps(
                caddy_config(
                    admin_listen=f"127.0.0.1:{self.admin_port}",
                    http_listen=f"127.0.0.1:{self.http_port}",
                )
            )
        )

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def start(self) -> None:
        binary = shutil.which("caddy")
        if binary is None:
            subprocess.run(
                ["bash", str(Path(__file__).resolve().parents[2] / "scripts" / "ensure-caddy.sh")],
                check=True,
            )
            binary = shutil.which("caddy")
        assert binary, "caddy is not installed"
        log = (self.root / "caddy.log").open("ab")
        env = {"HOME": str(self.root), "XDG_CONFIG_HOME": str(self.root), "PATH": "/usr/bin:/bin"}
        self.proc = subprocess.Popen(
            [binary, "run", "--config", str(self.config)], stdout=log, stderr=log, env=env
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.admin_url}/config/", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("caddy did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


def via_proxy(url: str, caddy_http_port: int) -> tuple[str, dict[str, str]]:
    """The loopback URL and Host header that reach `url` (an app host) through the proxy."""
    parsed = httpx.URL(url)
    return (
        f"http://127.0.0.1:{caddy_http_port}{parsed.raw_path.decode()}",
        {"Host": parsed.netloc.decode()},
    )
