"""Pipelines task queue: PipelineRunWorkflow and its control-side activities; builds task queue:
stage execution, served by build hosts (worker.py --build-host), which hold no keys."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from activities.deps import Registration, WorkerDeps
from activities.runs.run_activities import RunActivities
from activities.runs.stage_bookkeeping import StageBookkeepingActivities
from activities.runs.stage_execution import StageActivities
from forgeline.settings import PIPELINES_TASK_QUEUE, Settings
from infra.runners import Runner, create_runner
from infra.runners.janitor import sweep_forever
from infra.storage import ObjectStore, create_object_store
from workflows.pipeline_run import PipelineRunWorkflow

WORKFLOWS: list[type] = [PipelineRunWorkflow]


def control_activities(
    deps: WorkerDeps, *, store: ObjectStore | None = None
) -> list[Callable[..., Any]]:
    """Run bookkeeping, checkout, variables (decrypted here), skipped and reused stages."""
    store = store or create_object_store(deps.settings)
    runs = RunActivities(deps.settings, deps.session_maker, deps.temporal)
    stages = StageBookkeepingActivities(deps.settings, deps.session_maker, store)
    return [
        runs.prepare_run,
        runs.start_run,
        runs.finish_run,
        runs.record_lost_attempts,
        runs.acquire_build_slot,
        runs.release_build_slot,
        stages.record_stage_skipped,
        stages.reuse_stage,
    ]


def build_activities(
    settings: Settings,
    session_maker: async_sessionmaker[AsyncSession],
    *,
    runner: Runner | None = None,
    store: ObjectStore | None = None,
) -> tuple[list[Callable[..., Any]], Runner]:
    """What a build host serves: stage attempts (log chunks, results, artifacts written through
    its own, least-privilege session maker)."""
    runner = runner or create_runner(settings)
    store = store or create_object_store(settings)
    stages = StageActivities(settings, session_maker, store, runner)
    return [stages.execute_stage], runner


def pipeline_activities(
    deps: WorkerDeps, *, runner: Runner | None = None, store: ObjectStore | None = None
) -> tuple[list[Callable[..., Any]], Runner]:
    """Both sides on one worker (tests, benchmarks): the run's plan then names that worker's
    queue as its build queue only if `deps.settings.build_task_queue` says so."""
    store = store or create_object_store(deps.settings)
    built, runner = build_activities(deps.settings, deps.session_maker, runner=runner, store=store)
    return [*control_activities(deps, store=store), *built], runner


def registration(deps: WorkerDeps) -> Registration:
    return Registration(
        task_queue=PIPELINES_TASK_QUEUE,
        workflows=WORKFLOWS,
        activities=control_activities(deps),
    )


def build_registration(deps: WorkerDeps) -> Registration:
    activities, runner = build_activities(deps.settings, deps.session_maker)
    return Registration(
        task_queue=deps.settings.build_task_queue,
        activities=activities,
        on_shutdown=[runner.close],
        background=[lambda: sweep_forever(runner)],
    )
