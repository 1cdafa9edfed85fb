"""Fixtures of the integration tests: a fake GitHub and GitLab on loopback, and settings that
point the forge clients at it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from forgeline.settings import Settings
from tests.integrations.fake_forge import FakeForge, running_fake_forge


@pytest.fixture
def forge() -> Iterator[FakeForge]:
    with running_fake_forge() as fake:
        yield fake


@pytest.fixture
def forge_settings(settings: Settings, forge: FakeForge) -> Settings:
    return settings.model_copy(
        update={"github_api_url": forge.github_api_url, "gitlab_api_url": forge.gitlab_api_url}
    )
