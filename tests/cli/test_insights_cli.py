"""`forgeline insights project|org` against the real API on two seeded projects: JSON answers
equal to the API's, tables with the projects and DORA lines, a bad window refused before any
request, another tenant's project a one-line 404."""

from __future__ import annotations

import json
from typing import Any

from tests.cli.conftest import invoke
from tests.factories import make_org
from tests.operations.test_insights import seed_history
from tests.operations.test_organization_insights import seed_second_project


async def test_insights_of_a_project_and_the_organization(api_url: str, session_maker: Any) -> None:
    org = await make_org(session_maker)
    first, _ = await seed_history(session_maker, org)
    second, _ = await seed_second_project(session_maker, org)
    args = ("--api-url", api_url)

    code, out, err = await invoke("insights", "org", "--json", *args, key=org.api_key)
    assert code == 0, err
    body = json.loads(out)
    assert (body["organization_id"], body["runs"]) == (str(org.org_id), 8)
    assert {p["project_id"] for p in body["projects"]} == {str(first), str(second)}
    assert body["dora"]["deployments"] == 3

    code, out, err = await invoke(
        "insights", "project", str(second), "--window", "7d", "--output", "json", *args,
        key=org.api_key,
    )  # fmt: skip
    assert code == 0, err
    assert (json.loads(out)["runs"], json.loads(out)["window_days"]) == (4, 7)

    code, out, err = await invoke("insights", "org", *args, key=org.api_key)
    assert code == 0, err
    assert "Projects" in out and "DORA" in out and "Flakiest stages" in out

    # Refused before any request: the window's shape.
    code, _, err = await invoke("insights", "org", "--window", "30h", *args, key=org.api_key)
    assert code == 2 and "365" in err
    # Another organization does not see the project: one line, exit 1.
    other = await make_org(session_maker)
    code, _, err = await invoke("insights", "project", str(second), *args, key=other.api_key)
    assert code == 1 and "not found" in err.lower() and len(err.strip().splitlines()) == 1
