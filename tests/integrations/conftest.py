"""Fixtures of the integration tests: a fake GitHub and GitLab on loopback, and settings that
point the forge clients at it; the GitHub App and the OAuth endpoints on that fake, and the
settings (and API) that name them. Every test has an integrations task queue of its own and has
the workflows it started terminated at its end, so none reaches a later test's forge."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import SecretStr
from temporalio.client import Client

from forgeline.settings import Settings
from tests.integrations.app_support import APP_WEBHOOK_SECRET
from tests.integrations.fake_forge import FakeForge, running_fake_forge
from tests.integrations.fake_github_app import FakeGitHubApp, install_app
from tests.integrations.fake_oauth import CLIENT_ID, CLIENT_SECRET, FakeOAuth, install_oauth
from tests.integrations.isolation import own_queue_name, terminate_started_since
from tests.integrations.support import integrations_worker


@pytest.fixture(autouse=True)
async def integrations_queue(
    settings: Settings, temporal_client: Client, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str]:
    """The test's own integrations task queue, carried by the session's settings (and so by the
    API's, the workers' and every copy the test makes) for the test's duration; at its end every
    workflow it started that still runs is terminated."""
    queue = own_queue_name()
    monkeypatch.setattr(settings, "integrations_task_queue", queue)
    started = datetime.now(UTC)
    yield queue
    await terminate_started_since(temporal_client, started)


@pytest.fixture
def forge() -> Iterator[FakeForge]:
    with running_fake_forge() as fake:
        yield fake


@pytest.fixture
def forge_settings(settings: Settings, forge: FakeForge, integrations_queue: str) -> Settings:
    return settings.model_copy(
        update={"github_api_url": forge.github_api_url, "gitlab_api_url": forge.gitlab_api_url}
    )


@pytest.fixture
def installation() -> int:
    # Installations are unique across the shared database: one of its own per test.
    return secrets.randbelow(10**12) + 1


@pytest.fixture
def app_forge(forge: FakeForge, installation: int) -> tuple[FakeGitHubApp, str]:
    app, pem = install_app(forge)
    app.installations[installation] = ["acme/widgets"]
    return app, pem


@pytest.fixture
def app_settings(forge_settings: Settings, app_forge: tuple[FakeGitHubApp, str]) -> Settings:
    app, pem = app_forge
    return forge_settings.model_copy(
        update={
            "github_app_id": app.app_id,
            "github_app_private_key": SecretStr(pem),
            "github_app_webhook_secret": SecretStr(APP_WEBHOOK_SECRET),
        }
    )


@pytest.fixture
def app_api(app: Any, app_settings: Settings) -> Iterator[None]:
    """The API answers with the App's settings for the test's duration."""
    previous = app.state.settings
    app.state.settings = app_settings
    try:
        yield
    finally:
        app.state.settings = previous


@pytest.fixture
def oauth(forge: FakeForge) -> FakeOAuth:
    return install_oauth(forge)


@pytest.fixture
def oauth_api(
    app: Any, forge_settings: Settings, forge: FakeForge, oauth: FakeOAuth
) -> Iterator[None]:
    settings = forge_settings.model_copy(
        update={
            "github_web_url": forge.url,
            "gitlab_web_url": forge.url,
            "github_oauth_client_id": CLIENT_ID,
            "github_oauth_client_secret": SecretStr(CLIENT_SECRET),
            "gitlab_oauth_client_id": CLIENT_ID,
            "gitlab_oauth_client_secret": SecretStr(CLIENT_SECRET),
        }
    )
    previous = app.state.settings
    app.state.settings = settings
    try:
        yield
    finally:
        app.state.settings = previous


@pytest.fixture
async def worker(
    temporal_client: Client, settings: Settings, session_maker: Any, task_queue: str
) -> AsyncIterator[Any]:
    """The integrations worker, its runs on the test's own task queue (a module that needs
    another worker defines its own `worker`)."""
    async with integrations_worker(
        temporal_client, settings, session_maker, run_task_queue=task_queue
    ) as w:
        yield w
