"""The production stack's files as the compose tests read them: docker-compose.yml rendered by
`docker compose config` in a project directory of the test's own, and .env.example's variables."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from forgeline.settings import (
    AGENT_TASK_QUEUE,
    BILLING_TASK_QUEUE,
    DEPLOYMENTS_TASK_QUEUE,
    INTEGRATIONS_TASK_QUEUE,
    NOTIFICATIONS_TASK_QUEUE,
    OPERATIONS_TASK_QUEUE,
    PIPELINES_TASK_QUEUE,
)

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
SECRET_NAME = re.compile(r"PASSWORD|SECRET|_KEYS?$|TOKEN|PWD", re.IGNORECASE)
# Ports that must never face the host: PostgreSQL, Temporal frontend, Temporal UI (container
# port), Caddy admin, MinIO API and console, Docker engine APIs.
SENSITIVE_PORTS = {5432, 7233, 8080, 2019, 9000, 9001, 2375, 2376}
FORGELINE_SERVICES = ("migrate", "api", "worker", "build-host")
CONTROL_QUEUES = {
    AGENT_TASK_QUEUE,
    PIPELINES_TASK_QUEUE,
    DEPLOYMENTS_TASK_QUEUE,
    BILLING_TASK_QUEUE,
    INTEGRATIONS_TASK_QUEUE,
    NOTIFICATIONS_TASK_QUEUE,
    OPERATIONS_TASK_QUEUE,
}


def uv_command() -> list[str]:
    """`uv run` sets UV to its own path; otherwise uv on PATH, else the pip-installed module."""
    found = os.environ.get("UV") or shutil.which("uv")
    return [found] if found else [sys.executable, "-m", "uv"]


def example_variables() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def required_variables() -> set[str]:
    return set(re.findall(r"\$\{([A-Z0-9_]+):\?", COMPOSE_TEXT))


def project(tmp: Path, env: dict[str, str], extra_files: dict[str, str] | None = None) -> Path:
    shutil.copy(ROOT / "docker-compose.yml", tmp / "docker-compose.yml")
    shutil.copytree(ROOT / "deploy", tmp / "deploy", dirs_exist_ok=True)
    (tmp / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    for name, text in (extra_files or {}).items():
        (tmp / name).write_text(text)
    return tmp


def render(compose_bin: str, directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [compose_bin, "--project-directory", str(directory), *args, "config", "--format", "json"],
        cwd=directory,
        # Only .env and the env files speak: compose would also read this process's variables.
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(directory)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def env_of(service: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in (service.get("environment") or {}).items()}


def networks_of(service: dict[str, Any]) -> set[str]:
    return set(service.get("networks") or {})


def raw_services() -> dict[str, Any]:
    import yaml

    services: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)["services"]
    return services
