"""Projects API against real Postgres: CRUD, slugs, validation, pagination, audit rows."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import func, select

from db.models.operations import AuditLog
from db.models.projects import Project
from forgeline.environment_variables import reveal
from tests.factories import make_org


async def audit_count(session_maker, org_id, action: str | None = None) -> int:
    async with session_maker() as session:
        stmt = select(func.count()).select_from(AuditLog).where(AuditLog.organization_id == org_id)
        if action:
            stmt = stmt.where(AuditLog.action == action)
        return int((await session.execute(stmt)).scalar_one())


@pytest.fixture
async def org(session_maker):
    return await make_org(session_maker)


async def create(client: httpx.AsyncClient, org, **body) -> httpx.Response:
    payload = {"name": "My Site", "project_type": "static_site", **body}
    return await client.post("/v1/projects", json=payload, headers=org.headers)


async def test_create_get_and_slug_generation(api_client, org, session_maker) -> None:
    r = await create(api_client, org, name="Hello Wörld Site!", framework="nextjs")
    assert r.status_code == 201, r.text
    project = r.json()
    assert project["slug"] == "hello-woerld-site"
    assert project["organization_id"] == str(org.org_id)
    assert project["status"] == "active"
    got = await api_client.get(f"/v1/projects/{project['id']}", headers=org.headers)
    assert got.status_code == 200 and got.json()["name"] == "Hello Wörld Site!"
    # Same name again: a generated slug is de-duplicated, not refused.
    r2 = await create(api_client, org, name="Hello Wörld Site!")
    assert r2.status_code == 201 and r2.json()["slug"] == "hello-woerld-site-2"
    assert await audit_count(session_maker, org.org_id, "project.created") == 2


async def test_explicit_slug_conflict_is_409_and_writes_nothing(
    api_client, org, session_maker
) -> None:
    assert (await create(api_client, org, slug="shop")).status_code == 201
    before = await audit_count(session_maker, org.org_id)
    r = await create(api_client, org, slug="shop")
    assert r.status_code == 409
    assert r.headers["content-type"].startswith("application/problem+json")
    assert await audit_count(session_maker, org.org_id) == before
    # Another organization may use the same slug.
    other = await make_org(session_maker)
    assert (await create(api_client, other, slug="shop")).status_code == 201


@pytest.mark.parametrize(
    "body",
    [
        {"slug": "AB"},
        {"slug": "Upper-Case"},
        {"slug": "-leading"},
        {"slug": "trailing-"},
        {"slug": "a" * 64},
        {"slug": "has space"},
        {"project_type": "mainframe"},
        {"framework": "cobol-on-rails"},
        {"organization_id": str(uuid.uuid4())},
        {"status": "archived"},
        {"id": str(uuid.uuid4())},
        {"config": {"build_command": "npm run build", "unknown": 1}},
        {"config": {"output_directory": "../../etc"}},
        {"config": {"output_directory": "/abs"}},
        {"config": {"environment_variables": [{"name": "1BAD", "value": "x"}]}},
        {
            "config": {
                "environment_variables": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]
            }
        },
        {"config": {"headers": [{"source": "/x", "headers": {"X-A": "a\r\nInjected: 1"}}]}},
        {"config": {"redirects": [{"source": "/a", "destination": "javascript:alert(1)"}]}},
        {"config": {"node_version": "20; rm -rf /"}},
        {"name": ""},
        {"name": "x" * 300},
    ],
)
async def test_bad_input_is_4xx_and_writes_nothing(api_client, org, session_maker, body) -> None:
    r = await create(api_client, org, **body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    async with session_maker() as session:
        count = await session.scalar(
            select(func.count()).select_from(Project).where(Project.organization_id == org.org_id)
        )
    assert count == 0
    assert await audit_count(session_maker, org.org_id) == 0


async def test_malformed_json_is_400(api_client, org) -> None:
    r = await api_client.post(
        "/v1/projects",
        content=b'{"name": ',
        headers={**org.headers, "content-type": "application/json"},
    )
    assert r.status_code == 400


async def test_config_secrets_are_masked_and_kept_on_round_trip(
    api_client, app, org, session_maker
) -> None:
    config = {
        "install_command": "npm ci",
        "build_command": "npm run build",
        "output_directory": "dist",
        "node_version": "20",
        "environment_variables": [
            {"name": "NODE_ENV", "value": "production"},
            {"name": "API_TOKEN", "value": "s3cr3t-value", "secret": True},
        ],
        "headers": [{"source": "/(.*)", "headers": {"X-Frame-Options": "DENY"}}],
        "rewrites": [{"source": "/api/:path*", "destination": "/backend/:path*"}],
        "redirects": [{"source": "/old", "destination": "https://example.com/new"}],
    }
    r = await create(api_client, org, config=config)
    assert r.status_code == 201, r.text
    body = r.json()
    assert "s3cr3t-value" not in r.text
    env = {v["name"]: v for v in body["config"]["environment_variables"]}
    assert env["API_TOKEN"]["value"] == "********" and env["API_TOKEN"]["secret"] is True
    assert env["NODE_ENV"]["value"] == "production"
    # Stored encrypted: the plain value is nowhere in the row or the audit trail.
    async with session_maker() as session:
        stored = await session.get(Project, uuid.UUID(body["id"]))
        assert stored is not None and "s3cr3t-value" not in str(stored.config)
        audit = (await session.execute(select(AuditLog.new_values))).scalars().all()
        assert all("s3cr3t-value" not in str(v) for v in audit)
    # Round-trip the masked config with a change: the secret survives.
    sent = body["config"]
    sent["build_command"] = "npm run build:prod"
    r2 = await api_client.patch(
        f"/v1/projects/{body['id']}", json={"config": sent}, headers=org.headers
    )
    assert r2.status_code == 200, r2.text
    async with session_maker() as session:
        stored = await session.get(Project, uuid.UUID(body["id"]))
        assert stored is not None
    assert reveal(stored.config["environment_variables"], app.state.settings) == {
        "NODE_ENV": "production",
        "API_TOKEN": "s3cr3t-value",
    }
    assert stored.config["build_command"] == "npm run build:prod"
    assert await audit_count(session_maker, org.org_id, "project.updated") == 1


async def test_update_and_archive_audit_exactly_one_row_each(
    api_client, org, session_maker
) -> None:
    project = (await create(api_client, org)).json()
    url = f"/v1/projects/{project['id']}"
    r = await api_client.patch(
        url, json={"name": "Renamed", "framework": "vue"}, headers=org.headers
    )
    assert r.status_code == 200 and r.json()["framework"] == "vue"
    assert await audit_count(session_maker, org.org_id, "project.updated") == 1
    async with session_maker() as session:
        row = (
            await session.execute(
                select(AuditLog).where(
                    AuditLog.organization_id == org.org_id, AuditLog.action == "project.updated"
                )
            )
        ).scalar_one()
    assert set(row.changed_fields) == {"name", "framework"}
    assert row.old_values["name"] == "My Site" and row.new_values["name"] == "Renamed"
    assert row.actor_api_key_id == org.api_key_id and row.actor_type == "api_key"
    assert row.request_id
    # A PATCH that changes nothing is not a mutation.
    await api_client.patch(url, json={"name": "Renamed"}, headers=org.headers)
    assert await audit_count(session_maker, org.org_id, "project.updated") == 1

    r = await api_client.post(f"{url}/archive", headers=org.headers)
    assert r.status_code == 200 and r.json()["status"] == "archived" and r.json()["archived_at"]
    assert (await api_client.post(f"{url}/archive", headers=org.headers)).status_code == 200
    assert await audit_count(session_maker, org.org_id, "project.archived") == 1
    # Archived: hidden from the default list, writes refused until unarchived.
    listed = (await api_client.get("/v1/projects", headers=org.headers)).json()
    assert project["id"] not in [p["id"] for p in listed["items"]]
    archived = (await api_client.get("/v1/projects?status=archived", headers=org.headers)).json()
    assert [p["id"] for p in archived["items"]] == [project["id"]]
    assert (await api_client.patch(url, json={"name": "x"}, headers=org.headers)).status_code == 409
    r = await api_client.post(f"{url}/unarchive", headers=org.headers)
    assert r.status_code == 200 and r.json()["status"] == "active"
    assert r.json()["archived_at"] is None


async def test_patch_rejects_nulls_and_status_archived(api_client, org) -> None:
    project = (await create(api_client, org)).json()
    url = f"/v1/projects/{project['id']}"
    for body in ({"name": None}, {"status": "archived"}, {"slug": None}, {"organization_id": None}):
        r = await api_client.patch(url, json=body, headers=org.headers)
        assert r.status_code == 422, (body, r.text)


async def test_slug_change_conflict(api_client, org) -> None:
    a = (await create(api_client, org, slug="alpha")).json()
    await create(api_client, org, slug="beta")
    r = await api_client.patch(
        f"/v1/projects/{a['id']}", json={"slug": "beta"}, headers=org.headers
    )
    assert r.status_code == 409


async def test_list_filters_and_keyset_pagination(api_client, org) -> None:
    ids = []
    for i in range(7):
        kind = "spa" if i % 2 else "api"
        r = await create(api_client, org, name=f"Proj {i}", project_type=kind, framework="react")
        ids.append(r.json()["id"])
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = (await api_client.get("/v1/projects", params=params, headers=org.headers)).json()
        seen += [p["id"] for p in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(ids))  # newest first, no gaps, no repeats
    spa = (await api_client.get("/v1/projects?project_type=spa", headers=org.headers)).json()
    assert len(spa["items"]) == 3
    found = (await api_client.get("/v1/projects?search=oj 4", headers=org.headers)).json()
    assert [p["name"] for p in found["items"]] == ["Proj 4"]
    none = (await api_client.get("/v1/projects?search=%25", headers=org.headers)).json()
    assert none["items"] == []
    for bad in ("cursor=garbage", "limit=0", "limit=100000", "status=deleted"):
        r = await api_client.get(f"/v1/projects?{bad}", headers=org.headers)
        assert r.status_code == 422, bad


async def test_scopes_and_roles(api_client, session_maker) -> None:
    reader = await make_org(session_maker, scopes=["projects:read"])
    r = await create(api_client, reader)
    assert r.status_code == 403
    viewer = await make_org(session_maker, role="viewer", scopes=["projects:write"])
    assert (await create(api_client, viewer)).status_code == 403
    assert (await api_client.get("/v1/projects", headers=viewer.headers)).status_code == 200
    assert (await api_client.get("/v1/projects")).status_code == 401


async def test_other_tenant_gets_404(api_client, session_maker) -> None:
    a = await make_org(session_maker)
    b = await make_org(session_maker)
    project = (await create(api_client, a)).json()
    for method, path in [
        ("GET", f"/v1/projects/{project['id']}"),
        ("PATCH", f"/v1/projects/{project['id']}"),
        ("POST", f"/v1/projects/{project['id']}/archive"),
    ]:
        r = await api_client.request(
            method, path, headers=b.headers, json={} if method == "PATCH" else None
        )
        assert r.status_code == 404, (method, path)
    listed = (await api_client.get("/v1/projects", headers=b.headers)).json()
    assert listed["items"] == []


async def test_plan_limits_answer_402_and_write_nothing(api_client, session_maker) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import delete

    from db.models.billing import Plan, PlanFeature, Subscription
    from db.session import session_scope

    org = await make_org(session_maker)
    plan_id = uuid.uuid4()
    now = datetime.now(UTC)
    async with session_scope(session_maker) as session:
        session.add(Plan(id=plan_id, slug=f"tiny-{plan_id.hex[:8]}", name="Tiny", max_projects=2))
        await session.flush()
        session.add(
            PlanFeature(plan_id=plan_id, feature_key="environments_per_project", limit_value=1)
        )
        session.add(
            Subscription(
                organization_id=org.org_id,
                plan_id=plan_id,
                status="active",
                current_period_start=now,
                current_period_end=now + timedelta(days=30),
            )
        )
    try:
        first = (await create(api_client, org, name="One")).json()
        assert (await create(api_client, org, name="Two")).status_code == 201
        before = await audit_count(session_maker, org.org_id)
        r = await create(api_client, org, name="Three")
        assert r.status_code == 402, r.text
        assert r.json()["limit"] == "projects"
        assert await audit_count(session_maker, org.org_id) == before
        # Archived projects do not count against the limit.
        await api_client.post(f"/v1/projects/{first['id']}/archive", headers=org.headers)
        assert (await create(api_client, org, name="Three")).status_code == 201

        r = await api_client.post(f"/v1/projects/{first['id']}/unarchive", headers=org.headers)
        assert r.status_code == 402
        second = (await api_client.get("/v1/projects", headers=org.headers)).json()["items"][0]
        envs = f"/v1/projects/{second['id']}/environments"
        body = {"name": "staging", "env_type": "staging", "provider": "static"}
        assert (await api_client.post(envs, json=body, headers=org.headers)).status_code == 201
        r = await api_client.post(envs, json={**body, "name": "prod"}, headers=org.headers)
        assert r.status_code == 402 and r.json()["limit"] == "environments_per_project"
    finally:
        async with session_scope(session_maker) as session:
            await session.execute(delete(Subscription).where(Subscription.plan_id == plan_id))
            await session.execute(delete(Plan).where(Plan.id == plan_id))
