"""A billing worker in its own process, configured from the environment (for the SIGKILL test)."""

from __future__ import annotations

import asyncio
import sys

from temporalio.worker import Worker

from activities.billing.invoicing import BillingActivities
from db.session import create_engine, create_session_maker
from forgeline.settings import Settings
from forgeline.temporal_client import connect_temporal, workflow_runner
from infra.stripe_billing import StripeBilling
from workflows.billing import BillingWorkflow


async def main(task_queue: str) -> None:
    settings = Settings()
    client = await connect_temporal(settings)
    session_maker = create_session_maker(create_engine(settings))
    billing = BillingActivities(session_maker, StripeBilling.from_settings(settings))
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=[BillingWorkflow],
        activities=[
            billing.create_invoice,
            billing.push_invoice_to_stripe,
            billing.charge_invoice,
            billing.record_payment,
            billing.end_subscription_for_nonpayment,
            billing.close_failed_execution,
        ],
        workflow_runner=workflow_runner(),
    )
    print("ready", flush=True)
    await worker.run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
