"""GET /v1/audit-logs: admins read their organization's trail, filtered and keyset paginated."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.factories import make_org


async def test_audit_log_listing(api_client, session_maker) -> None:
    org = await make_org(session_maker)
    ids = []
    for i in range(4):
        r = await api_client.post(
            "/v1/projects",
            json={"name": f"Audited {i}", "project_type": "spa"},
            headers=org.headers,
        )
        ids.append(r.json()["id"])
    await api_client.patch(f"/v1/projects/{ids[0]}", json={"name": "Renamed"}, headers=org.headers)

    r = await api_client.get("/v1/audit-logs", headers=org.headers)
    assert r.status_code == 200, r.text
    entries = [e for e in r.json()["items"] if e["resource_type"] == "project"]
    assert [e["action"] for e in entries][:1] == ["project.updated"]
    assert entries[0]["changed_fields"] == ["name"]
    assert entries[0]["actor_api_key_id"] == str(org.api_key_id)
    assert entries[0]["request_id"]

    created = (
        await api_client.get("/v1/audit-logs?action=project.created&limit=3", headers=org.headers)
    ).json()
    assert len(created["items"]) == 3 and created["next_cursor"]
    rest = (
        await api_client.get(
            "/v1/audit-logs",
            params={"action": "project.created", "cursor": created["next_cursor"]},
            headers=org.headers,
        )
    ).json()
    assert len(rest["items"]) == 1 and rest["next_cursor"] is None
    seen = [e["resource_id"] for e in created["items"] + rest["items"]]
    assert sorted(seen) == sorted(ids)

    by_resource = (
        await api_client.get(f"/v1/audit-logs?resource_id={ids[0]}", headers=org.headers)
    ).json()
    assert {e["action"] for e in by_resource["items"]} == {"project.created", "project.updated"}
    by_actor = (
        await api_client.get(f"/v1/audit-logs?actor={org.api_key_id}", headers=org.headers)
    ).json()
    assert len(by_actor["items"]) >= 5
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    later = (
        await api_client.get("/v1/audit-logs", params={"since": future}, headers=org.headers)
    ).json()
    assert later["items"] == []
    assert (
        await api_client.get("/v1/audit-logs?resource_type=project", headers=org.headers)
    ).status_code == 200

    # Another organization sees none of it.
    other = await make_org(session_maker)
    theirs = (await api_client.get("/v1/audit-logs", headers=other.headers)).json()
    assert all(e["resource_id"] not in ids for e in theirs["items"])


async def test_audit_logs_need_admin(api_client, session_maker) -> None:
    member_key = await make_org(session_maker, scopes=["projects:read", "projects:write"])
    assert (await api_client.get("/v1/audit-logs", headers=member_key.headers)).status_code == 403
    member = await make_org(session_maker, role="member")
    assert (await api_client.get("/v1/audit-logs", headers=member.headers)).status_code == 403
    assert (await api_client.get("/v1/audit-logs")).status_code == 401
