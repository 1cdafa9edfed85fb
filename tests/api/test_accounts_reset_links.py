"""Set-password links under attack, against real Postgres: mailed, never stored in the clear; a
reset kills the other links; concurrent confirmations set one password; a failed one leaves the
link usable."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import func, select, update

from db.models.accounts import (
    PasswordResetToken,
    User,
)
from tests.api.mailbox import latest_token, tokens_sent_to
from tests.api.support import (
    login,
    signup,
    stored_text,
)

# ---------------------------------------------------------------- 7: tokens at rest


async def test_reset_links_are_mailed_never_stored_and_a_reset_kills_the_others(
    app, client, session_maker
):
    owner = await signup(client)
    email, user_id = owner["user"]["email"], uuid.UUID(owner["user"]["id"])
    for _ in range(2):
        assert (
            await client.post("/v1/auth/password-reset/request", json={"email": email})
        ).status_code == 202
    first, second = tokens_sent_to(app, email)[-2:]
    assert first != second and first.startswith("flr_")
    stored = await stored_text(session_maker, user_id)
    assert first not in stored and second not in stored and "token=" not in stored
    mail_file = sorted(app.state.mailer.directory.glob("*.eml"))[-1]
    assert mail_file.stat().st_mode & 0o077 == 0  # the outbox is private to its owner

    done = await client.post(
        "/v1/auth/password-reset/confirm", json={"token": second, "new_password": "new pass 123"}
    )
    assert done.status_code == 204
    # The earlier link died with the reset, although it was never used and has not expired.
    stale = await client.post(
        "/v1/auth/password-reset/confirm", json={"token": first, "new_password": "hijacked 1234"}
    )
    assert stale.status_code == 400 and stale.json()["type"].endswith("/invalid-token")
    assert (await login(client, email, "new pass 123")).status_code == 200
    assert (await login(client, email, "hijacked 1234")).status_code == 401

    # Hostile tokens: unknown, another prefix, a hash of a real token sent as the token.
    async with session_maker() as session:
        a_hash = (
            (
                await session.execute(
                    select(PasswordResetToken.token_hash).where(
                        PasswordResetToken.user_id == user_id
                    )
                )
            )
            .scalars()
            .first()
        )
    for bogus in ("flr_" + "A" * 43, "fls_" + second[4:], str(a_hash), "' OR 1=1 --xxxxx"):
        response = await client.post(
            "/v1/auth/password-reset/confirm", json={"token": bogus, "new_password": "x" * 12}
        )
        assert response.status_code == 400, (bogus, response.text)


async def test_two_links_confirmed_concurrently_set_one_password(app, client, session_maker):
    owner = await signup(client)
    email = owner["user"]["email"]
    for _ in range(2):
        await client.post("/v1/auth/password-reset/request", json={"email": email})
    first, second = tokens_sent_to(app, email)[-2:]
    results = await asyncio.gather(
        *(
            client.post(
                "/v1/auth/password-reset/confirm",
                json={"token": token, "new_password": f"password of {token[:8]}"},
            )
            for token in (first, second)
        )
    )
    statuses = sorted(r.status_code for r in results)
    assert statuses == [204, 400], [r.text for r in results]
    winner = (first, second)[[r.status_code for r in results].index(204)]
    assert (await login(client, email, f"password of {winner[:8]}")).status_code == 200
    async with session_maker() as session:
        live = await session.scalar(
            select(func.count()).where(
                PasswordResetToken.user_id == uuid.UUID(owner["user"]["id"]),
                PasswordResetToken.used_at.is_(None),
                PasswordResetToken.revoked_at.is_(None),
            )
        )
    assert live == 0


async def test_a_failed_confirmation_leaves_the_link_usable(app, client, session_maker):
    """A crash between using the link and committing the new password (here: the new password
    is refused after the link was looked up) rolls the use back; the link still works."""
    owner = await signup(client)
    email = owner["user"]["email"]
    await client.post("/v1/auth/password-reset/request", json={"email": email})
    token = latest_token(app, email)
    too_short = await client.post(
        "/v1/auth/password-reset/confirm", json={"token": token, "new_password": "short"}
    )
    assert too_short.status_code == 422
    async with session_maker() as session:
        await session.execute(
            update(User).where(User.id == uuid.UUID(owner["user"]["id"])).values(is_active=False)
        )
        await session.commit()
    inactive = await client.post(
        "/v1/auth/password-reset/confirm", json={"token": token, "new_password": "long enough 1"}
    )
    assert inactive.status_code == 400  # refused after the link was consumed: rolled back
    async with session_maker() as session:
        await session.execute(
            update(User).where(User.id == uuid.UUID(owner["user"]["id"])).values(is_active=True)
        )
        await session.commit()
    ok = await client.post(
        "/v1/auth/password-reset/confirm", json={"token": token, "new_password": "long enough 1"}
    )
    assert ok.status_code == 204
