"""Test images FROM scratch with a statically linked busybox: no registry pulls, ever."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from infra.containers import ContainerEngine, EngineUnavailable

BUSYBOX_IMAGE = "forgeline-test/busybox:1"
ENSURE_DOCKER = Path(__file__).resolve().parents[2] / "scripts" / "ensure-docker.sh"

DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
ENV PATH=/bin
CMD ["/bin/sh"]
"""


def busybox_binary() -> Path:
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        if Path(candidate).exists():
            return Path(candidate)
    raise RuntimeError("busybox-static is not installed (scripts/ensure-docker.sh installs it)")


def connect_engine() -> ContainerEngine:
    """A live engine or an error: Docker-parametrised tests fail, never skip."""
    try:
        return ContainerEngine.connect()
    except EngineUnavailable:
        subprocess.run(["bash", str(ENSURE_DOCKER)], check=True, timeout=600)
        return ContainerEngine.connect()


def ensure_busybox_image(engine: ContainerEngine) -> str:
    if engine.image_exists(BUSYBOX_IMAGE):
        return BUSYBOX_IMAGE
    with tempfile.TemporaryDirectory() as tmp:
        context = Path(tmp)
        shutil.copy2(busybox_binary(), context / "busybox")
        (context / "Dockerfile").write_text(DOCKERFILE)
        engine.build_image(context, BUSYBOX_IMAGE)
    return BUSYBOX_IMAGE
