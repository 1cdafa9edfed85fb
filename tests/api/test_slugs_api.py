"""Generated slugs through the API: organizations at sign-up and projects use the one slug rule
(German transliteration, never a lossy "m-ller"), including hostile names and racing creators."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from tests.factories import make_org


async def _signup(client: httpx.AsyncClient, organization_name: str) -> httpx.Response:
    suffix = uuid.uuid4().hex[:8]
    return await client.post(
        "/v1/auth/signup",
        json={
            "email": f"slug-{suffix}@example.com",
            "password": "a long enough password",
            "name": "Slug Tester",
            "organization_name": organization_name,
        },
    )


async def _create_project(
    client: httpx.AsyncClient, headers: dict[str, str], name: str
) -> httpx.Response:
    return await client.post(
        "/v1/projects", json={"name": name, "project_type": "static_site"}, headers=headers
    )


async def test_organization_slug_is_transliterated(api_client: httpx.AsyncClient) -> None:
    suffix = uuid.uuid4().hex[:6]
    response = await _signup(api_client, f"Müller GmbH {suffix}")
    assert response.status_code == 201, response.text
    assert response.json()["organization"]["slug"] == f"mueller-gmbh-{suffix}"


async def test_project_slug_is_transliterated(api_client: httpx.AsyncClient, session_maker) -> None:
    org = await make_org(session_maker)
    response = await _create_project(api_client, org.headers, "Müller GmbH")
    assert response.status_code == 201, response.text
    assert response.json()["slug"] == "mueller-gmbh"
    again = await _create_project(api_client, org.headers, "Müller GmbH")
    assert again.status_code == 201, again.text
    assert again.json()["slug"] == "mueller-gmbh-2"


async def test_hostile_names_get_usable_slugs(api_client: httpx.AsyncClient, session_maker) -> None:
    org = await make_org(session_maker)
    for name, expected in [
        ("!!!", "project"),
        ("ab", "ab-project"),
        ("../../etc/passwd", "etc-passwd"),
        ("a\u202eb <script>", "ab-script"),
        ("x" * 200, "x" * 63),
    ]:
        response = await _create_project(api_client, org.headers, name)
        assert response.status_code == 201, (name, response.text)
        assert response.json()["slug"] == expected, name
    signed_up = await _signup(api_client, "???")
    assert signed_up.status_code == 201, signed_up.text
    org_slug = signed_up.json()["organization"]["slug"]
    assert org_slug == "org" or org_slug.startswith("org-")


async def test_concurrent_projects_with_one_name_never_share_a_slug(
    api_client: httpx.AsyncClient, session_maker
) -> None:
    org = await make_org(session_maker)
    responses = await asyncio.gather(
        *(_create_project(api_client, org.headers, "Müller GmbH") for _ in range(4))
    )
    assert all(r.status_code in (201, 409) for r in responses), [r.text for r in responses]
    slugs = [r.json()["slug"] for r in responses if r.status_code == 201]
    assert slugs and len(slugs) == len(set(slugs))
    assert all(s == "mueller-gmbh" or s.startswith("mueller-gmbh-") for s in slugs)
