"""Every console form refuses a cross-site request (no CSRF token, a wrong one, or another
session's), and every console page with an ID answers 404 for another organization's IDs. The
route lists are read from the console's routers, so a new form or page cannot miss the check."""

from __future__ import annotations

import importlib
import pkgutil
import uuid
from datetime import UTC, datetime

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import api.console
from db.models.accounts import OrganizationMember
from db.models.agent import AgentTask
from db.models.billing import Invoice
from db.models.deployments import Deployment
from db.models.pipelines import Artifact, PipelineRun
from db.session import session_scope
from forgeline.settings import Settings
from infra.storage import create_object_store
from tests.console.helpers import RunRows, csrf_of, make_deployment, make_run, sign_in
from tests.factories import OrgFixture, make_org


def console_routes(method: str) -> set[str]:
    """The paths of every console router (each api/console module that has one)."""
    paths: set[str] = set()
    for module in pkgutil.iter_modules(api.console.__path__):
        router = getattr(importlib.import_module(f"api.console.{module.name}"), "router", None)
        if router is not None:
            paths |= {r.path for r in router.routes if method in getattr(r, "methods", ())}
    return paths


async def _objects(
    session_maker: async_sessionmaker[AsyncSession], org: OrgFixture, settings: Settings
) -> dict[str, str]:
    """One of each object the console's URLs name, owned by `org`."""
    rows: RunRows = await make_run(session_maker, org)
    deployment = await make_deployment(
        session_maker, org, rows.project_id, status="awaiting_approval"
    )
    artifact, invoice, task = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    create_object_store(settings).put_bytes(f"x/{artifact}", b"artifact")
    async with session_scope(session_maker) as session:
        session.add(
            Artifact(
                id=artifact,
                run_id=rows.run_id,
                name="a.txt",
                object_key=f"x/{artifact}",
                size_bytes=8,
            )
        )
        session.add(
            AgentTask(
                id=task,
                organization_id=org.org_id,
                project_id=rows.project_id,
                task_type="generate_pipeline",
                status="failed",
                input_data={"verify": True},
                error="the workflow could not be started",
            )
        )
        session.add(
            Invoice(
                id=invoice,
                organization_id=org.org_id,
                invoice_number=f"INV-{invoice.hex[:10]}",
                period_start=datetime(2026, 9, 1, tzinfo=UTC),
                period_end=datetime(2026, 10, 1, tzinfo=UTC),
            )
        )
    async with session_maker() as session:
        member = await session.scalar(
            select(OrganizationMember.id).where(OrganizationMember.organization_id == org.org_id)
        )
    return {
        "project_id": str(rows.project_id),
        "pipeline_id": str(rows.pipeline_id),
        "run_id": str(rows.run_id),
        "stage": "build",
        "artifact_id": str(artifact),
        "deployment_id": str(deployment),
        "invoice_id": str(invoice),
        "member_id": str(member),
        "task_id": str(task),
    }


async def _state(
    session_maker: async_sessionmaker[AsyncSession], org: OrgFixture
) -> tuple[int, ...]:
    async with session_maker() as session:
        runs = await session.scalar(
            select(func.count()).select_from(PipelineRun).where(
                PipelineRun.organization_id == org.org_id
            )
        )  # fmt: skip
        deployments = await session.scalar(
            select(func.count()).where(Deployment.organization_id == org.org_id)
        )
        roles = await session.scalar(
            select(func.count()).where(
                OrganizationMember.organization_id == org.org_id,
                OrganizationMember.role == "owner",
            )
        )
        tasks = await session.scalar(
            select(func.count()).where(AgentTask.organization_id == org.org_id)
        )
    return int(runs or 0), int(deployments or 0), int(roles or 0), int(tasks or 0)


async def test_every_form_refuses_a_request_without_its_sessions_csrf_token(
    api_client: httpx.AsyncClient,
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    org, attacker = await make_org(session_maker), await make_org(session_maker)
    ids = await _objects(session_maker, org, settings)
    # A token that is valid, but for another session (the attacker's own, still signed in).
    await sign_in(api_client, attacker)
    foreign_token = csrf_of((await api_client.get("/projects")).text)
    api_client.cookies.clear()
    await sign_in(api_client, org)
    own_token = csrf_of((await api_client.get("/projects")).text)
    before = await _state(session_maker, org)
    forms = {path.format(**ids, decision="{decision}") for path in console_routes("POST")}
    covered: set[str] = set()
    # Fields every form would accept: only the token is wrong.
    data = {
        "reason": "r", "role": "viewer", "name": "x", "branch": "main", "from": "failed",
        "environment": ids["deployment_id"], "email": org.email, "password": org.password,
        "project_type": "api",
    }  # fmt: skip
    for path in sorted(forms):
        targets = (
            [path.format(decision=d) for d in ("approve", "reject", "rollback", "promote")]
            if "{decision}" in path
            else [path]
        )
        for target in targets:
            for token in (None, "", "0" * 64, foreign_token, own_token + "x"):
                form = data if token is None else {**data, "csrf": token}
                answer = await api_client.post(target, data=form)
                assert answer.status_code == 403, (target, token, answer.status_code)
                assert "The form expired" in answer.text
        covered.add(path)
    assert covered == forms and len(forms) >= 11
    assert f"/projects/{ids['project_id']}/agent-tasks" in forms
    assert await _state(session_maker, org) == before
    assert (await api_client.get("/projects")).status_code == 200  # still signed in


async def test_every_page_with_an_id_is_404_for_another_organizations_ids(
    api_client: httpx.AsyncClient,
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    mine, theirs = await make_org(session_maker), await make_org(session_maker)
    their_ids = await _objects(session_maker, theirs, settings)
    my_ids = await _objects(session_maker, mine, settings)
    await sign_in(api_client, mine)
    pages = {p for p in console_routes("GET") if "{" in p}
    assert len(pages) >= 10 and "/agent-tasks/{task_id}" in pages
    for path in sorted(pages):
        answer = await api_client.get(path.format(**their_ids))
        assert answer.status_code == 404, (path, answer.status_code)
        assert theirs.slug not in answer.text
        # Mixing one's own run with another's artifact is still another's: 404.
        if "artifact_id" in path:
            mixed = path.format(**{**my_ids, "artifact_id": their_ids["artifact_id"]})
            assert (await api_client.get(mixed)).status_code == 404
        # And one's own IDs are fine (so the 404 above is about the owner, not the route).
        own = await api_client.get(path.format(**my_ids))
        assert own.status_code == 200, (path, own.status_code)
