"""Identity against real Postgres: sign-up, sessions (login, refresh, logout, expiry), password
reset, TOTP, and addresses that could break a mail header."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pyotp
from sqlalchemy import func, select, update

from core.accounts.sessions import SESSION_TTL
from db.models.accounts import PasswordResetToken, User, UserSession
from tests.api.mailbox import latest_token
from tests.api.support import (
    audit_actions,
    bearer,
    signup,
)
from tests.factories import make_org


async def test_signup_creates_owner_session_and_audit(api_client, session_maker):
    result = await signup(api_client)
    assert result["user"]["email"].startswith("person-")  # normalised to lower case
    token = result["session"]["token"]
    expires = datetime.fromisoformat(result["session"]["expires_at"])
    assert timedelta(days=6, hours=23) < expires - datetime.now(UTC) <= SESSION_TTL
    me = await api_client.get("/v1/me", headers=bearer(token))
    assert me.status_code == 200, me.text
    assert me.json()["role"] == "owner" and "admin" in me.json()["scopes"]
    assert me.json()["auth_method"] == "session"
    org_id = result["organization"]["id"]
    assert await audit_actions(session_maker, org_id) == ["organization.signed_up"]
    async with session_maker() as session:
        user = await session.get(User, uuid.UUID(result["user"]["id"]))
        assert user is not None and user.password_hash is not None
        assert user.password_hash.startswith("$argon2id$")
        stored = (await session.execute(select(UserSession.token_hash))).scalars().all()
        assert token not in stored  # only the hash is at rest


async def test_email_is_unique_case_insensitively(api_client):
    first = await signup(api_client)
    again = await api_client.post(
        "/v1/auth/signup",
        json={
            "email": first["user"]["email"].upper(),
            "password": "another long password",
            "name": "Twin",
            "organization_name": "Twin Co",
        },
    )
    assert again.status_code == 409
    assert again.headers["content-type"].startswith("application/problem+json")


async def test_signup_refuses_mass_assignment_and_writes_nothing(api_client, session_maker):
    email = f"mass-{uuid.uuid4().hex[:8]}@example.com"
    for extra in (
        {"organization_id": str(uuid.uuid4())},
        {"role": "owner"},
        {"password_hash": "x"},
    ):
        response = await api_client.post(
            "/v1/auth/signup",
            json={
                "email": email,
                "password": "a long enough password",
                "name": "M",
                "organization_name": "Mass",
                **extra,
            },
        )
        assert response.status_code == 422
    async with session_maker() as session:
        count = await session.scalar(
            select(func.count()).select_from(User).where(User.email == email)
        )
    assert count == 0


async def test_login_refresh_rotates_and_logout_revokes(api_client, session_maker):
    result = await signup(api_client)
    email = result["user"]["email"]
    bad = await api_client.post("/v1/auth/login", json={"email": email, "password": "wrong one!"})
    assert bad.status_code == 401
    unknown = await api_client.post(
        "/v1/auth/login", json={"email": "nobody@example.com", "password": "whatever it is"}
    )
    assert unknown.status_code == 401 and unknown.json()["detail"] == bad.json()["detail"]

    login = await api_client.post(
        "/v1/auth/login", json={"email": email.upper(), "password": "a long enough password"}
    )
    assert login.status_code == 200, login.text
    first = login.json()["token"]

    refreshed = await api_client.post("/v1/auth/refresh", headers=bearer(first))
    assert refreshed.status_code == 200, refreshed.text
    second = refreshed.json()["token"]
    assert second != first
    assert (await api_client.get("/v1/me", headers=bearer(first))).status_code == 401
    assert (await api_client.get("/v1/me", headers=bearer(second))).status_code == 200

    assert (await api_client.post("/v1/auth/logout", headers=bearer(second))).status_code == 204
    assert (await api_client.get("/v1/me", headers=bearer(second))).status_code == 401
    actions = await audit_actions(session_maker, result["organization"]["id"])
    assert actions[-3:] == ["session.created", "session.rotated", "session.revoked"]


async def test_expired_session_is_rejected(api_client, session_maker):
    result = await signup(api_client)
    token = result["session"]["token"]
    async with session_maker() as session:
        await session.execute(
            update(UserSession)
            .where(UserSession.user_id == uuid.UUID(result["user"]["id"]))
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
        await session.commit()
    response = await api_client.get("/v1/me", headers=bearer(token))
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]
    assert response.headers["www-authenticate"] == "Bearer"


async def test_refresh_and_logout_refuse_api_keys(api_client, session_maker):
    org = await make_org(session_maker)
    assert (await api_client.post("/v1/auth/refresh", headers=org.headers)).status_code == 403


async def test_password_reset_is_single_use_and_revokes_sessions(app, api_client, session_maker):
    result = await signup(api_client)
    email, old_token = result["user"]["email"], result["session"]["token"]
    accepted = await api_client.post("/v1/auth/password-reset/request", json={"email": email})
    assert accepted.status_code == 202
    nobody = await api_client.post(
        "/v1/auth/password-reset/request", json={"email": "ghost@example.com"}
    )
    assert nobody.status_code == 202  # same answer: no account probing

    token = latest_token(app, email)
    async with session_maker() as session:
        hashes = (await session.execute(select(PasswordResetToken.token_hash))).scalars().all()
    assert token not in hashes

    body = {"token": token, "new_password": "brand new password 1"}
    assert (await api_client.post("/v1/auth/password-reset/confirm", json=body)).status_code == 204
    reused = await api_client.post("/v1/auth/password-reset/confirm", json=body)
    assert reused.status_code == 400 and reused.json()["type"].endswith("/invalid-token")

    assert (await api_client.get("/v1/me", headers=bearer(old_token))).status_code == 401
    old_login = {"email": email, "password": "a long enough password"}
    assert (await api_client.post("/v1/auth/login", json=old_login)).status_code == 401
    new_login = {"email": email, "password": "brand new password 1"}
    assert (await api_client.post("/v1/auth/login", json=new_login)).status_code == 200


async def test_expired_reset_token_is_refused(app, api_client, session_maker):
    result = await signup(api_client)
    await api_client.post(
        "/v1/auth/password-reset/request", json={"email": result["user"]["email"]}
    )
    token = latest_token(app, result["user"]["email"])
    async with session_maker() as session:
        await session.execute(
            update(PasswordResetToken)
            .where(PasswordResetToken.user_id == uuid.UUID(result["user"]["id"]))
            .values(expires_at=datetime.now(UTC) - timedelta(minutes=1))
        )
        await session.commit()
    response = await api_client.post(
        "/v1/auth/password-reset/confirm", json={"token": token, "new_password": "whatever 12345"}
    )
    assert response.status_code == 400


async def test_totp_enroll_confirm_then_required_at_login(api_client, session_maker):
    result = await signup(api_client)
    token, email = result["session"]["token"], result["user"]["email"]
    enrolled = await api_client.post("/v1/auth/totp/enroll", headers=bearer(token))
    assert enrolled.status_code == 200, enrolled.text
    secret = enrolled.json()["secret"]
    assert enrolled.json()["otpauth_uri"].startswith("otpauth://totp/")
    async with session_maker() as session:
        user = await session.get(User, uuid.UUID(result["user"]["id"]))
        assert user is not None and user.totp_secret_encrypted
        assert secret not in user.totp_secret_encrypted  # encrypted at rest

    wrong = await api_client.post(
        "/v1/auth/totp/confirm", headers=bearer(token), json={"code": "000000"}
    )
    assert wrong.status_code == 422
    code = pyotp.TOTP(secret).now()
    confirmed = await api_client.post(
        "/v1/auth/totp/confirm", headers=bearer(token), json={"code": code}
    )
    assert confirmed.status_code == 200 and confirmed.json() == {"enabled": True}

    credentials = {"email": email, "password": "a long enough password"}
    missing = await api_client.post("/v1/auth/login", json=credentials)
    assert missing.status_code == 401 and missing.json()["type"].endswith("/totp-required")
    bad_code = await api_client.post("/v1/auth/login", json={**credentials, "totp_code": "123456"})
    assert bad_code.status_code == 401
    # The confirm call burned the current step; the next step's code is fresh.
    totp = pyotp.TOTP(secret)
    next_code = totp.at(datetime.now(UTC) + timedelta(seconds=30))
    good = await api_client.post("/v1/auth/login", json={**credentials, "totp_code": next_code})
    assert good.status_code == 200, good.text
    replay = await api_client.post("/v1/auth/login", json={**credentials, "totp_code": next_code})
    assert replay.status_code == 401  # a code works once


async def test_unauthenticated_and_garbage_tokens_are_401(api_client):
    assert (await api_client.get("/v1/me")).status_code == 401
    for token in ("nonsense", "fls_forged-session-token", "Basic abc"):
        response = await api_client.get("/v1/me", headers=bearer(token))
        assert response.status_code == 401
        assert response.headers["content-type"].startswith("application/problem+json")


async def test_addresses_with_line_breaks_or_control_characters_are_refused(
    api_client, session_maker
):
    """An address goes into a mail header: a character Python reads as a line break there
    (record separator, NEL, line separator) is a 422, never a half-sent invitation."""
    owner = await signup(api_client)
    headers = bearer(owner["session"]["token"])
    org_id = owner["organization"]["id"]
    before = await audit_actions(session_maker, org_id)
    for email in (
        "a\x1eb@example.com",
        "ab@exa\x85mple.com",
        "ab@example.com\u2028x",
        "a\x00@b.cd",
    ):
        invited = await api_client.post(
            "/v1/members/invitations", json={"email": email}, headers=headers
        )
        assert invited.status_code == 422, (email, invited.text)
        signed_up = await api_client.post(
            "/v1/auth/signup",
            json={
                "email": email,
                "password": "a long enough password",
                "name": "Person",
                "organization_name": "Acme",
            },
        )
        assert signed_up.status_code == 422, (email, signed_up.text)
    assert await audit_actions(session_maker, org_id) == before
