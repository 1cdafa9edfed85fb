"""New organizations start on Free (sign-up, bootstrap); a manual run invoices the bootstrap
organization; members are limited by the plan (402, nothing written)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from core.accounts.bootstrap import ensure_bootstrap
from core.billing.periods import Period
from db.models.accounts import Notification, OrganizationInvitation, OrganizationMember, User
from db.models.billing import Invoice, Plan, Subscription
from db.models.operations import WorkflowExecution
from forgeline.settings import BILLING_TASK_QUEUE, Settings
from forgeline.statuses.billing import LIVE_SUBSCRIPTION_STATUSES
from tests.api.mailbox import latest_token
from tests.billing.conftest import billing_worker
from tests.factories import DEFAULT_PASSWORD, make_org


async def _live_subscriptions(session_maker, org_id: uuid.UUID) -> list[tuple[str, str]]:
    async with session_maker() as session:
        rows = await session.execute(
            select(Plan.slug, Subscription.status)
            .join(Plan, Plan.id == Subscription.plan_id)
            .where(
                Subscription.organization_id == org_id,
                Subscription.status.in_(LIVE_SUBSCRIPTION_STATUSES),
            )
        )
        return [(row.slug, row.status) for row in rows]


async def _signup(api_client) -> uuid.UUID:
    suffix = uuid.uuid4().hex[:8]
    response = await api_client.post(
        "/v1/auth/signup",
        json={
            "email": f"free-{suffix}@example.com",
            "password": "a long enough password",
            "name": "Free Person",
            "organization_name": f"Free {suffix}",
        },
    )
    assert response.status_code == 201, response.text
    return uuid.UUID(response.json()["organization"]["id"])


async def test_signup_without_plans_creates_no_subscription(api_client, session_maker):
    # Runs before this module seeds plans (the `plans` fixture is first requested below).
    async with session_maker() as session:
        seeded = await session.scalar(select(func.count()).select_from(Plan))
    assert not seeded, "plans are seeded here: a suite before this one did not clean up"
    org_id = await _signup(api_client)
    assert await _live_subscriptions(session_maker, org_id) == []


async def test_signup_starts_on_free_for_the_current_month(api_client, session_maker, plans):
    org_id = await _signup(api_client)
    assert await _live_subscriptions(session_maker, org_id) == [("free", "active")]
    async with session_maker() as session:
        query = select(Subscription).where(Subscription.organization_id == org_id)
        sub = (await session.scalars(query)).one()
    month = Period.containing(datetime.now(UTC))
    assert month.start <= sub.current_period_start <= datetime.now(UTC)
    assert sub.current_period_end == month.end


@pytest.fixture
def boot_settings(settings: Settings, tmp_path) -> Settings:
    return settings.model_copy(update={"data_dir": tmp_path})


async def test_bootstrap_org_is_on_free_and_a_manual_run_bills_only_ended_months(
    api_client, session_maker, temporal_client, plans, boot_settings
):
    slug = f"boot-{uuid.uuid4().hex[:8]}"
    email = f"{slug}@example.com"
    first = await ensure_bootstrap(session_maker, boot_settings, org_slug=slug, owner_email=email)
    again = await ensure_bootstrap(session_maker, boot_settings, org_slug=slug, owner_email=email)
    assert first.created and not again.created and again.org_id == first.org_id
    # Idempotent: one live Free subscription however often `make run` bootstraps.
    assert await _live_subscriptions(session_maker, first.org_id) == [("free", "active")]

    headers = {"Authorization": f"Bearer {first.api_key}"}
    this_month = Period.containing(datetime.now(UTC))
    async with billing_worker(temporal_client, BILLING_TASK_QUEUE, session_maker, None):
        # The current month is invoiced once it has ended, not before.
        early = await api_client.post(
            "/v1/billing/invoices/run", headers=headers, json={"period": this_month.key}
        )
        assert early.status_code == 409, early.text
        run = await api_client.post("/v1/billing/invoices/run", headers=headers, json={})
        assert run.status_code == 202, run.text
        await temporal_client.get_workflow_handle(run.json()["workflow_id"]).result()
    # By default the last ended month, which closed before the organization existed.
    assert run.json()["period"] == this_month.previous().key
    async with session_maker() as session:
        invoices = (
            await session.scalars(select(Invoice).where(Invoice.organization_id == first.org_id))
        ).all()
        execution = (
            await session.scalars(
                select(WorkflowExecution).where(
                    WorkflowExecution.workflow_id == run.json()["workflow_id"]
                )
            )
        ).one()
    assert invoices == [] and execution.status == "completed"
    # The period closed; the organization stays on Free for the next one.
    assert await _live_subscriptions(session_maker, first.org_id) == [("free", "active")]
    third = await ensure_bootstrap(session_maker, boot_settings, org_slug=slug, owner_email=email)
    assert third.api_key == first.api_key
    assert await _live_subscriptions(session_maker, first.org_id) == [("free", "active")]


async def _member_rows(session_maker, org_id: uuid.UUID) -> int:
    async with session_maker() as session:
        return int(
            await session.scalar(
                select(func.count()).where(OrganizationMember.organization_id == org_id)
            )
            or 0
        )


async def test_members_are_limited_by_the_plan(app, api_client, session_maker, plans):
    org = await make_org(session_maker)  # the owner: 1 of Free's 2 members
    second_email = f"second-{uuid.uuid4().hex[:8]}@example.com"
    invited = await api_client.post(
        "/v1/members/invitations",
        headers=org.headers,
        json={"email": second_email, "role": "member"},
    )
    assert invited.status_code == 201, invited.text
    # The invitee joins by setting a password through the mailed link.
    joined = await api_client.post(
        "/v1/auth/password-reset/confirm",
        json={"token": latest_token(app, second_email), "new_password": "second password"},
    )
    assert joined.status_code == 204, joined.text

    over_email = f"third-{uuid.uuid4().hex[:8]}@example.com"
    refused = await api_client.post(
        "/v1/members/invitations",
        headers=org.headers,
        json={"email": over_email, "role": "member"},
    )
    assert refused.status_code == 402, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    problem = refused.json()
    assert (problem["limit"], problem["plan"], problem["maximum"]) == ("team_members", "free", 2)
    assert "Free" in problem["detail"]

    # Adding an existing user is refused the same way.
    other = await make_org(session_maker)
    added = await api_client.post(
        "/v1/members", headers=org.headers, json={"email": other.email, "role": "viewer"}
    )
    assert added.status_code == 402, added.text
    assert added.json()["limit"] == "team_members"

    # Nothing written: no user for the refused invitation, no membership, no notification.
    assert await _member_rows(session_maker, org.org_id) == 2
    async with session_maker() as session:
        assert await session.scalar(select(User.id).where(User.email == over_email)) is None
        assert (
            await session.scalar(
                select(func.count()).where(
                    Notification.user_id == other.user_id,
                    Notification.organization_id == org.org_id,
                )
            )
            == 0
        )

    # On a plan with room, the same request succeeds.
    async with session_maker() as session, session.begin():
        session.add(
            Subscription(
                organization_id=org.org_id,
                plan_id=plans["pro"].id,
                status="active",
                current_period_start=datetime.now(UTC),
                current_period_end=Period.containing(datetime.now(UTC)).end,
            )
        )
    added = await api_client.post(
        "/v1/members", headers=org.headers, json={"email": other.email, "role": "viewer"}
    )
    assert added.status_code == 202, added.text
    assert await _member_rows(session_maker, org.org_id) == 2  # until they accept
    login = await api_client.post(
        "/v1/auth/login", json={"email": other.email, "password": DEFAULT_PASSWORD}
    )
    assert login.status_code == 200, login.text
    accepted = await api_client.post(
        f"/v1/me/invitations/{added.json()['id']}/accept",
        headers={"Authorization": f"Bearer {login.json()['token']}"},
    )
    assert accepted.status_code == 200, accepted.text
    assert await _member_rows(session_maker, org.org_id) == 3


async def test_an_accept_over_the_plan_is_refused_and_the_invitation_stays(
    api_client, session_maker, plans
):
    """Invitations are offered while there is room; the plan is checked again when one is
    accepted. A refused accept (402 after the invitation row was answered) rolls back whole:
    the invitation is still pending, and it can be accepted once the plan has room."""
    org = await make_org(session_maker)  # the owner: 1 of Free's 2 members
    first, second = await make_org(session_maker), await make_org(session_maker)
    offers = []
    for person in (first, second):
        offered = await api_client.post(
            "/v1/members", headers=org.headers, json={"email": person.email, "role": "member"}
        )
        assert offered.status_code == 202, offered.text
        offers.append(offered.json()["id"])

    async def accept(person: Any, invitation_id: str) -> Any:
        login = await api_client.post(
            "/v1/auth/login", json={"email": person.email, "password": DEFAULT_PASSWORD}
        )
        assert login.status_code == 200, login.text
        return await api_client.post(
            f"/v1/me/invitations/{invitation_id}/accept",
            headers={"Authorization": f"Bearer {login.json()['token']}"},
        )

    assert (await accept(first, offers[0])).status_code == 200
    refused = await accept(second, offers[1])
    assert refused.status_code == 402, refused.text
    assert refused.json()["limit"] == "team_members"
    assert await _member_rows(session_maker, org.org_id) == 2
    async with session_maker() as session:
        status = await session.scalar(
            select(OrganizationInvitation.status).where(
                OrganizationInvitation.id == uuid.UUID(offers[1])
            )
        )
    assert status == "pending"

    async with session_maker() as session, session.begin():
        session.add(
            Subscription(
                organization_id=org.org_id,
                plan_id=plans["pro"].id,
                status="active",
                current_period_start=datetime.now(UTC),
                current_period_end=Period.containing(datetime.now(UTC)).end,
            )
        )
    assert (await accept(second, offers[1])).status_code == 200
    assert await _member_rows(session_maker, org.org_id) == 3
