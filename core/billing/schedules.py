"""The monthly billing Temporal Schedule, its fan-out, and starting one billing run.

One schedule for everyone, not one per subscription: every subscription is billed on calendar
months, so a single schedule (00:05 UTC on the 1st) closes them all. One schedule means one place to
pause, trigger or backfill in the Temporal UI (or via `trigger_billing_now`, `pause_billing`,
`backfill_billing` below), and no dual write between subscriptions and 10k schedules that would have
to be created, updated on plan change and deleted on cancellation. Per-organization control stays
available: each organization's run is its own workflow `billing-{org}-{period}`, which the API can
start on its own (`POST /v1/billing/invoices/run`). Backfills are harmless: workflow IDs with
ALLOW_DUPLICATE_FAILED_ONLY plus the unique (organization, period) invoice make a second run of a
period a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleBackfill,
    ScheduleCalendarSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleState,
    WorkflowHandle,
)
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from core.audit.system import SystemAction, record_system_actions
from core.billing import repository
from core.billing.executions import StartedRun, record_billing_executions
from core.billing.periods import Period
from forgeline.search_attributes import forgeline_search_attributes
from forgeline.settings import BILLING_TASK_QUEUE
from workflows.billing import BillingCycleWorkflow, BillingWorkflow
from workflows.billing_models import (
    BILLING_WORKFLOW_KIND,
    BillingCycleInput,
    BillingInput,
    StartBillingRunsRequest,
    StartBillingRunsResult,
    billing_workflow_id,
)

BILLING_SCHEDULE_ID = "forgeline-billing-monthly"
BILLING_CYCLE_WORKFLOW_ID = "billing-cycle"
START_CONCURRENCY = 16


def billing_schedule() -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            BillingCycleWorkflow.run,
            BillingCycleInput(),
            id=BILLING_CYCLE_WORKFLOW_ID,
            task_queue=BILLING_TASK_QUEUE,
            typed_search_attributes=forgeline_search_attributes("billing-cycle"),
        ),
        spec=ScheduleSpec(
            calendars=[
                ScheduleCalendarSpec(
                    day_of_month=[ScheduleRange(1)],
                    hour=[ScheduleRange(0)],
                    minute=[ScheduleRange(5)],
                    second=[ScheduleRange(0)],
                )
            ],
            time_zone_name="UTC",
        ),
        # Backfilled months run one after another; a cluster outage over the 1st still bills.
        policy=SchedulePolicy(
            overlap=ScheduleOverlapPolicy.BUFFER_ALL, catchup_window=timedelta(days=27)
        ),
        state=ScheduleState(note="Closes every subscription's calendar month (Forgeline billing)"),
    )


async def ensure_billing_schedules(
    client: Client, session_maker: async_sessionmaker[AsyncSession] | None = None
) -> list[str]:
    """Create the monthly billing schedule when missing (idempotent); returns the schedule IDs.

    `session_maker` is accepted for the stack's call signature; the single fan-out schedule needs
    no per-subscription state.
    """
    with contextlib.suppress(ScheduleAlreadyRunningError):
        await client.create_schedule(BILLING_SCHEDULE_ID, billing_schedule())
    return [BILLING_SCHEDULE_ID]


async def trigger_billing_now(client: Client) -> None:
    """Run the schedule's action now (it bills the month before today)."""
    await client.get_schedule_handle(BILLING_SCHEDULE_ID).trigger(
        overlap=ScheduleOverlapPolicy.ALLOW_ALL
    )


async def pause_billing(client: Client, *, paused: bool, note: str) -> None:
    handle = client.get_schedule_handle(BILLING_SCHEDULE_ID)
    if paused:
        await handle.pause(note=note)
    else:
        await handle.unpause(note=note)


async def backfill_billing(client: Client, *, start: datetime, end: datetime) -> None:
    """Replay the schedule's firings between start and end (already-billed months are no-ops)."""
    await client.get_schedule_handle(BILLING_SCHEDULE_ID).backfill(
        ScheduleBackfill(start_at=start, end_at=end, overlap=ScheduleOverlapPolicy.BUFFER_ALL)
    )


async def start_billing_workflow(
    client: Client, *, organization_id: uuid.UUID, period: Period, trigger: str
) -> tuple[str, str | None]:
    """Start `billing-{org}-{period}` (after the caller's commit); run ID None = already started."""
    workflow_id = billing_workflow_id(str(organization_id), period.key)
    try:
        handle: WorkflowHandle[BillingWorkflow, object] = await client.start_workflow(
            BillingWorkflow.run,
            BillingInput(organization_id=str(organization_id), period=period.key, trigger=trigger),
            id=workflow_id,
            task_queue=BILLING_TASK_QUEUE,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
            search_attributes=forgeline_search_attributes(
                BILLING_WORKFLOW_KIND, organization_id=organization_id
            ),
            memo={"period": period.key, "trigger": trigger},
        )
    except WorkflowAlreadyStartedError:
        return workflow_id, None
    return workflow_id, handle.result_run_id or handle.run_id


async def start_due_billing_runs(
    session_maker: async_sessionmaker[AsyncSession],
    temporal: Client,
    request: StartBillingRunsRequest,
    *,
    on_start: Callable[[str], None] = lambda _: None,
) -> StartBillingRunsResult:
    """One page of subscriptions due for `period` (keyset by organization), one start each;
    `on_start` is told each organization as its start is sent."""
    period = Period.parse(request.period)
    after = uuid.UUID(request.after_organization_id) if request.after_organization_id else None
    async with session_maker() as session:
        org_ids = await repository.due_organizations(
            session, period, after=after, limit=request.limit
        )
    semaphore = asyncio.Semaphore(START_CONCURRENCY)

    async def start(org_id: uuid.UUID) -> tuple[uuid.UUID, str, str | None]:
        async with semaphore:
            on_start(str(org_id))
            workflow_id, run_id = await start_billing_workflow(
                temporal, organization_id=org_id, period=period, trigger="schedule"
            )
            return org_id, workflow_id, run_id

    outcomes = await asyncio.gather(*(start(org_id) for org_id in org_ids))
    runs = [
        StartedRun(org_id, workflow_id, run_id)
        for org_id, workflow_id, run_id in outcomes
        if run_id is not None
    ]
    async with session_maker() as session:
        # The page's rows and its audit entries in one statement each: every started run's
        # invoice step waits on its row (an upsert on the same key) until this commits.
        await record_billing_executions(session, runs, period=period, trigger="schedule")
        await record_system_actions(
            session,
            [
                SystemAction(
                    organization_id=run.organization_id,
                    action="billing.run",
                    resource_type="billing_period",
                    new={
                        "period": period.key,
                        "workflow_id": run.workflow_id,
                        "trigger": "schedule",
                    },
                )
                for run in runs
            ],
        )
        await session.commit()
    started = sum(1 for _, _, run_id in outcomes if run_id is not None)
    return StartBillingRunsResult(
        started=started,
        already_started=len(outcomes) - started,
        last_organization_id=str(org_ids[-1]) if org_ids else None,
        done=len(org_ids) < request.limit,
    )
