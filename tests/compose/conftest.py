"""Fixtures of the compose tests: the compose binary, an operator's .env, the rendered stack
(each once for the package)."""

from __future__ import annotations

import json
import secrets
import subprocess
from typing import Any

import pytest

from tests.compose.support import (
    ROOT,
    example_variables,
    project,
    render,
)


@pytest.fixture(scope="package")
def compose_bin() -> str:
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "ensure-compose.sh")],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="package")
def env_values() -> dict[str, str]:
    """A .env as an operator writes it from .env.example: a distinct random value per variable."""
    return {name: f"v{secrets.token_hex(12)}" for name in example_variables()}


@pytest.fixture(scope="package")
def stack(
    compose_bin: str, env_values: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The full stack, every profile on, with a providers.env and a temporal-ui.env."""
    directory = project(
        tmp_path_factory.mktemp("stack"),
        env_values,
        {
            "providers.env": "ANTHROPIC_API_KEY=anthropic-test-key\nSTRIPE_API_KEY=sk_test_x\n",
            "temporal-ui.env": "TEMPORAL_AUTH_CLIENT_SECRET=oidc-test-secret\n",
        },
    )
    done = render(compose_bin, directory, "--profile", "operator-ui")
    assert done.returncode == 0, done.stderr
    rendered: dict[str, Any] = json.loads(done.stdout)
    return rendered
