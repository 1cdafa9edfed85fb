"""What a deployment releases: a successful pipeline run's output, the exact artifact an earlier
deployment released (rollback, promotion), or a local checkout in development."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from core.deployments import repository
from core.deployments.providers import releases_image
from db.models.deployments import Deployment
from db.models.pipelines import PipelineRun
from db.models.projects import Project
from forgeline.errors import Conflict, ValidationFailed, found
from forgeline.local_paths import confine_local_path
from forgeline.settings import Settings
from workflows.deployment_models import DeploymentSource

SUCCESSFUL_RUN_STATUSES = ("succeeded", "success", "completed")


async def source_for_run(
    session: AsyncSession, settings: Settings, project: Project, run: PipelineRun
) -> DeploymentSource:
    """What a pipeline run produced: its newest `.tar.gz` artifact (the deploy stage stores one of
    the workspace), else its workspace directory while the run still has it."""
    archives = await repository.run_archives(session, run.id)
    archive = archives[0] if archives else None
    workspace = settings.workspaces_dir / str(run.id)
    if archive is None and not workspace.is_dir():
        raise ValidationFailed("the pipeline run left no deployable source or build output")
    return DeploymentSource(
        version=(run.commit_sha or f"run-{run.run_number}")[:12],
        commit_sha=run.commit_sha,
        branch=run.branch,
        context_key=archive.object_key if archive else None,
        context_dir=None if archive else str(workspace),
        framework=project.framework,
        output_dir=(project.config or {}).get("output_directory"),
    )


async def source_from_run(
    session: AsyncSession, settings: Settings, project: Project, run_id: uuid.UUID
) -> DeploymentSource:
    run = found(
        await repository.run_in_project(session, project.id, run_id),
        "pipeline_run",
    )
    if run.status not in SUCCESSFUL_RUN_STATUSES:
        raise Conflict(
            f"pipeline run {run.run_number} is {run.status}; only a successful run can be deployed",
            run_status=run.status,
        )
    return await source_for_run(session, settings, project, run)


async def run_for_commit(
    session: AsyncSession, project: Project, commit_sha: str, branch: str | None
) -> uuid.UUID:
    """The newest successful run of a commit (full SHA or a prefix) in the project.

    This is what an external CI job deploys with `{"commit_sha": ..., "branch": ...}`: the
    source Forgeline built and tested for that commit, never an unbuilt checkout.
    """
    run_id = await repository.newest_successful_run(session, project.id, commit_sha, branch)
    if run_id is None:
        on_branch = f" on branch {branch}" if branch else ""
        raise Conflict(
            f"no successful pipeline run of commit {commit_sha}{on_branch} in this project; "
            "run the pipeline for that commit first",
            commit_sha=commit_sha,
        )
    return run_id


def local_source(
    settings: Settings,
    organization_id: uuid.UUID,
    project: Project,
    *,
    source_dir: str | None,
    version: str | None,
    commit_sha: str | None,
    output_dir: str | None,
    dockerfile: str | None,
) -> DeploymentSource:
    """A checkout on this host (development): only inside the organization's local root, never
    another tenant's or the host's files."""
    if source_dir and not settings.allow_local_repositories:
        raise ValidationFailed("source_dir is only accepted when local repositories are allowed")
    if not source_dir:
        raise ValidationFailed(
            "deploying a version needs its source: give pipeline_run_id or the commit_sha of "
            "a successful run (or source_dir in dev)"
        )
    confined = confine_local_path(source_dir, settings, organization_id, field="source_dir")
    return DeploymentSource(
        version=(version or commit_sha or "")[:100],
        commit_sha=commit_sha,
        context_dir=str(confined),
        output_dir=output_dir,
        dockerfile=dockerfile,
        framework=project.framework,
    )


def artifact_source(deployment: Deployment) -> DeploymentSource:
    """The exact artifact a deployment released (rollback and promotion reuse it)."""
    image = releases_image(deployment.provider)
    if image and not deployment.image_ref:
        raise Conflict("that deployment has no built image to reuse")
    if not image and not deployment.artifact_key:
        raise Conflict("that deployment has no published files to reuse")
    return DeploymentSource(
        version=deployment.version,
        commit_sha=deployment.commit_sha,
        image=deployment.image_ref if image else None,
        static_prefix=None if image else deployment.artifact_key,
    )
