"""The console's sign-in page offers the configured forges; a sign-in started from its button
comes back to the console signed in (its session cookie), against the fake forge."""

from __future__ import annotations

import uuid

from api.console.auth import SESSION_COOKIE
from tests.integrations.test_oauth_sign_in import forge_user


async def test_console_buttons_and_browser_sign_in(api_client, oauth_api, oauth) -> None:
    page = await api_client.get("/login")
    assert page.status_code == 200
    assert "Sign in with GitHub" in page.text and "Sign in with GitLab" in page.text
    started = await api_client.get("/v1/auth/oauth/github/start?redirect=true")
    assert started.status_code == 302
    assert "forgeline_oauth_console" in started.headers["set-cookie"]
    code, state = oauth.authorize(
        started.headers["location"], forge_user(f"c-{uuid.uuid4().hex[:8]}@example.com")
    )
    back = await api_client.get(
        "/v1/auth/oauth/github/callback", params={"code": code, "state": state}
    )
    assert back.status_code == 303, back.text
    assert back.headers["location"] == "/projects"
    assert api_client.cookies.get(SESSION_COOKIE)
    projects = await api_client.get("/projects")
    assert projects.status_code == 200
