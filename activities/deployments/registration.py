"""Deployments task queue: DeploymentWorkflow, lock, monitor and preview workflows + activities."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from activities.deployments.notifying import NotifyingDeploymentActivities
from activities.deployments.pipeline_stage import PipelineDeployActivities
from activities.deps import Registration, WorkerDeps
from forgeline.settings import DEPLOYMENTS_TASK_QUEUE
from infra.containers import ContainerEngine, EngineUnavailable
from infra.storage import create_object_store, create_s3_client
from workflows.deployment import DeploymentWorkflow
from workflows.deployment_lock import EnvironmentDeploymentLock
from workflows.deployment_monitor import DeploymentMonitorWorkflow
from workflows.preview import PreviewEnvironmentWorkflow

logger = logging.getLogger("forgeline.deployments")

WORKFLOWS: list[type] = [
    DeploymentWorkflow,
    EnvironmentDeploymentLock,
    DeploymentMonitorWorkflow,
    PreviewEnvironmentWorkflow,
]


def registration(deps: WorkerDeps) -> Registration:
    engine: ContainerEngine | None
    try:
        engine = ContainerEngine.connect(deps.settings)
    except EngineUnavailable as exc:
        # `static` (and `aws`) deployments still work; `docker` ones fail with a clear error.
        logger.warning("deployments worker without Docker: %s", exc)
        engine = None
    s3_client: Any = None

    def s3_factory() -> Any:
        nonlocal s3_client
        if s3_client is None:
            s3_client = create_s3_client(deps.settings)
        return s3_client

    store = create_object_store(deps.settings)
    activities = NotifyingDeploymentActivities(
        settings=deps.settings,
        session_maker=deps.session_maker,
        temporal=deps.temporal,
        docker_client=engine.client if engine else None,
        store=store,
        s3_factory=s3_factory,
    )
    # The pipeline deploy stage's entry point (PipelineRunWorkflow calls it on this queue).
    pipeline_stage = PipelineDeployActivities(
        settings=deps.settings, session_maker=deps.session_maker, store=store
    )
    shutdown: list[Callable[[], Any]] = [engine.close] if engine else []
    return Registration(
        task_queue=DEPLOYMENTS_TASK_QUEUE,
        workflows=WORKFLOWS,
        activities=[*activities.all(), *pipeline_stage.all()],
        on_shutdown=shutdown,
    )
