"""Kill the worker (SIGKILL) after Stripe committed the charge but before the payment is
recorded: the retried attempt on a new worker replays the charge; one charge, one payment."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from datetime import UTC, datetime

from sqlalchemy import select

from activities.billing.pricing import Period
from db.models.billing import Invoice, Payment
from tests.billing.conftest import subscribe
from workflows.billing import BillingWorkflow
from workflows.billing_models import BillingInput, billing_workflow_id

LAST_MONTH = Period.containing(datetime.now(UTC)).previous()


async def _start_worker(task_queue: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.billing.worker_process",
        task_queue,
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    assert line.strip() == b"ready"
    return proc


async def test_sigkill_between_charge_and_record_payment(
    temporal_client,
    temporal_address,
    database_url,
    task_queue,
    session_maker,
    plans,
    fake_stripe,
    stripe_billing,
):
    sub = await subscribe(
        session_maker, plans, plan="starter", started=LAST_MONTH.start, stripe=stripe_billing
    )
    committed, release = asyncio.Event(), asyncio.Event()

    async def hold_pay_response(method: str, path: str) -> None:
        if path.endswith("/pay") and not committed.is_set():
            committed.set()
            await release.wait()  # the worker dies while waiting for this response

    fake_stripe.after_commit = hold_pay_response
    env = {
        **os.environ,
        "FORGELINE_ENVIRONMENT": "development",
        "DATABASE_URL": database_url,
        "TEMPORAL_ADDRESS": temporal_address,
        "STRIPE_API_KEY": "sk_test_fake",
        "STRIPE_API_BASE": fake_stripe.url,
        "FORGELINE_STRIPE_TIMEOUT_SECONDS": "30",
    }
    first = await _start_worker(task_queue, env)
    second = None
    try:
        handle = await temporal_client.start_workflow(
            BillingWorkflow.run,
            BillingInput(organization_id=str(sub.org_id), period=LAST_MONTH.key),
            id=billing_workflow_id(str(sub.org_id), LAST_MONTH.key),
            task_queue=task_queue,
        )
        await asyncio.wait_for(committed.wait(), 60)
        first.send_signal(signal.SIGKILL)
        await first.wait()
        release.set()
        assert len(fake_stripe.successful_charges()) == 1
        second = await _start_worker(task_queue, env)
        result = await asyncio.wait_for(handle.result(), 90)
    finally:
        for proc in (first, second):
            if proc is not None and proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                await proc.wait()
    assert result.status == "paid" and result.total == "19.00"
    assert len(fake_stripe.successful_charges()) == 1
    async with session_maker() as session:
        payments = (
            await session.scalars(select(Payment).where(Payment.organization_id == sub.org_id))
        ).all()
        invoice = (
            await session.scalars(select(Invoice).where(Invoice.organization_id == sub.org_id))
        ).one()
    assert [(p.status, str(p.amount)) for p in payments] == [("succeeded", "19.00")]
    assert invoice.status == "paid"
