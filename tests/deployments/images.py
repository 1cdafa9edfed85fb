"""Tiny test images built FROM scratch with static busybox: a healthy app and broken ones."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import docker

ROOT = Path(__file__).resolve().parents[2]


HEALTHY = """\
FROM scratch
COPY busybox /bin/busybox
COPY www /www
ENTRYPOINT ["/bin/busybox", "httpd", "-f", "-v", "-p", "8080", "-h", "/www"]
"""
# Serves, but every path is a 404: health checks fail while the container keeps running.
NO_CONTENT = """\
FROM scratch
COPY busybox /bin/busybox
ENTRYPOINT ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/bin"]
"""
# Exits at once.
EXITS = """\
FROM scratch
COPY busybox /bin/busybox
ENTRYPOINT ["/bin/busybox", "false"]
"""


def docker_client() -> docker.DockerClient:
    """A live engine or a hard failure: Docker tests must never silently skip."""
    try:
        client = docker.from_env()
        client.ping()
        return client
    except Exception:
        subprocess.run(["bash", str(ROOT / "scripts" / "ensure-docker.sh")], check=True)
        client = docker.from_env()
        client.ping()
        return client


def write_context(path: Path, dockerfile: str | None, body: str = "hello v1") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    busybox = Path("/bin/busybox") if Path("/bin/busybox").exists() else Path("/usr/bin/busybox")
    shutil.copy2(busybox, path / "busybox")
    (path / "www").mkdir(exist_ok=True)
    (path / "www" / "index.html").write_text(f"<h1>{body}</h1>\n")
    (path / "www" / "healthz").write_text("ok\n")
    if dockerfile is not None:
        (path / "Dockerfile").write_text(dockerfile)
    return path


def build_image(client: docker.DockerClient, context: Path, tag: str) -> str:
    client.images.build(path=str(context), tag=tag, rm=True)
    return tag
