"""A pipeline's deploy stage: the run's workspace stored as a source archive, a deployments row
with an ID derived from (run, environment), and the DeploymentWorkflow input the run starts as a
child. A retried stage finds the same row and gets the same input."""

from __future__ import annotations

import asyncio
import tarfile
import tempfile
import uuid
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.billing.limits import enforce_limit
from core.deployments import repository, service, sources
from core.deployments.config import workflow_input
from core.deployments.pr_previews import preview_for_run
from db.models.deployments import Deployment
from db.models.pipelines import Artifact, PipelineRun
from forgeline.errors import NotFound
from forgeline.settings import Settings
from infra.storage import ObjectStore
from workflows.deployment_models import DeploymentInput, DeploymentRuntimeConfig
from workflows.runs_models import DeployStageInput

# Stable namespace: the same (run, environment) always names the same deployment.
DEPLOY_STAGE_NAMESPACE = uuid.UUID("6f0d4a52-7c1e-4b8e-9a3d-2f5b8c1e0d47")
SOURCE_ARCHIVE_NAME = "deploy-source.tar.gz"


class DeployEnvironmentNotFound(NotFound):
    """The stage names an environment outside the run's project (or organization)."""


class RunNotFound(NotFound):
    pass


def pipeline_deployment_id(run_id: str, environment_id: str) -> uuid.UUID:
    return uuid.uuid5(DEPLOY_STAGE_NAMESPACE, f"pipeline-run:{run_id}:environment:{environment_id}")


def source_archive_key(run_id: str) -> str:
    return f"runs/{run_id}/{SOURCE_ARCHIVE_NAME}"


def _pack(workspace: Path, target: Path) -> None:
    """tar.gz of the workspace (without .git): what the build step receives as its context."""

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        parts = Path(info.name).parts
        return None if ".git" in parts else info

    with tarfile.open(target, "w:gz") as tar:
        tar.add(workspace, arcname=".", filter=keep)


async def store_workspace(
    session: AsyncSession, settings: Settings, store: ObjectStore, run: PipelineRun
) -> None:
    """Archive the run's workspace once (a retry finds the archive and its artifact row)."""
    key = source_archive_key(str(run.id))
    existing = await session.scalar(select(Artifact.id).where(Artifact.object_key == key))
    if existing is not None and store.exists(key):
        return
    workspace = settings.workspaces_dir / str(run.id)
    if not workspace.is_dir():
        return  # source_for_run explains what is missing
    with tempfile.TemporaryDirectory(prefix="forgeline-deploy-") as scratch:
        archive = Path(scratch) / SOURCE_ARCHIVE_NAME
        await asyncio.to_thread(_pack, workspace, archive)
        size = archive.stat().st_size
        stored = await asyncio.to_thread(store.put_file, key, archive, "application/gzip")
    # A run artifact like any other, so later deploys of this run (API, promote) find it
    # after the run's workspace is gone.
    await session.execute(
        insert(Artifact)
        .values(
            id=uuid.uuid4(),
            run_id=run.id,
            stage_execution_id=None,
            name=SOURCE_ARCHIVE_NAME,
            object_key=stored,
            size_bytes=size,
            content_type="application/gzip",
        )
        .on_conflict_do_nothing(index_elements=["object_key"])
    )


async def prepare(
    session: AsyncSession, settings: Settings, store: ObjectStore, inp: DeployStageInput
) -> DeploymentInput:
    """Validate the environment, enforce the monthly limit, create (or find) the row."""
    deployment_id = pipeline_deployment_id(inp.run_id, inp.environment_id)
    try:
        environment_id = uuid.UUID(inp.environment_id)
    except ValueError:
        raise DeployEnvironmentNotFound(
            f"deploy stage environment {inp.environment_id!r} is not a valid ID"
        ) from None
    found = await repository.environment_in_project(
        session,
        environment_id,
        uuid.UUID(inp.project_id),
        uuid.UUID(inp.organization_id) if inp.organization_id else None,
    )
    if found is None:
        raise DeployEnvironmentNotFound(
            f"deploy stage environment {inp.environment_id} does not exist in this "
            "run's project (or belongs to another organization)",
            environment_id=inp.environment_id,
        )
    environment, project = found
    run = await session.get(PipelineRun, uuid.UUID(inp.run_id))
    if run is None or run.project_id != project.id:
        raise RunNotFound(f"pipeline run {inp.run_id} not found")
    # A pull request's run deploys to the pull request's own preview.
    environment = await preview_for_run(session, run, environment)
    await store_workspace(session, settings, store, run)
    source = await sources.source_for_run(session, settings, project, run)
    # The run has not recorded its checkout commit for pure-workspace runs: use the stage's
    # view of it.
    source.commit_sha = source.commit_sha or inp.commit_sha
    source.branch = source.branch or inp.branch
    existing = await session.get(Deployment, deployment_id)
    if existing is not None:
        # A retried activity (or a replayed stage): same row, same input.
        config = DeploymentRuntimeConfig.model_validate(existing.config_snapshot or {})
        return workflow_input(existing, environment, project, source, config=config)
    if project.organization_id is not None:
        await enforce_limit(session, project.organization_id, service.MONTHLY_LIMIT)
    _, deployment_input = await service.create_deployment(
        session,
        environment,
        project,
        source,
        triggered_by_user_id=run.triggered_by_user_id,
        triggered_by_api_key_id=run.triggered_by_api_key_id,
        pipeline_run_id=run.id,
        deployment_id=deployment_id,
    )
    return deployment_input
