"""Every query the list/get endpoints of projects, environments and audit logs run is served by
an index: the SQL is captured from real API calls over ~25k rows and EXPLAINed (plans printed)."""

from __future__ import annotations

import random
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, insert, text

from db.models.accounts import Organization
from db.models.operations import AuditLog
from db.models.projects import Environment, Project
from tests.factories import make_org

TABLES = ("projects", "environments", "audit_logs")
FILLER_ORGS = 40
PROJECTS_PER_FILLER = 500
BIG_ORG_PROJECTS = 3000


def _project_rows(org_id: uuid.UUID, count: int, start: datetime) -> list[dict[str, Any]]:
    rnd = random.Random(str(org_id))
    types = ("static_site", "ssr_app", "spa", "api", "fullstack")
    frameworks = ("nextjs", "react", "vue", "django", "go")
    return [
        {
            "id": uuid.uuid4(),
            "organization_id": org_id,
            "name": f"Project {i}",
            "slug": f"proj-{i}",
            "project_type": rnd.choice(types),
            "framework": rnd.choice(frameworks),
            "status": "paused" if i % 17 == 0 else ("archived" if i % 29 == 0 else "active"),
            "config": {},
            "created_at": start + timedelta(seconds=i),
            "updated_at": start + timedelta(seconds=i),
        }
        for i in range(count)
    ]


@pytest.fixture(scope="module")
async def seeded(engine, session_maker):
    big = await make_org(session_maker)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    filler_orgs: list[dict[str, Any]] = [
        {"id": uuid.uuid4(), "name": f"Filler {i}", "slug": f"filler-{uuid.uuid4().hex[:12]}"}
        for i in range(FILLER_ORGS)
    ]
    big_projects = _project_rows(big.org_id, BIG_ORG_PROJECTS, start)
    busy_project = big_projects[-1]["id"]
    async with engine.begin() as conn:
        await conn.execute(insert(Organization), filler_orgs)
        await conn.execute(insert(Project), big_projects)
        for org in filler_orgs:
            await conn.execute(
                insert(Project), _project_rows(org["id"], PROJECTS_PER_FILLER, start)
            )
        envs = [
            {
                "project_id": busy_project if i < 400 else big_projects[i % 300]["id"],
                "name": f"env-{i}",
                "env_type": ("development", "staging", "production", "preview")[i % 4],
                "provider": "static",
                "config": {},
                "created_at": start + timedelta(seconds=i),
            }
            for i in range(3000)
        ]
        await conn.execute(insert(Environment), envs)
        audit = [
            {
                "organization_id": big.org_id if i % 3 == 0 else filler_orgs[i % FILLER_ORGS]["id"],
                "actor_type": "system",
                "action": ("project.created", "project.updated", "environment.created")[i % 3],
                "resource_type": "project",
                "resource_id": uuid.uuid4(),
                "created_at": start + timedelta(seconds=i),
            }
            for i in range(15_000)
        ]
        await conn.execute(insert(AuditLog), audit)
        for table in TABLES:
            await conn.execute(text(f"ANALYZE {table}"))
    return big, busy_project, big_projects[5]["id"]


async def test_list_and_get_queries_use_indexes(app, api_client, engine, seeded) -> None:
    big, busy_project, some_project = seeded
    captured: list[tuple[str, Any]] = []

    def capture(conn, cursor, statement, parameters, context, executemany) -> None:
        sql = statement.strip()
        if sql.upper().startswith("SELECT") and re.search(
            r"\bFROM (projects|environments|audit_logs)\b", sql
        ):
            captured.append((sql, parameters))

    sync_engine = app.state.engine.sync_engine
    event.listen(sync_engine, "before_cursor_execute", capture)
    try:
        h = big.headers
        first = (await api_client.get("/v1/projects?limit=50", headers=h)).json()
        calls = [
            f"/v1/projects?limit=50&cursor={first['next_cursor']}",
            "/v1/projects?status=paused",
            "/v1/projects?status=archived",
            "/v1/projects?project_type=spa&framework=react",
            "/v1/projects?search=project%2012",
            f"/v1/projects/{some_project}",
            f"/v1/projects/{busy_project}/environments?limit=50",
            f"/v1/projects/{busy_project}/environments?env_type=production",
            "/v1/audit-logs?limit=50",
            "/v1/audit-logs?action=project.updated",
            "/v1/audit-logs?since=2025-01-01T01:00:00Z",
        ]
        for url in calls:
            r = await api_client.get(url, headers=h)
            assert r.status_code == 200, (url, r.text)
        envs = (await api_client.get(calls[6], headers=h)).json()
        assert envs["next_cursor"]
        await api_client.get(
            f"/v1/projects/{busy_project}/environments?cursor={envs['next_cursor']}", headers=h
        )
        env_id = envs["items"][0]["id"]
        await api_client.get(f"/v1/environments/{env_id}", headers=h)
        logs = (await api_client.get("/v1/audit-logs", headers=h)).json()
        await api_client.get(f"/v1/audit-logs?cursor={logs['next_cursor']}", headers=h)
    finally:
        event.remove(sync_engine, "before_cursor_execute", capture)

    assert len(captured) >= 15
    problems = []
    async with engine.connect() as conn:
        for sql, params in captured:
            plan = "\n".join(row[0] for row in await conn.exec_driver_sql(f"EXPLAIN {sql}", params))
            print(f"\n--- {' '.join(sql.split())[:200]}\n{plan}")
            if "Index" not in plan:
                problems.append(f"no index in plan for: {sql}\n{plan}")
            for table in TABLES:
                if re.search(rf"Seq Scan on {table}\b", plan):
                    problems.append(f"sequential scan on {table} for: {sql}\n{plan}")
    assert not problems, "\n\n".join(problems)
