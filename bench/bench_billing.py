"""Billing at scale: invoices for 10k organizations over 1M usage records (COPY-loaded), the
roll-up query's plan, metering insert throughput, and the scheduled fan-out through Temporal.

Run alone: `uv run python -m bench.run --only billing --skip-baseline`.
Sizes: FORGELINE_BENCH_BILLING_ORGS (10000), ..._RECORDS_PER_ORG (100), ..._FANOUT_ORGS (300).
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
from sqlalchemy import text
from temporalio.worker import Worker

from activities.billing.invoicing import BillingActivities
from activities.billing.schedules import BillingScheduleActivities
from bench.context import BenchContext, BenchRow
from core.billing.metering import record_usage, record_usage_batch
from core.billing.periods import Period
from core.billing.repository import ROLL_UP_SQL
from db.seed import seed_reference_data
from db.session import create_session_maker, session_scope
from forgeline.settings import BILLING_TASK_QUEUE
from forgeline.temporal_client import workflow_runner
from workflows.billing import BillingCycleWorkflow, BillingWorkflow
from workflows.billing_models import BillingCycleInput, BillingCycleResult, InvoiceRequest

ORGS = int(os.environ.get("FORGELINE_BENCH_BILLING_ORGS", "10000"))
RECORDS_PER_ORG = int(os.environ.get("FORGELINE_BENCH_BILLING_RECORDS_PER_ORG", "100"))
FANOUT_ORGS = int(os.environ.get("FORGELINE_BENCH_BILLING_FANOUT_ORGS", "300"))
CONCURRENCY = 8
TYPES = ("build_minutes", "agent_tokens", "api_requests", "bandwidth_gb", "deployment")
UNITS = {
    "build_minutes": "min",
    "agent_tokens": "tokens",
    "api_requests": "requests",
    "bandwidth_gb": "GB",
    "deployment": "deployments",
}


def log(message: str) -> None:
    print(f"  billing: {message}", file=sys.stderr, flush=True)


async def _load(
    conn: asyncpg.Connection, orgs: int, period: Period, plan_ids: list[uuid.UUID], tag: str
) -> list[uuid.UUID]:
    """`orgs` organizations, each with a subscription and RECORDS_PER_ORG usage records (COPY)."""
    org_ids = [uuid.uuid4() for _ in range(orgs)]
    await conn.copy_records_to_table(
        "organizations",
        records=[(oid, f"Bench {tag} {i}", f"bench-{tag}-{i}") for i, oid in enumerate(org_ids)],
        columns=["id", "name", "slug"],
    )
    await conn.copy_records_to_table(
        "subscriptions",
        records=[
            (uuid.uuid4(), oid, plan_ids[i % len(plan_ids)], "active", period.start, period.end)
            for i, oid in enumerate(org_ids)
        ],
        columns=[
            "id",
            "organization_id",
            "plan_id",
            "status",
            "current_period_start",
            "current_period_end",
        ],
    )
    rng = random.Random(42)
    batch: list[tuple[object, ...]] = []
    columns = [
        "id",
        "organization_id",
        "usage_type",
        "quantity",
        "unit",
        "recorded_at",
        "period",
        "idempotency_key",
    ]
    for oid in org_ids:
        for j in range(RECORDS_PER_ORG):
            kind = TYPES[j % len(TYPES)]
            batch.append(
                (
                    uuid.uuid4(),
                    oid,
                    kind,
                    Decimal(rng.randint(1, 60 if kind == "build_minutes" else 20_000)),
                    UNITS[kind],
                    period.start + timedelta(minutes=rng.randint(0, period.days * 1440 - 1)),
                    period.key,
                    f"bench-{oid}-{j}",
                )
            )
        if len(batch) >= 100_000:
            await conn.copy_records_to_table("usage_records", records=batch, columns=columns)
            batch.clear()
    if batch:
        await conn.copy_records_to_table("usage_records", records=batch, columns=columns)
    return org_ids


async def run(ctx: BenchContext) -> list[BenchRow]:
    from db.session import create_engine, driver_dsn
    from forgeline.settings import Settings

    url = await ctx.database_url()
    settings = Settings(database_url=url, db_pool_size=CONCURRENCY + 4, db_max_overflow=8)
    engine = create_engine(settings)
    session_maker = create_session_maker(engine)
    conn = await asyncpg.connect(driver_dsn(url))
    rows: list[BenchRow] = []
    try:
        async with session_scope(session_maker) as session:
            await seed_reference_data(session)
        plan_ids = [
            r["id"]
            for r in await conn.fetch(
                "SELECT id FROM plans WHERE slug IN ('starter', 'pro') ORDER BY slug"
            )
        ]
        period = Period.containing(datetime.now(UTC)).previous()

        # ---- load: 10k orgs x 100 records via COPY
        started = time.perf_counter()
        org_ids = await _load(conn, ORGS, period, plan_ids, "a")
        await conn.execute("ANALYZE usage_records; ANALYZE subscriptions; ANALYZE invoices")
        load_s = time.perf_counter() - started
        total_records = ORGS * RECORDS_PER_ORG
        log(f"loaded {ORGS} orgs / {total_records} usage records in {load_s:.1f}s")
        rows.append(
            BenchRow(
                "billing load (COPY)",
                "usage records/s",
                total_records / load_s,
                unit="rec/s",
                note=f"{ORGS} orgs, {total_records} records, incl. orgs + subscriptions",
            )
        )

        # ---- EXPLAIN ANALYZE of the roll-up for one organization (rolled back)
        async with engine.connect() as connection:
            transaction = await connection.begin()
            plan_lines = (
                await connection.execute(
                    text("EXPLAIN (ANALYZE, BUFFERS) " + str(ROLL_UP_SQL.text)),
                    {"invoice_id": None, "organization_id": org_ids[0], "period": period.key},
                )
            ).all()
            await transaction.rollback()
        print("\nroll-up query plan (one organization, 100 records of 1M):", file=sys.stderr)
        for line in plan_lines:
            print("  " + line[0], file=sys.stderr)

        # ---- metering throughput: record_usage one statement per record, one transaction
        meter_org = org_ids[0]

        async def meter_one_by_one() -> float:
            """Seconds to record 1,000 requests one statement each (the same keys every time)."""
            started = time.perf_counter()
            async with session_scope(session_maker) as session:
                for i in range(1000):
                    await record_usage(
                        session,
                        organization_id=meter_org,
                        project_id=None,
                        usage_type="api_requests",
                        quantity=1,
                        idempotency_key=f"bench-meter-single-{i}",
                    )
            return time.perf_counter() - started

        single_s = await meter_one_by_one()
        started = time.perf_counter()
        async with session_scope(session_maker) as session:
            await record_usage_batch(
                session,
                [
                    {
                        "organization_id": meter_org,
                        "usage_type": "api_requests",
                        "quantity": 1,
                        "idempotency_key": f"bench-meter-batch-{i}",
                    }
                    for i in range(1000)
                ],
            )
        batch_s = time.perf_counter() - started
        replay_s = await meter_one_by_one()  # all duplicates now: counted once
        rows += [
            BenchRow(
                "metering record_usage x1000",
                "records/s",
                1000 / single_s,
                unit="rec/s",
                note=f"1000 records in {single_s * 1000:.0f} ms (target: well under 5 s)",
            ),
            BenchRow(
                "metering record_usage_batch x1000",
                "records/s",
                1000 / batch_s,
                unit="rec/s",
                note=f"one statement: {batch_s * 1000:.0f} ms",
            ),
            BenchRow(
                "metering replay x1000 (duplicates)",
                "records/s",
                1000 / replay_s,
                unit="rec/s",
                note="ON CONFLICT DO NOTHING",
            ),
        ]

        # ---- invoice generation for every organization (the activity, CONCURRENCY at a time)
        billing = BillingActivities(session_maker, None, Decimal("0.08"))
        queue: asyncio.Queue[uuid.UUID] = asyncio.Queue()
        for oid in org_ids:
            queue.put_nowait(oid)
        latencies: list[float] = []

        async def invoicer() -> None:
            while not queue.empty():
                oid = queue.get_nowait()
                t0 = time.perf_counter()
                await billing.create_invoice(
                    InvoiceRequest(organization_id=str(oid), period=period.key)
                )
                latencies.append((time.perf_counter() - t0) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(invoicer() for _ in range(CONCURRENCY)))
        wall = time.perf_counter() - started
        latencies.sort()
        invoices = await conn.fetchval(
            "SELECT count(*) FROM invoices WHERE period_start = $1", period.start
        )
        billed = await conn.fetchval(
            "SELECT count(*) FROM usage_records WHERE invoice_id IS NOT NULL"
        )
        log(f"{invoices} invoices in {wall:.1f}s, {billed} usage records claimed")
        chain1 = ctx.baseline.get(1)
        rows += [
            BenchRow(
                f"invoice generation, {ORGS} orgs",
                "wall time",
                wall,
                unit="s",
                note=f"{invoices} invoices, {billed} records rolled up, {CONCURRENCY} in flight",
            ),
            BenchRow(
                "invoice generation",
                "per invoice (wall/N)",
                wall * 1000 / max(invoices, 1),
                baseline=chain1.per_step_ms if chain1 else None,
                note="vs one baseline activity step",
            ),
            BenchRow(
                "invoice generation",
                "create_invoice p50",
                latencies[len(latencies) // 2],
                note=f"p95 {latencies[int(len(latencies) * 0.95)]:.1f} ms",
            ),
        ]

        # ---- the scheduled path through Temporal: fan-out + BillingWorkflow per organization
        fan_org_ids = await _load(conn, FANOUT_ORGS, period, plan_ids, "b")
        fan_out = BillingScheduleActivities(session_maker, ctx.client)
        async with Worker(
            ctx.client,
            task_queue=BILLING_TASK_QUEUE,
            workflows=[BillingWorkflow, BillingCycleWorkflow],
            activities=[billing.create_invoice, fan_out.start_due_billing_runs],
            max_concurrent_activities=CONCURRENCY * 2,
            workflow_runner=workflow_runner(settings.workflow_sandbox),
        ):
            started = time.perf_counter()
            result: BillingCycleResult = await ctx.client.execute_workflow(
                BillingCycleWorkflow.run,
                BillingCycleInput(period=period.key, page_size=500),
                id=f"bench-billing-cycle-{uuid.uuid4()}",
                task_queue=BILLING_TASK_QUEUE,
            )
            fan_out_s = time.perf_counter() - started
            target = ORGS + len(fan_org_ids)
            while (
                await conn.fetchval(
                    "SELECT count(*) FROM invoices WHERE period_start = $1", period.start
                )
                < target
            ):
                await asyncio.sleep(0.2)
            scheduled_s = time.perf_counter() - started
            started = time.perf_counter()
            again: BillingCycleResult = await ctx.client.execute_workflow(
                BillingCycleWorkflow.run,
                BillingCycleInput(period=period.key, page_size=500),
                id=f"bench-billing-cycle-again-{uuid.uuid4()}",
                task_queue=BILLING_TASK_QUEUE,
            )
            backfill_s = time.perf_counter() - started
        after = await conn.fetchval(
            "SELECT count(*) FROM invoices WHERE period_start = $1", period.start
        )
        rows += [
            BenchRow(
                f"scheduled billing via Temporal, {FANOUT_ORGS} new orgs",
                "per invoice (wall/N)",
                scheduled_s * 1000 / max(result.started, 1),
                baseline=ctx.baseline[5].p50_ms / 5 if 5 in ctx.baseline else None,
                note=(
                    f"{result.started} workflows started in {fan_out_s:.1f}s; all invoiced in "
                    f"{scheduled_s:.1f}s; {ORGS} already-invoiced orgs skipped by the query"
                ),
            ),
            BenchRow(
                "scheduled billing, backfill of the same period",
                "wall time",
                backfill_s * 1000,
                note=f"started {again.started}, invoices {after} (unchanged: {after == target})",
            ),
        ]
    finally:
        await conn.close()
        await engine.dispose()
    return rows
