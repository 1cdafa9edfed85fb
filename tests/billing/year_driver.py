"""Test-only stand-in for the monthly Schedule under time skipping (the Java test server has no
Schedules): sleep to each period end, then run that period's BillingWorkflow as a child."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from core.billing.periods import Period
    from workflows.billing import BillingWorkflow
    from workflows.billing_models import BillingInput, BillingResult, billing_workflow_id


class MonthsInput(BaseModel):
    organization_id: str
    first_period: str
    months: int


@workflow.defn
class MonthlyBillingDriver:
    @workflow.run
    async def run(self, params: MonthsInput) -> list[BillingResult]:
        period = Period.parse(params.first_period)
        results: list[BillingResult] = []
        for _ in range(params.months):
            wait = period.end + timedelta(minutes=5) - workflow.now()
            if wait > timedelta(0):
                await workflow.sleep(wait)
            results.append(
                await workflow.execute_child_workflow(
                    BillingWorkflow.run,
                    BillingInput(organization_id=params.organization_id, period=period.key),
                    id=billing_workflow_id(params.organization_id, period.key),
                )
            )
            period = period.next()
        return results
