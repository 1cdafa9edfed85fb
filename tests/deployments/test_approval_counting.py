"""`required_approvals` counts distinct approvers: a repeated approval counts once, concurrent ones
of different people all count, protection changes need the approving role and never move a
deployment already waiting, and a decision with no worker waits bounded."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import select

from core.deployments import approvals
from db.models.deployments import DeploymentApproval
from tests.deployments.helpers import (
    add_member,
    another_key,
    make_activities,
    protected_environment,
    request_deployment,
    running_worker,
    stop,
    wait_status,
)
from tests.factories import make_org


async def test_required_approvals_count_distinct_people_and_the_rules_stay(
    api_client, settings, session_maker, temporal_client, task_queue, tmp_path: Path
) -> None:
    org = await make_org(session_maker, role="member")  # the key is a member's
    env_id = await protected_environment(session_maker, org.org_id, 3)
    admins = [await add_member(session_maker, org.org_id, "admin") for _ in range(3)]
    viewer_id, viewer = await add_member(session_maker, org.org_id, "viewer")
    activities = make_activities(settings, session_maker, temporal_client, None)
    async with running_worker(temporal_client, task_queue, activities):
        dep = await request_deployment(
            session_maker, temporal_client, org.org_id, env_id, task_queue, user_id=org.user_id
        )
    try:
        url = f"/v1/deployments/{dep}/approve"
        # Hostile reasons: a clear 422, nothing recorded, the deployment still waits.
        for reason in ("ok\x00", "bell\x07", "\x1b[31mred", "   "):
            r = await api_client.post(url, json={"reason": reason}, headers=admins[0][1])
            assert r.status_code == 422, (reason, r.text)
        # The member who requested it and a viewer cannot approve.
        r = await api_client.post(url, json={"reason": "x"}, headers=org.headers)
        assert r.status_code == 403, r.text
        r = await api_client.post(url, json={"reason": "x"}, headers=viewer)
        assert r.status_code == 403, r.text

        # A member switching protection off (or lowering the count) is refused.
        for patch in ({"is_protected": False}, {"required_approvals": 1}):
            r = await api_client.patch(
                f"/v1/environments/{env_id}", json=patch, headers=org.headers
            )
            assert r.status_code == 403, r.text

        async with running_worker(temporal_client, task_queue, activities):
            # The same admin twice at once: counted once.
            same = await asyncio.gather(
                *(
                    api_client.post(url, json={"reason": "lgtm"}, headers=admins[0][1])
                    for _ in range(2)
                )
            )
            assert [r.status_code for r in same] == [200, 200], [r.text for r in same]
            detail = (await api_client.get(f"/v1/deployments/{dep}", headers=org.headers)).json()
            assert detail["status"] == "awaiting_approval"
            approvals = detail["approvals"]
            assert approvals["required"] == 3 and approvals["approved"] == 1
            assert approvals["missing"] == 2
            assert [d["user_id"] for d in approvals["decisions"]] == [str(admins[0][0])]
            assert set(approvals["eligible_user_ids"]) == {
                str(admins[1][0]),
                str(admins[2][0]),
                str(org.owner_user_id),
            }
            assert str(viewer_id) not in approvals["eligible_user_ids"]
            assert str(org.user_id) not in approvals["eligible_user_ids"]

        # The worker goes away mid-approval; an admin lowers the bar meanwhile.
        r = await api_client.patch(
            f"/v1/environments/{env_id}", json={"required_approvals": 1}, headers=admins[1][1]
        )
        assert r.status_code == 200, r.text

        async with running_worker(temporal_client, task_queue, activities):
            # The deployment keeps the rules it was requested under: one more is not enough...
            r = await api_client.post(url, json={"reason": "two"}, headers=admins[1][1])
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "awaiting_approval"
            assert r.json()["required_approvals"] == 3
            row = await wait_status(session_maker, dep, ("awaiting_approval",))
            assert row.required_approvals == 3
            # ... and two people approving at once both count: 4 of 3, both recorded.
            both = await asyncio.gather(
                api_client.post(url, json={"reason": "three"}, headers=admins[2][1]),
                api_client.post(
                    url,
                    json={"reason": "four"},
                    headers=await another_key(session_maker, org.org_id, org.owner_user_id),
                ),
            )
            assert [r.status_code for r in both] == [200, 200], [r.text for r in both]
            await wait_status(
                session_maker,
                dep,
                ("queued", "deploying", "verifying", "active", "failed", "rolled_back"),
            )
        async with session_maker() as session:
            people = (
                await session.scalars(
                    select(DeploymentApproval.user_id).where(
                        DeploymentApproval.deployment_id == dep
                    )
                )
            ).all()
        assert sorted(map(str, people)) == sorted(
            [*(str(a[0]) for a in admins), str(org.owner_user_id)]
        )
        # Too late to decide now.
        r = await api_client.post(url, json={"reason": "late"}, headers=admins[0][1])
        assert r.status_code == 409, r.text
    finally:
        await stop(temporal_client, dep)


async def test_a_decision_waits_bounded_and_a_retry_counts_once(
    api_client, settings, session_maker, temporal_client, task_queue, monkeypatch
) -> None:
    """No worker to record it: the request answers 503 with Retry-After instead of hanging; the
    same request sent again once a worker is back is the same decision (counted once)."""
    monkeypatch.setattr(approvals, "DECISION_WAIT_SECONDS", 1.0)
    org = await make_org(session_maker)
    env_id = await protected_environment(session_maker, org.org_id, 2)
    admin_id, admin = await add_member(session_maker, org.org_id, "admin")
    activities = make_activities(settings, session_maker, temporal_client, None)
    async with running_worker(temporal_client, task_queue, activities):
        dep = await request_deployment(
            session_maker, temporal_client, org.org_id, env_id, task_queue, user_id=org.user_id
        )
    try:
        url = f"/v1/deployments/{dep}/approve"
        r = await api_client.post(url, json={"reason": "first try"}, headers=admin)
        assert r.status_code == 503, r.text
        assert r.headers.get("retry-after"), r.headers
        async with running_worker(temporal_client, task_queue, activities):
            r = await api_client.post(url, json={"reason": "first try"}, headers=admin)
            assert r.status_code == 200, r.text
            assert r.json()["approved_by"] == [str(admin_id)]
            assert r.json()["status"] == "awaiting_approval"
            detail = (await api_client.get(f"/v1/deployments/{dep}", headers=org.headers)).json()
            assert detail["approvals"]["approved"] == 1 and detail["approvals"]["missing"] == 1
    finally:
        await stop(temporal_client, dep)
