"""A project's static-site rules travel with its deployments: a release serves the rules the
project had when it was requested (on the deployment's own host and on the environment's), a later
change of the project's rules reaches only later releases, and a rollback serves the rules of the
version it restores. Invalid rules are refused by the project's config validation."""

from __future__ import annotations

import uuid

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import update

from core.deployments import service
from core.projects.models import ProjectConfig
from db.models.projects import Project
from db.session import session_scope
from tests.deployments.helpers import (
    deployment_row,
    make_activities,
    make_environment,
    org_sources,
    running_worker,
    start_deployment,
    static_site,
    wait_status,
)
from tests.deployments.proxy import via_proxy
from tests.factories import make_org


async def _location(url: str, port: int, path: str) -> str | None:
    target, host = via_proxy(url + path, port)
    async with httpx.AsyncClient(follow_redirects=False) as http:
        response = await http.get(target, headers=host)
    location: str | None = response.headers.get("location")
    return location


def _rules(version: str) -> dict[str, object]:
    return ProjectConfig.model_validate(
        {
            "redirects": [{"source": "/old/:page", "destination": f"/{version}/:page"}],
            "headers": [{"source": "/(.*)", "headers": {"X-Site-Version": version}}],
        }
    ).model_dump(mode="json")


async def _set_rules(session_maker, project_id: uuid.UUID, version: str) -> None:
    async with session_scope(session_maker) as session:
        await session.execute(
            update(Project).where(Project.id == project_id).values(config=_rules(version))
        )


async def test_rules_are_released_with_their_version_and_rolled_back_with_it(
    settings, session_maker, temporal_client, task_queue
) -> None:
    org = await make_org(session_maker)
    project_id, env_id = await make_environment(
        session_maker, org.org_id, provider="static", config={"health_check_passes": 1}
    )
    port = settings.proxy_http_port
    sources = org_sources(settings, org.org_id)
    activities = make_activities(settings, session_maker, temporal_client, None)
    async with running_worker(temporal_client, task_queue, activities):
        await _set_rules(session_maker, project_id, "one")
        v1 = await start_deployment(
            session_maker,
            temporal_client,
            org.org_id,
            env_id,
            static_site(sources, "v1"),
            task_queue=task_queue,
        )
        first = await wait_status(session_maker, v1, ("active", "failed"))
        assert first.status == "active" and first.url, first.error
        env_url: str = first.url
        assert await _location(env_url, port, "/old/a") == "/one/a"

        # The project's rules change: the live site keeps its own until the next release.
        await _set_rules(session_maker, project_id, "two")
        assert await _location(env_url, port, "/old/a") == "/one/a"
        v2 = await start_deployment(
            session_maker,
            temporal_client,
            org.org_id,
            env_id,
            static_site(sources, "v2"),
            task_queue=task_queue,
        )
        second = await wait_status(session_maker, v2, ("active", "failed"))
        assert second.status == "active", second.error
        assert await _location(env_url, port, "/old/b") == "/two/b"
        target, host = via_proxy(env_url + "/", port)
        async with httpx.AsyncClient() as http:
            page = await http.get(target, headers=host)
        assert page.headers["x-site-version"] == "two" and "v2" in page.text

        # Rolling back to v1 serves v1's files with v1's rules.
        async with session_scope(session_maker) as session:
            _, rollback, inp = await service.request_rollback(
                session, service.Requester(org.org_id, org.user_id, None), v2
            )
        await service.start_workflow(temporal_client, inp, task_queue=task_queue)
        restored = await wait_status(session_maker, rollback.id, ("active", "failed"))
        assert restored.status == "active", restored.error
        assert await _location(env_url, port, "/old/c") == "/one/c"
        assert (await deployment_row(session_maker, v1)).config_snapshot["site"]["redirects"]


@pytest.mark.parametrize(
    "rule",
    [
        {"redirects": [{"source": "/(unclosed", "destination": "/x"}]},
        {"rewrites": [{"source": "/([a-)", "destination": "/x"}]},
        {"redirects": [{"source": "/a", "destination": "javascript:alert(1)"}]},
        {"headers": [{"source": "/a", "headers": {"Bad Name": "x"}}]},
        {"headers": [{"source": "/a", "headers": {"X-A": "line\r\nSet-Cookie: a=b"}}]},
    ],
)
def test_invalid_rules_are_refused(rule: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ProjectConfig.model_validate(rule)
