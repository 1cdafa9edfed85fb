"""`forgeline deploy` and `forgeline deployments ...` on static sites through the real API,
worker and Caddy: deploy --wait, list, show, promote to a protected environment, approve and
reject at the gate (the one who asked cannot approve), roll back."""

from __future__ import annotations

import json

from core.accounts.keys import insert_api_key
from core.accounts.scopes import ALL_SCOPES
from db.session import session_scope
from tests.cli.conftest import invoke
from tests.deployments.helpers import make_environment, org_sources
from tests.deployments.images import write_context
from tests.factories import make_org


async def owner_key(session_maker, org) -> str:
    async with session_scope(session_maker) as session:
        _key, raw = await insert_api_key(
            session,
            organization_id=org.org_id,
            created_by_user_id=org.owner_user_id,
            name="owner",
            scopes=sorted(ALL_SCOPES),
        )
    return raw


async def test_deploy_promote_approve_reject_rollback(
    api_url, session_maker, settings, deploy_worker
) -> None:
    org = await make_org(session_maker, role="admin")
    owner = await owner_key(session_maker, org)
    project_id, staging = await make_environment(session_maker, org.org_id, provider="static")
    _, production = await make_environment(
        session_maker, org.org_id, provider="static", env_type="production", protected=True,
        project_id=project_id,
    )  # fmt: skip
    sources = org_sources(settings, org.org_id)
    args = ("--api-url", api_url)

    deployed = []
    for version in ("1.0.0", "2.0.0"):
        site = write_context(sources / version, None, f"hello {version}")
        code, out, err = await invoke(
            "deploy", str(staging), "--version", version, "--source-dir", str(site),
            "--output-dir", "www", "--wait", "--timeout", "120", "-o", "json", *args, key=owner,
        )  # fmt: skip
        assert code == 0, (out, err)
        deployed.append(json.loads(out))
        assert deployed[-1]["status"] == "active"

    code, out, err = await invoke(
        "deployments", "list", "--env", str(staging), "--json", *args, key=owner
    )
    assert code == 0, err
    assert {d["version"] for d in json.loads(out)} == {"1.0.0", "2.0.0"}
    code, out, err = await invoke(
        "deployments", "list", "--project", str(project_id), *args, key=owner
    )
    assert code == 0 and deployed[1]["id"] in out  # a table: IDs are never shortened

    # Promote 2.0.0 to production: it stops at the approval gate (exit 0, says so).
    code, out, err = await invoke(
        "deployments", "promote", deployed[1]["id"], "--to", str(production), "--wait",
        "--json", *args, key=owner,
    )  # fmt: skip
    assert code == 0, err
    gated = json.loads(out)
    assert gated["status"] == "awaiting_approval" and "awaits approval" in err
    # Whoever asked cannot approve: the API's 403 as one line.
    code, _, err = await invoke("deployments", "approve", gated["id"], *args, key=owner)
    assert code == 1 and err.startswith("Error: HTTP 403") and err.count("\n") == 1
    code, out, err = await invoke(
        "deployments", "approve", gated["id"], "--reason", "release notes read", "--json",
        *args, key=org.api_key,
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["approved"] is True
    code, out, err = await invoke("deployments", "show", gated["id"], "--json", *args, key=owner)
    assert code == 0 and json.loads(out)["approvals"]["approved"] >= 1

    # A second promotion rejected; a reason is required and refused when it is not printable.
    code, out, err = await invoke(
        "deployments", "promote", deployed[0]["id"], "--to", str(production), "--wait",
        "--json", *args, key=owner,
    )  # fmt: skip
    second = json.loads(out)
    assert second["status"] == "awaiting_approval"
    code, _, err = await invoke("deployments", "reject", second["id"], *args, key=org.api_key)
    assert code == 2 and "--reason" in err
    code, _, err = await invoke(
        "deployments", "reject", second["id"], "--reason", "bad\x00", *args, key=org.api_key
    )
    assert code == 1 and "HTTP 422" in err
    code, out, err = await invoke(
        "deployments", "reject", second["id"], "--reason", "not today", "-o", "json", *args,
        key=org.api_key,
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["approved"] is False

    # Roll staging back from 2.0.0: 1.0.0 again, live.
    code, out, err = await invoke(
        "deployments", "rollback", deployed[1]["id"], "--wait", "--timeout", "120", "--json",
        *args, key=owner,
    )  # fmt: skip
    assert code == 0, err
    rolled = json.loads(out)
    assert rolled["version"] == "1.0.0" and rolled["rollback_of_id"] == deployed[1]["id"]

    code, _, err = await invoke("deploy", str(staging), *args, key=owner)
    assert code == 2 and "--run, --commit or --version" in err
    code, _, err = await invoke("deployments", "list", *args, key=owner)
    assert code == 2 and "exactly one" in err
