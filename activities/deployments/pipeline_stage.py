"""`prepare_pipeline_deployment`: a pipeline's deploy stage stores the run's workspace as a source
archive, writes a deployments row (deterministic ID) and returns the DeploymentWorkflow input."""

from __future__ import annotations

import asyncio
import tarfile
import tempfile
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.exceptions import ApplicationError

from activities.deployments import intents
from core.billing.limits import enforce_limit
from db.models.deployments import Deployment
from db.models.pipelines import Artifact, PipelineRun
from db.models.projects import Environment, Project
from db.session import session_scope
from forgeline.errors import DomainError, PaymentRequired
from forgeline.settings import Settings
from infra.storage import ObjectStore
from workflows.contracts.deployments import PREPARE_PIPELINE_DEPLOYMENT
from workflows.deployment_models import DeploymentInput, DeploymentRuntimeConfig
from workflows.runs_models import DeployStageInput

# Stable namespace: the same (run, environment) always names the same deployment.
DEPLOY_STAGE_NAMESPACE = uuid.UUID("6f0d4a52-7c1e-4b8e-9a3d-2f5b8c1e0d47")
ENVIRONMENT_NOT_IN_PROJECT = "DeployEnvironmentNotFound"
SOURCE_ARCHIVE_NAME = "deploy-source.tar.gz"


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


def _non_retryable(message: str, type_: str, **details: Any) -> ApplicationError:
    return ApplicationError(message, details or None, type=type_, non_retryable=True)


class PipelineDeployActivities:
    def __init__(
        self,
        *,
        settings: Settings,
        session_maker: async_sessionmaker[AsyncSession],
        store: ObjectStore,
    ) -> None:
        self._settings = settings
        self._sessions = session_maker
        self._store = store

    async def _store_workspace(self, session: AsyncSession, run: PipelineRun) -> None:
        """Archive the run's workspace once (a retry finds the archive and its artifact row)."""
        key = source_archive_key(str(run.id))
        existing = await session.scalar(select(Artifact.id).where(Artifact.object_key == key))
        if existing is not None and self._store.exists(key):
            return
        workspace = self._settings.workspaces_dir / str(run.id)
        if not workspace.is_dir():
            return  # source_for_run explains what is missing
        with tempfile.TemporaryDirectory(prefix="forgeline-deploy-") as scratch:
            archive = Path(scratch) / SOURCE_ARCHIVE_NAME
            await asyncio.to_thread(_pack, workspace, archive)
            size = archive.stat().st_size
            stored = await asyncio.to_thread(self._store.put_file, key, archive, "application/gzip")
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

    @PREPARE_PIPELINE_DEPLOYMENT.implement
    async def prepare_pipeline_deployment(self, inp: DeployStageInput) -> DeploymentInput:
        """Validate the environment, enforce the monthly limit, create (or find) the row."""
        deployment_id = pipeline_deployment_id(inp.run_id, inp.environment_id)
        try:
            environment_id = uuid.UUID(inp.environment_id)
        except ValueError:
            raise _non_retryable(
                f"deploy stage environment {inp.environment_id!r} is not a valid ID",
                ENVIRONMENT_NOT_IN_PROJECT,
            ) from None
        async with session_scope(self._sessions) as session:
            row = (
                await session.execute(
                    select(Environment, Project)
                    .join(Project, Project.id == Environment.project_id)
                    .where(
                        Environment.id == environment_id,
                        Project.id == uuid.UUID(inp.project_id),
                        Project.organization_id
                        == (uuid.UUID(inp.organization_id) if inp.organization_id else None),
                    )
                )
            ).one_or_none()
            if row is None:
                raise _non_retryable(
                    f"deploy stage environment {inp.environment_id} does not exist in this "
                    "run's project (or belongs to another organization)",
                    ENVIRONMENT_NOT_IN_PROJECT,
                    environment_id=inp.environment_id,
                )
            environment, project = row
            run = await session.get(PipelineRun, uuid.UUID(inp.run_id))
            if run is None or run.project_id != project.id:
                raise _non_retryable(f"pipeline run {inp.run_id} not found", "RunNotFound")
            await self._store_workspace(session, run)
            try:
                source = await intents.source_for_run(session, self._settings, project, run)
            except DomainError as exc:
                raise _non_retryable(exc.detail, type(exc).__name__) from exc
            # The run has not recorded its checkout commit for pure-workspace runs: use the
            # stage's view of it.
            source.commit_sha = source.commit_sha or inp.commit_sha
            source.branch = source.branch or inp.branch
            existing = await session.get(Deployment, deployment_id)
            if existing is not None:
                # A retried activity (or a replayed stage): same row, same input.
                config = DeploymentRuntimeConfig.model_validate(existing.config_snapshot or {})
                inp_model = intents.workflow_input(
                    existing, environment, project, source, config=config
                )
                return inp_model
            try:
                if project.organization_id is not None:
                    await enforce_limit(session, project.organization_id, "deployments_per_month")
                _, deployment_input = await intents.create_deployment(
                    session,
                    environment,
                    project,
                    source,
                    triggered_by_user_id=run.triggered_by_user_id,
                    triggered_by_api_key_id=run.triggered_by_api_key_id,
                    pipeline_run_id=run.id,
                    deployment_id=deployment_id,
                )
            except PaymentRequired as exc:
                raise _non_retryable(exc.detail, "PaymentRequired", **exc.extra) from exc
            except DomainError as exc:
                raise _non_retryable(exc.detail, type(exc).__name__) from exc
            return deployment_input

    def all(self) -> list[Any]:
        return [self.prepare_pipeline_deployment]
