"""Billing integrity of plan changes and periods on real Postgres and Temporal: every plan of a
period is charged for its time (a downgrade before the close removes nothing), a period is
invoiced only once it has ended, periods are real months in range everywhere, and concurrent
plan changes and invoice runs leave one consistent history and one invoice."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select, update
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.billing.invoicing import BillingActivities
from core.billing.periods import Period
from core.billing.pricing import round_cents, share_of_period
from db.models.billing import Invoice, Subscription, SubscriptionPlanChange
from db.models.operations import WorkflowExecution
from forgeline.settings import BILLING_TASK_QUEUE
from tests.billing.conftest import billing_worker, subscribe
from workflows.billing import BillingWorkflow
from workflows.billing_models import BillingInput, InvoiceRequest, billing_workflow_id
from workflows.contracts.billing import PERIOD_NOT_ENDED

NOW = datetime.now(UTC)
THIS_MONTH = Period.containing(NOW)
LAST_MONTH = THIS_MONTH.previous()
PRICES = {"free": Decimal(0), "starter": Decimal(19), "pro": Decimal(49)}


async def _change(api_client, headers, plan: str) -> None:
    response = await api_client.patch(
        "/v1/billing/subscription", headers=headers, json={"plan": plan}
    )
    assert response.status_code == 200, response.text
    assert response.json()["plan"] == plan


async def _move_changes_to(session_maker, org_id, times: list[datetime]) -> None:
    """The changes just made through the API, dated as if made at `times` (in order)."""
    async with session_maker() as session:
        ids = (
            await session.scalars(
                select(SubscriptionPlanChange.id)
                .where(SubscriptionPlanChange.organization_id == org_id)
                .order_by(SubscriptionPlanChange.seq)
            )
        ).all()
        assert len(ids) == len(times)
        for change_id, at in zip(ids, times, strict=True):
            await session.execute(
                update(SubscriptionPlanChange)
                .where(SubscriptionPlanChange.id == change_id)
                .values(changed_at=at)
            )
        await session.commit()


async def _bill(api_client, temporal_client, headers, period: Period) -> dict[str, Any]:
    run = await api_client.post(
        "/v1/billing/invoices/run", headers=headers, json={"period": period.key}
    )
    assert run.status_code == 202, run.text
    await temporal_client.get_workflow_handle(run.json()["workflow_id"]).result()
    listed = (await api_client.get("/v1/billing/invoices", headers=headers)).json()["items"]
    (invoice,) = [i for i in listed if i["period"] == period.key]
    detail = await api_client.get(f"/v1/billing/invoices/{invoice['id']}", headers=headers)
    return dict(detail.json())


async def test_a_downgrade_before_the_close_still_charges_the_month_on_pro(
    api_client, session_maker, temporal_client, plans
):
    """Free -> Pro on day 1, back to Free an hour before the month closed: the invoice charges
    Pro for the time in between (it was 0.00: the downgrade cancelled the pending upgrade)."""
    sub = await subscribe(session_maker, plans, plan="free", started=LAST_MONTH.start)
    h = sub.org.headers
    await _change(api_client, h, "pro")
    await _change(api_client, h, "free")
    upgraded = LAST_MONTH.start + timedelta(days=1)
    downgraded = LAST_MONTH.end - timedelta(hours=1)
    await _move_changes_to(session_maker, sub.org_id, [upgraded, downgraded])
    async with billing_worker(temporal_client, BILLING_TASK_QUEUE, session_maker, None):
        invoice = await _bill(api_client, temporal_client, h, LAST_MONTH)
    pro_fee = round_cents(PRICES["pro"] * share_of_period(LAST_MONTH, upgraded, downgraded))
    assert Decimal(invoice["total"]) == pro_fee > Decimal("40")
    assert [line["amount"] for line in invoice["line_items"]] == ["0.00", str(pro_fee), "0.00"]


async def test_every_change_of_the_period_is_charged_for_its_time(
    api_client, session_maker, temporal_client, plans
):
    """Free -> Starter -> Pro -> Starter -> Free in one month (hostile: four changes, two of
    them a minute apart): each plan is charged for its own time, not only the last change."""
    sub = await subscribe(session_maker, plans, plan="free", started=LAST_MONTH.start)
    h = sub.org.headers
    path = ["starter", "pro", "starter", "free"]
    for plan in path:
        await _change(api_client, h, plan)
    times = [
        LAST_MONTH.start + timedelta(days=3),
        LAST_MONTH.start + timedelta(days=10, hours=7),
        LAST_MONTH.start + timedelta(days=10, hours=7, minutes=1),
        LAST_MONTH.start + timedelta(days=20),
    ]
    await _move_changes_to(session_maker, sub.org_id, times)
    async with billing_worker(temporal_client, BILLING_TASK_QUEUE, session_maker, None):
        invoice = await _bill(api_client, temporal_client, h, LAST_MONTH)
    bounds = [LAST_MONTH.start, *times, LAST_MONTH.end]
    plans_in_order = ["free", *path]
    expected = [
        round_cents(PRICES[plan] * share_of_period(LAST_MONTH, bounds[i], bounds[i + 1]))
        for i, plan in enumerate(plans_in_order)
    ]
    assert [Decimal(line["amount"]) for line in invoice["line_items"]] == expected
    assert Decimal(invoice["total"]) == sum(expected)
    assert [line["description"].split(" plan")[0] for line in invoice["line_items"]] == [
        "Free",
        "Starter",
        "Pro",
        "Starter",
        "Free",
    ]


async def test_the_current_month_cannot_be_closed_early(
    api_client, session_maker, temporal_client, task_queue, plans
):
    sub = await subscribe(session_maker, plans, plan="pro", started=LAST_MONTH.start)
    h = sub.org.headers
    refused = await api_client.post(
        "/v1/billing/invoices/run", headers=h, json={"period": THIS_MONTH.key}
    )
    assert refused.status_code == 409, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    problem = refused.json()
    assert problem["type"].endswith("/period-not-ended") and THIS_MONTH.key in problem["detail"]
    assert problem["ends_at"] == THIS_MONTH.end.isoformat()
    # The workflow refuses it too (a schedule backfill or an operator starting it by hand):
    # it fails for good, writes no invoice, and can be started again once the month is over.
    async with billing_worker(temporal_client, task_queue, session_maker, None):
        handle = await temporal_client.start_workflow(
            BillingWorkflow.run,
            BillingInput(organization_id=str(sub.org_id), period=THIS_MONTH.key),
            id=billing_workflow_id(str(sub.org_id), THIS_MONTH.key),
            task_queue=task_queue,
        )
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    cause = failure.value.cause.cause  # type: ignore[attr-defined]
    assert isinstance(cause, ApplicationError) and cause.type == PERIOD_NOT_ENDED
    async with session_maker() as session:
        invoices = await session.scalar(
            select(func.count()).select_from(Invoice).where(Invoice.organization_id == sub.org_id)
        )
        execution = (
            await session.scalars(
                select(WorkflowExecution).where(WorkflowExecution.workflow_id == handle.id)
            )
        ).one()
        subscription = await session.get_one(Subscription, sub.subscription_id)
    assert invoices == 0 and execution.status == "failed"
    assert subscription.current_period_start == LAST_MONTH.start  # nothing advanced


BAD_PERIODS = [
    "0000-01",
    "0001-01",
    "1999-12",
    "2101-01",
    "9999-12",
    "2026-00",
    "2026-13",
    "2026-1",
    "2026--1",
    "\uff12\uff10\uff12\uff16-01",  # full-width digits
    "2026-01\n",
    "x" * 5000,
]


@pytest.mark.parametrize("bad", BAD_PERIODS)
def test_periods_are_real_months_in_range(bad: str) -> None:
    with pytest.raises(ValueError, match="period"):
        Period.parse(bad)


async def test_bad_periods_are_a_422_with_a_message_everywhere(
    api_client, session_maker, temporal_client, task_queue, plans
):
    sub = await subscribe(session_maker, plans, plan="starter", started=LAST_MONTH.start)
    h = sub.org.headers
    for bad in BAD_PERIODS:
        usage = await api_client.get("/v1/billing/usage", headers=h, params={"period": bad})
        assert usage.status_code == 422, (bad, usage.text)
        assert usage.headers["content-type"].startswith("application/problem+json")
        run = await api_client.post("/v1/billing/invoices/run", headers=h, json={"period": bad})
        assert run.status_code == 422, (bad, run.text)
    message = (
        await api_client.get("/v1/billing/usage", headers=h, params={"period": "0001-01"})
    ).text
    assert "2000-01 to 2100-12" in message
    for good in ("2000-01", "2100-12", LAST_MONTH.key):
        ok = await api_client.get("/v1/billing/usage", headers=h, params={"period": good})
        assert ok.status_code == 200, ok.text
    # A workflow started with a bad period (by hand, around the API) fails at once, for good.
    async with billing_worker(temporal_client, task_queue, session_maker, None):
        for bad in ("0001-01", "9999-12"):
            handle = await temporal_client.start_workflow(
                BillingWorkflow.run,
                BillingInput(organization_id=str(sub.org_id), period=bad),
                id=f"billing-{sub.org_id}-bad-{uuid.uuid4().hex[:6]}",
                task_queue=task_queue,
            )
            with pytest.raises(WorkflowFailureError) as failure:
                await handle.result()
            cause = failure.value.cause.cause  # type: ignore[attr-defined]
            assert isinstance(cause, ApplicationError) and cause.type == "ValueError"
            assert "out of range" in cause.message
    async with session_maker() as session:
        count = await session.scalar(
            select(func.count()).select_from(Invoice).where(Invoice.organization_id == sub.org_id)
        )
    assert count == 0


async def test_concurrent_plan_changes_form_one_history(
    api_client, session_maker, temporal_client, plans
):
    """Five admins change the plan at the same moment: every change is applied and recorded,
    one after the other, each from the plan the previous one left; the last is the plan."""
    sub = await subscribe(session_maker, plans, plan="free", started=LAST_MONTH.start)
    h = sub.org.headers
    targets = ["pro", "starter", "pro", "free", "starter"]
    responses = await asyncio.gather(
        *(
            api_client.patch("/v1/billing/subscription", headers=h, json={"plan": plan})
            for plan in targets
        )
    )
    assert [r.status_code for r in responses] == [200] * len(targets)
    async with session_maker() as session:
        changes = (
            await session.scalars(
                select(SubscriptionPlanChange)
                .where(SubscriptionPlanChange.organization_id == sub.org_id)
                .order_by(SubscriptionPlanChange.seq)
            )
        ).all()
        subscription = await session.get_one(Subscription, sub.subscription_id)
    assert changes, "no change recorded"
    assert changes[0].from_plan_id == plans["free"].id
    for before, after in itertools.pairwise(changes):
        assert after.from_plan_id == before.to_plan_id and after.changed_at >= before.changed_at
    assert changes[-1].to_plan_id == subscription.plan_id


async def test_concurrent_invoice_runs_of_one_period_make_one_invoice(
    api_client, session_maker, temporal_client, plans
):
    sub = await subscribe(session_maker, plans, plan="free", started=LAST_MONTH.start)
    h = sub.org.headers
    await _change(api_client, h, "pro")
    await _move_changes_to(session_maker, sub.org_id, [LAST_MONTH.start + timedelta(days=5)])
    # Two activity attempts at once (a retried attempt overlapping a slow one) ...
    activities = BillingActivities(session_maker, None)
    request = InvoiceRequest(organization_id=str(sub.org_id), period=LAST_MONTH.key)
    env = ActivityEnvironment()
    first, second = await asyncio.gather(
        env.run(activities.create_invoice, request), env.run(activities.create_invoice, request)
    )
    assert first.invoice_id == second.invoice_id and {first.created, second.created} == {
        True,
        False,
    }
    # ... and two API runs at once: one workflow, still that one invoice.
    async with billing_worker(temporal_client, BILLING_TASK_QUEUE, session_maker, None):
        runs = await asyncio.gather(
            *(
                api_client.post(
                    "/v1/billing/invoices/run", headers=h, json={"period": LAST_MONTH.key}
                )
                for _ in range(2)
            )
        )
        assert [r.status_code for r in runs] == [202, 202]
        assert sorted(r.json()["started"] for r in runs) == [False, True]
        await temporal_client.get_workflow_handle(runs[0].json()["workflow_id"]).result()
    async with session_maker() as session:
        invoices = (
            await session.scalars(select(Invoice).where(Invoice.organization_id == sub.org_id))
        ).all()
    assert [str(i.id) for i in invoices] == [first.invoice_id]
    fee = round_cents(
        PRICES["pro"]
        * share_of_period(LAST_MONTH, LAST_MONTH.start + timedelta(days=5), LAST_MONTH.end)
    )
    assert invoices[0].total == fee


def test_the_cli_refuses_bad_periods_before_calling_the_api() -> None:
    from typer.testing import CliRunner

    from forgeline.cli import app

    for command in ("usage", "close"):
        for bad in ("0001-01", "2026-13", "9999-12", "2026-1"):
            result = CliRunner().invoke(app, ["billing", command, "--period", bad])
            assert result.exit_code == 2, (command, bad, result.output)
            assert "period" in result.output
    helped = CliRunner().invoke(app, ["billing", "close", "--help"])
    assert helped.exit_code == 0 and "not ended" in helped.output
