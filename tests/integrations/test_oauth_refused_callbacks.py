"""A sign-in request is spent by every callback that presents its state from the browser that
started it, whatever the outcome: the forge's own refusal (`?error=access_denied`), a code the
forge refuses, no code, a code too long to be one. Replaying the state afterwards, even with a
good code for it, signs nobody in. (A callback from another browser spends nothing: see
test_oauth_browser_binding.py.) Real API, Postgres, authlib and a fake forge on loopback."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select

from core.accounts.oauth import _digest
from db.models.oauth import OAuthState
from tests.integrations.test_oauth_sign_in import forge_user, start


async def pending(session_maker: Any, state: str) -> int:
    async with session_maker() as session:
        count = await session.scalar(
            select(func.count()).where(OAuthState.state_hash == _digest(state))
        )
    return int(count or 0)


REFUSALS: dict[str, dict[str, str]] = {
    "the user denied it on the forge": {
        "error": "access_denied",
        "error_description": "The user has denied your application access.",
    },
    "a code the forge refuses": {"code": "0" * 20},
    "no code": {"code": ""},
    "a code too long to be one": {"code": "c" * 501},
    "a code with hostile characters": {"code": "'; DROP TABLE oauth_states; --\u202e"},
}


@pytest.mark.parametrize("refusal", sorted(REFUSALS))
async def test_a_refused_callback_spends_the_state(
    api_client: Any, oauth_api: Any, oauth: Any, session_maker: Any, refusal: str
) -> None:
    user = forge_user(f"refused-{uuid.uuid4().hex[:8]}@example.com")
    code, state = oauth.authorize(await start(api_client), user)
    assert await pending(session_maker, state) == 1
    refused = await api_client.get(
        "/v1/auth/oauth/github/callback", params={**REFUSALS[refusal], "state": state}
    )
    assert refused.status_code in (400, 422), refused.text
    assert "token" not in refused.text
    assert await pending(session_maker, state) == 0
    # The good code for that state, replayed after the refusal: the request is gone.
    replay = await api_client.get(
        "/v1/auth/oauth/github/callback", params={"code": code, "state": state}
    )
    assert replay.status_code == 400, replay.text
    assert "token" not in replay.json()


async def test_the_forges_refusal_is_said(api_client: Any, oauth_api: Any, oauth: Any) -> None:
    _, state = oauth.authorize(await start(api_client), forge_user())
    r = await api_client.get(
        "/v1/auth/oauth/github/callback",
        params={"error": "access_denied", "error_description": "denied <b>x</b>", "state": state},
    )
    assert r.status_code == 400
    assert "access_denied" in r.json()["detail"]


async def test_concurrent_refusal_and_good_callback_sign_in_at_most_once(
    api_client: Any, oauth_api: Any, oauth: Any, session_maker: Any
) -> None:
    """The refusal and the good code race for one state: at most one of them signs in, and the
    state is spent either way."""
    user = forge_user(f"race-{uuid.uuid4().hex[:8]}@example.com")
    code, state = oauth.authorize(await start(api_client), user)
    answers = await asyncio.gather(
        api_client.get(
            "/v1/auth/oauth/github/callback", params={"error": "access_denied", "state": state}
        ),
        api_client.get("/v1/auth/oauth/github/callback", params={"code": code, "state": state}),
    )
    assert sum(1 for r in answers if r.status_code == 200) <= 1
    assert await pending(session_maker, state) == 0
