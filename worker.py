"""Forgeline worker: builds clients once and runs one Temporal worker per task queue.

Each domain contributes `activities/<domain>/registration.py: registration(deps) -> Registration`,
imported here by name: a missing module is an ImportError at start.
SIGTERM/SIGINT stop polling; in-flight activities get the grace period to finish or heartbeat out.
`--build-host` (or `--task-queue builds`) runs a build host instead: stage execution only, on the
build task queue, with no keys (refused in production when given any) and the build database role.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from activities.agent.registration import registration as agent_registration
from activities.billing.registration import registration as billing_registration
from activities.deployments.registration import registration as deployments_registration
from activities.deps import Registration, WorkerDeps
from activities.integrations.registration import registration as integrations_registration
from activities.notifications.registration import registration as notifications_registration
from activities.operations.registration import registration as operations_registration
from activities.runs.registration import build_registration
from activities.runs.registration import registration as runs_registration
from core.billing.schedules import ensure_billing_schedules
from core.integrations.schedules import ensure_pipeline_schedules
from core.operations.schedules import ensure_insights_rollup_schedule, ensure_reconciler_schedule
from core.runs.build_slots import retire_semaphore_workflows
from db.session import create_engine, create_session_maker
from forgeline.settings import (
    AGENT_TASK_QUEUE,
    BILLING_TASK_QUEUE,
    BUILDS_TASK_QUEUE,
    DEPLOYMENTS_TASK_QUEUE,
    INTEGRATIONS_TASK_QUEUE,
    NOTIFICATIONS_TASK_QUEUE,
    OPERATIONS_TASK_QUEUE,
    PIPELINES_TASK_QUEUE,
    Settings,
    get_settings,
)
from forgeline.temporal_client import (
    connect_temporal,
    metrics_runtime,
    temporal_target,
    workflow_runner,
)
from infra.runners.local_runner import watch_children_with_pidfd
from workflows.echo import DIAGNOSTICS_TASK_QUEUE, EchoWorkflow, echo_activity

log = logging.getLogger("forgeline.worker")

# Task queue -> the registration that serves it (the build task queue is served by build hosts).
DOMAINS: dict[str, Callable[[WorkerDeps], Registration]] = {
    AGENT_TASK_QUEUE: agent_registration,
    PIPELINES_TASK_QUEUE: runs_registration,
    DEPLOYMENTS_TASK_QUEUE: deployments_registration,
    BILLING_TASK_QUEUE: billing_registration,
    INTEGRATIONS_TASK_QUEUE: integrations_registration,
    NOTIFICATIONS_TASK_QUEUE: notifications_registration,
    OPERATIONS_TASK_QUEUE: operations_registration,
}
# The control worker's queues; the build task queue is served by build hosts only.
ALL_TASK_QUEUES = (*DOMAINS, DIAGNOSTICS_TASK_QUEUE)


def diagnostics_registration(deps: WorkerDeps) -> Registration:
    return Registration(
        task_queue=DIAGNOSTICS_TASK_QUEUE, workflows=[EchoWorkflow], activities=[echo_activity]
    )


def load_registrations(
    deps: WorkerDeps, task_queues: Iterable[str] = ALL_TASK_QUEUES
) -> list[Registration]:
    """The registrations of the wanted task queues, built with the shared deps."""
    wanted = set(task_queues)
    registrations = [register(deps) for queue, register in DOMAINS.items() if queue in wanted]
    if DIAGNOSTICS_TASK_QUEUE in wanted:
        registrations.append(diagnostics_registration(deps))
    if deps.settings.build_task_queue in wanted:
        registrations.append(build_registration(deps))
    return registrations


def worker_database_url(settings: Settings) -> str | None:
    """A build host writes through the least-privilege build role when one is configured."""
    if settings.build_host and settings.build_database_url:
        return settings.build_database_url
    return None


def merge_by_queue(registrations: Sequence[Registration]) -> dict[str, Registration]:
    merged: dict[str, Registration] = {}
    for reg in registrations:
        into = merged.setdefault(reg.task_queue, Registration(task_queue=reg.task_queue))
        into.workflows = [*into.workflows, *reg.workflows]
        into.activities = [*into.activities, *reg.activities]
        into.on_shutdown = [*into.on_shutdown, *reg.on_shutdown]
        into.background = [*into.background, *reg.background]
    return merged


def build_workers(
    client: Client,
    registrations: dict[str, Registration],
    *,
    executor: ThreadPoolExecutor,
    grace: timedelta,
    sandboxed: bool = False,
) -> list[Worker]:
    workers = []
    for queue, reg in registrations.items():
        if not reg.workflows and not reg.activities:
            continue
        workers.append(
            Worker(
                client,
                task_queue=queue,
                workflows=list(reg.workflows),
                activities=list(reg.activities),
                workflow_runner=workflow_runner(sandboxed),
                # Sync activities (Docker SDK, boto3) run on this pool; async ones on the loop.
                activity_executor=executor,
                graceful_shutdown_timeout=grace,
            )
        )
    return workers


async def _call_hooks(hooks: Iterable[Callable[[], Any]]) -> None:
    for hook in hooks:
        try:
            result = hook()
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("on_shutdown hook %r failed", hook)


async def connect_with_retry(
    settings: Settings, stop: asyncio.Event, attempts: int = 60
) -> Client | None:
    """The server may still be starting (compose, make run): retry for about a minute.

    Returns None when `stop` is set while waiting. With FORGELINE_WORKER_METRICS_ADDRESS the
    client's runtime serves the SDK's Prometheus metrics there (created once: it binds the port).
    """
    runtime = (
        metrics_runtime(settings.worker_metrics_address)
        if settings.worker_metrics_address
        else None
    )
    for attempt in range(1, attempts + 1):
        try:
            return await connect_temporal(settings, runtime=runtime)
        except Exception as exc:
            if attempt == attempts:
                raise
            log.info("waiting for Temporal at %s (%s)", temporal_target(settings), exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1)
        if stop.is_set():
            return None
    return None


async def run(
    settings: Settings,
    task_queues: Iterable[str] = ALL_TASK_QUEUES,
    *,
    stop: asyncio.Event | None = None,
) -> None:
    """Run until `stop` is set (or SIGTERM/SIGINT when run as a program)."""
    stop = stop or asyncio.Event()
    client = await connect_with_retry(settings, stop)
    if client is None:
        return
    engine = create_engine(settings, url=worker_database_url(settings))
    session_maker = create_session_maker(engine)
    deps = WorkerDeps(settings=settings, session_maker=session_maker, temporal=client)
    registrations = merge_by_queue(load_registrations(deps, task_queues))
    if PIPELINES_TASK_QUEUE in registrations:
        await retire_semaphore_workflows(client)
    if BILLING_TASK_QUEUE in registrations:
        # Every billing worker makes sure the monthly schedule exists (idempotent: the schedule ID
        # is unique, so concurrent starts create one), so no deployment depends on `make run`.
        await ensure_billing_schedules(client)
    if settings.integrations_task_queue in registrations:
        # Pipelines' schedules follow their rows even when written without the API.
        await ensure_pipeline_schedules(
            client, session_maker, task_queue=settings.integrations_task_queue
        )
    if settings.operations_task_queue in registrations:
        # The operations schedules, created once whoever starts first (idempotent).
        await ensure_reconciler_schedule(client, settings)
        await ensure_insights_rollup_schedule(client, settings)
    grace = timedelta(seconds=settings.worker_shutdown_grace_seconds)
    executor = ThreadPoolExecutor(max_workers=settings.worker_activity_threads)
    workers = build_workers(
        client,
        registrations,
        executor=executor,
        grace=grace,
        sandboxed=settings.workflow_sandbox,
    )
    log.info("worker polling %s on %s", [w.task_queue for w in workers], temporal_target(settings))
    running = [asyncio.create_task(w.run(), name=f"worker:{w.task_queue}") for w in workers]
    chores = [
        asyncio.create_task(job()) for reg in registrations.values() for job in reg.background
    ]
    stopping = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait([*running, stopping], return_when=asyncio.FIRST_COMPLETED)
        crashed = [task for task in done if task is not stopping and task.exception()]
        for task in crashed:
            log.error("worker %s stopped", task.get_name(), exc_info=task.exception())
    finally:
        log.info("shutting down: %ss grace for in-flight activities", grace.total_seconds())
        await asyncio.gather(*(w.shutdown() for w in workers), return_exceptions=True)
        await asyncio.gather(*running, return_exceptions=True)
        stopping.cancel()
        for chore in chores:
            chore.cancel()
        await asyncio.gather(*chores, return_exceptions=True)
        for reg in registrations.values():
            await _call_hooks(reg.on_shutdown)
        executor.shutdown(wait=True)
        await engine.dispose()
        log.info("worker stopped")
    if crashed:
        raise SystemExit(1)


async def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--task-queue",
        action="append",
        choices=(*ALL_TASK_QUEUES, BUILDS_TASK_QUEUE),
        help="serve only this task queue (repeatable); default: all of the control worker's",
    )
    parser.add_argument(
        "--build-host",
        action="store_true",
        help="run stages only (FORGELINE_BUILD_TASK_QUEUE), holding no keys",
    )
    args = parser.parse_args(argv)
    build_host = args.build_host or args.task_queue == [BUILDS_TASK_QUEUE]
    # A build host's settings refuse keys in production: it must not hold what it never needs.
    settings = Settings(build_host=True) if build_host else get_settings()
    queues = [settings.build_task_queue] if settings.build_host else args.task_queue
    watch_children_with_pidfd()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run(settings, queues or ALL_TASK_QUEUES, stop=stop)


def exit_without_finalizing(status: int) -> None:
    """Leave without interpreter finalization: the Temporal SDK's Rust core can abort the
    process while Python finalizes (sdk-python#300, SIGABRT) after a clean shutdown, which a
    supervisor would read as a crash. Everything is stopped and flushed by then."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except SystemExit as stop:
        exit_without_finalizing(stop.code if isinstance(stop.code, int) else 1)
    except BaseException:
        logging.getLogger("forgeline.worker").exception("worker failed")
        exit_without_finalizing(1)
    exit_without_finalizing(0)
