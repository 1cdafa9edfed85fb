"""Deployment tests run against a real Caddy: the settings point the activities at it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from forgeline.settings import Settings
from tests.deployments.proxy import CaddyProcess


@pytest.fixture(scope="session")
def caddy(tmp_root: Path) -> Iterator[CaddyProcess]:
    proc = CaddyProcess(tmp_root / "caddy")
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def settings(settings: Settings, caddy: CaddyProcess) -> Settings:
    return settings.model_copy(
        update={"proxy_admin_url": caddy.admin_url, "proxy_http_port": caddy.http_port}
    )
