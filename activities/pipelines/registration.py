"""Pipelines task queue: PipelineRunWorkflow and its activities."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from activities.deps import Registration, WorkerDeps
from activities.pipelines.run_activities import RunActivities
from activities.pipelines.run_variables import RunVariablesCache
from activities.pipelines.stage_execution import StageActivities
from activities.runners import Runner, create_runner
from activities.storage import ObjectStore, create_object_store
from forgeline.settings import PIPELINES_TASK_QUEUE
from workflows.pipeline_run import PipelineRunWorkflow

WORKFLOWS: list[type] = [PipelineRunWorkflow]


def pipeline_activities(
    deps: WorkerDeps, *, runner: Runner | None = None, store: ObjectStore | None = None
) -> tuple[list[Callable[..., Any]], Runner]:
    """The activity callables; tests pass their own runner/store to pin Docker or local."""
    runner = runner or create_runner(deps.settings)
    store = store or create_object_store(deps.settings)
    # One worker's runs and stages share the variables snapshots of the runs it runs.
    variables = RunVariablesCache()
    runs = RunActivities(deps.settings, deps.session_maker, deps.temporal, variables)
    stages = StageActivities(
        deps.settings, deps.session_maker, store, runner, variables, finish_run=runs.finish_run
    )
    activities: list[Callable[..., Any]] = [
        runs.prepare_run,
        runs.start_run,
        runs.finish_run,
        runs.acquire_build_slot,
        runs.release_build_slot,
        stages.execute_stage,
        stages.record_stage_skipped,
        stages.reuse_stage,
    ]
    return activities, runner


def registration(deps: WorkerDeps) -> Registration:
    activities, runner = pipeline_activities(deps)
    return Registration(
        task_queue=PIPELINES_TASK_QUEUE,
        workflows=WORKFLOWS,
        activities=activities,
        on_shutdown=[runner.close],
    )
