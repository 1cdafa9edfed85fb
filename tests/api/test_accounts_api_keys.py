"""API keys: format and checksum, shown once, hashed at rest, forged/expired/revoked keys,
scopes capped by role, per-key rate limit, last_used_at."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, update

from core.accounts import security
from core.accounts.scopes import effective_scopes
from db.models.accounts import ApiKey, OrganizationMember
from tests.factories import make_org


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_key_format_and_checksum():
    new = security.generate_api_key()
    assert new.raw.startswith("fl_live_") and len(new.raw) == security.API_KEY_LENGTH
    assert security.api_key_well_formed(new.raw)
    assert new.hash == security.sha256_hex(new.raw) and new.raw.startswith(new.prefix)
    # One changed character breaks the CRC32 checksum.
    last = new.raw[-1]
    tampered = new.raw[:-1] + ("A" if last != "A" else "B")
    assert not security.api_key_well_formed(tampered)
    assert not security.api_key_well_formed(new.raw[:-1])
    assert not security.api_key_well_formed(new.raw[:-2] + "!!")


def test_role_caps_scopes():
    assert effective_scopes("viewer", ["admin", "projects:write"]) == {
        "projects:read",
        "pipelines:read",
        "environments:read",
    }
    assert "projects:read" in effective_scopes("member", ["projects:write"])
    assert "admin" not in effective_scopes("member", ["admin"])


async def test_create_list_use_and_revoke(app, api_client, session_maker):
    org = await make_org(session_maker)
    created = await api_client.post(
        "/v1/api-keys",
        headers=org.headers,
        json={"name": "ci", "scopes": ["projects:read"], "expires_in_days": 30},
    )
    assert created.status_code == 201, created.text
    body = created.json()
    raw = body["key"]
    assert (
        security.api_key_well_formed(raw) and body["key_prefix"] == raw[: len(body["key_prefix"])]
    )

    listed = await api_client.get("/v1/api-keys", headers=org.headers)
    assert listed.status_code == 200
    text = listed.text
    assert raw not in text and "key_hash" not in text and '"key"' not in text
    async with session_maker() as session:
        row = await session.get(ApiKey, uuid.UUID(body["id"]))
        assert row is not None and row.key_hash == security.sha256_hex(raw)

    me = await api_client.get("/v1/me", headers=bearer(raw))
    assert me.status_code == 200
    assert me.json()["scopes"] == ["projects:read"] and me.json()["auth_method"] == "api_key"
    # projects:read only: managing keys needs admin.
    denied = await api_client.get("/v1/api-keys", headers=bearer(raw))
    assert denied.status_code == 403 and denied.json()["required_scope"] == "admin"

    await app.state.last_used.drain()  # the refresh is written in the background
    async with session_maker() as session:
        row = await session.get(ApiKey, uuid.UUID(body["id"]))
        assert row is not None and row.last_used_at is not None

    revoked = await api_client.delete(f"/v1/api-keys/{body['id']}", headers=org.headers)
    assert revoked.status_code == 204
    after = await api_client.get("/v1/me", headers=bearer(raw))
    assert after.status_code == 401 and "revoked" in after.json()["detail"]


async def test_malformed_and_forged_keys_are_401(api_client, session_maker):
    org = await make_org(session_maker)
    tampered = org.api_key[:-1] + ("x" if org.api_key[-1] != "x" else "y")
    malformed = await api_client.get("/v1/me", headers=bearer(tampered))
    assert malformed.status_code == 401 and malformed.json()["detail"] == "Malformed API key"
    forged = security.generate_api_key().raw  # valid checksum, never issued
    response = await api_client.get("/v1/me", headers=bearer(forged))
    assert response.status_code == 401 and response.json()["detail"] == "Invalid API key"
    # Same prefix as a real key, different secret: the hash comparison rejects it.
    body = org.api_key[len(security.API_KEY_PREFIX) :]
    random_part = body[:8] + security.generate_api_key().raw[16:38]
    same_prefix = security.API_KEY_PREFIX + random_part + security._checksum(random_part)
    assert (
        same_prefix[: security.DISPLAY_PREFIX_LENGTH]
        == org.api_key[: security.DISPLAY_PREFIX_LENGTH]
    )
    assert (await api_client.get("/v1/me", headers=bearer(same_prefix))).status_code == 401


async def test_expired_key_is_401(api_client, session_maker):
    org = await make_org(session_maker)
    async with session_maker() as session:
        await session.execute(
            update(ApiKey)
            .where(ApiKey.id == org.api_key_id)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
        await session.commit()
    response = await api_client.get("/v1/me", headers=org.headers)
    assert response.status_code == 401 and "expired" in response.json()["detail"]


async def test_key_scopes_must_be_subset_of_creator(api_client, session_maker):
    org = await make_org(session_maker, scopes=["admin"])
    ok = await api_client.post(
        "/v1/api-keys",
        headers=org.headers,
        json={"name": "deploy", "scopes": ["deployments:trigger"]},
    )
    assert ok.status_code == 201
    # An admin-scoped key of a plain member is capped at member scopes, so it cannot mint admin.
    member = await make_org(session_maker, role="member", scopes=["admin"])
    me = (await api_client.get("/v1/me", headers=member.headers)).json()
    assert "admin" not in me["scopes"]
    refused = await api_client.post(
        "/v1/api-keys", headers=member.headers, json={"name": "x", "scopes": ["projects:read"]}
    )
    assert refused.status_code == 403


async def test_key_request_validation(api_client, session_maker):
    org = await make_org(session_maker)
    for body in (
        {"name": "x", "scopes": ["projects:destroy"]},
        {"name": "x", "scopes": []},
        {"name": "x", "scopes": ["admin"], "key_hash": "0" * 64},
        {"name": "x", "scopes": ["admin"], "organization_id": str(uuid.uuid4())},
        {"name": "x", "scopes": ["admin"], "expires_in_days": 0},
    ):
        response = await api_client.post("/v1/api-keys", headers=org.headers, json=body)
        assert response.status_code == 422, body
    past = await api_client.post(
        "/v1/api-keys",
        headers=org.headers,
        json={"name": "x", "scopes": ["admin"], "expires_at": "2001-01-01T00:00:00Z"},
    )
    assert past.status_code == 422


async def test_viewer_key_never_writes(api_client, session_maker):
    viewer = await make_org(session_maker, role="viewer")  # key asks for every scope
    me = (await api_client.get("/v1/me", headers=viewer.headers)).json()
    assert me["role"] == "viewer"
    assert not {"projects:write", "pipelines:write", "deployments:trigger", "admin"} & set(
        me["scopes"]
    )
    patch = await api_client.patch(
        "/v1/organizations/current", headers=viewer.headers, json={"name": "nope"}
    )
    assert patch.status_code == 403


async def test_rate_limit_answers_429_with_retry_after(api_client, session_maker):
    org = await make_org(session_maker, rate_limit_per_minute=3)
    for _ in range(3):
        assert (await api_client.get("/v1/me", headers=org.headers)).status_code == 200
    limited = await api_client.get("/v1/me", headers=org.headers)
    assert limited.status_code == 429
    assert limited.headers["content-type"].startswith("application/problem+json")
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    # Another key of another org is unaffected.
    other = await make_org(session_maker, rate_limit_per_minute=3)
    assert (await api_client.get("/v1/me", headers=other.headers)).status_code == 200


async def test_removed_creator_disables_key_and_cross_tenant_key_is_404(api_client, session_maker):
    admin = await make_org(session_maker, role="admin")
    assert (await api_client.get("/v1/me", headers=admin.headers)).status_code == 200
    async with session_maker() as session:
        await session.execute(
            delete(OrganizationMember).where(OrganizationMember.user_id == admin.user_id)
        )
        await session.commit()
    gone = await api_client.get("/v1/me", headers=admin.headers)
    assert gone.status_code == 401

    org = await make_org(session_maker)
    other = await make_org(session_maker)
    foreign = await api_client.delete(f"/v1/api-keys/{other.api_key_id}", headers=org.headers)
    assert foreign.status_code == 404
    async with session_maker() as session:
        still = await session.scalar(select(ApiKey.revoked_at).where(ApiKey.id == other.api_key_id))
    assert still is None
