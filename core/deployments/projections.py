"""Idempotent writes of the deployment workflow into its read model (upserts keyed by
deterministic IDs; a retried activity never duplicates a row)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.audit.system import record_system_action
from core.deployments.release_records import mark_containers_removed
from db.models.deployments import (
    Deployment,
    DeploymentApproval,
)
from db.models.operations import WorkflowExecution
from db.models.projects import Environment
from forgeline.statuses.deployments import (
    TERMINAL_STATUSES,
    DeploymentStatus,
    EnvironmentStatus,
)
from workflows.deployment_models import ApprovalDecision, DeploymentInput, StatusUpdate

DONE_STATUSES = set(TERMINAL_STATUSES)


def now() -> datetime:
    return datetime.now(UTC)


async def set_status(session: AsyncSession, upd: StatusUpdate) -> None:
    values: dict[str, Any] = {"status": upd.status, "updated_at": func.now()}
    if upd.url is not None:
        values["url"] = upd.url
    if upd.image is not None:
        values["image_ref"] = upd.image
    if upd.artifact:
        values["artifact_key"] = upd.artifact.get("static_prefix") or upd.artifact.get("image")
    if upd.reason is not None and upd.status in ("failed", "rejected", "cancelled", "rolled_back"):
        values["error"] = upd.reason
    if upd.health_summary is not None:
        values["health_summary"] = upd.health_summary
    if upd.status in ("building", "queued") or upd.status == "deploying":
        values["started_at"] = func.coalesce(Deployment.started_at, func.now())
    if upd.status in DONE_STATUSES:
        values["finished_at"] = func.coalesce(Deployment.finished_at, func.now())
    if upd.set_rolled_back_at:
        values["rolled_back_at"] = func.coalesce(Deployment.rolled_back_at, func.now())
    # Never move a finished deployment backwards (a late retry of an earlier step).
    await session.execute(
        update(Deployment)
        .where(
            Deployment.id == uuid.UUID(upd.deployment_id),
            Deployment.status.not_in(DONE_STATUSES - {upd.status})
            | (Deployment.status == upd.status),
        )
        .values(**values)
    )


async def record_execution(
    session: AsyncSession,
    *,
    workflow_id: str,
    run_id: str,
    workflow_type: str,
    kind: str,
    task_queue: str,
    organization_id: str,
    project_id: str | None,
    resource_id: str,
    memo: dict[str, Any] | None = None,
) -> None:
    stmt = insert(WorkflowExecution).values(
        kind=kind,
        workflow_type=workflow_type,
        workflow_id=workflow_id,
        run_id=run_id,
        task_queue=task_queue,
        organization_id=uuid.UUID(organization_id),
        project_id=uuid.UUID(project_id) if project_id else None,
        resource_type=kind,
        resource_id=uuid.UUID(resource_id),
        status="running",
        search_attributes={
            "ForgelineOrgId": organization_id,
            "ForgelineProjectId": project_id or "",
            "ForgelineKind": kind,
        },
        memo=memo or {},
    )
    await session.execute(stmt.on_conflict_do_nothing(index_elements=["workflow_id", "run_id"]))
    await session.execute(
        update(Deployment)
        .where(Deployment.id == uuid.UUID(resource_id), Deployment.workflow_id.is_(None))
        .values(workflow_id=workflow_id)
    )


async def close_execution(session: AsyncSession, workflow_id: str, status: str) -> None:
    await session.execute(
        update(WorkflowExecution)
        .where(WorkflowExecution.workflow_id == workflow_id, WorkflowExecution.status == "running")
        .values(status=status, closed_at=func.now())
    )


async def activate(
    session: AsyncSession,
    *,
    deployment_id: str,
    environment_id: str,
    url: str,
    health_summary: dict[str, Any],
    rollback_of_deployment_id: str | None,
) -> None:
    dep = uuid.UUID(deployment_id)
    env = uuid.UUID(environment_id)
    # What served before is superseded (still a healthy version to roll back to).
    await session.execute(
        update(Deployment)
        .where(
            Deployment.environment_id == env, Deployment.status == "active", Deployment.id != dep
        )
        .values(status="superseded", updated_at=func.now())
    )
    await session.execute(
        update(Deployment)
        .where(Deployment.id == dep)
        .values(
            status="active",
            url=url,
            health_summary=health_summary,
            finished_at=func.coalesce(Deployment.finished_at, func.now()),
            updated_at=func.now(),
        )
    )
    if rollback_of_deployment_id:
        # An explicit rollback: the version it replaced is now rolled back.
        await session.execute(
            update(Deployment)
            .where(Deployment.id == uuid.UUID(rollback_of_deployment_id))
            .values(
                status="rolled_back",
                rolled_back_at=func.coalesce(Deployment.rolled_back_at, func.now()),
                rolled_back_to_id=dep,
                updated_at=func.now(),
            )
        )
    await session.execute(
        update(Environment).where(Environment.id == env).values(url=url, updated_at=func.now())
    )


async def record_rollback(
    session: AsyncSession,
    *,
    deployment_id: str,
    reason: str,
    previous_id: str | None,
    health_summary: dict[str, Any],
) -> None:
    dep = uuid.UUID(deployment_id)
    values: dict[str, Any] = {
        "status": "rolled_back" if previous_id else "failed",
        "error": reason[:2000],
        "health_summary": health_summary,
        "finished_at": func.coalesce(Deployment.finished_at, func.now()),
        "updated_at": func.now(),
    }
    if previous_id:
        values["rolled_back_at"] = func.coalesce(Deployment.rolled_back_at, func.now())
        values["rolled_back_to_id"] = uuid.UUID(previous_id)
    organization_id = (
        await session.execute(
            update(Deployment)
            .where(Deployment.id == dep)
            .values(**values)
            .returning(Deployment.organization_id)
        )
    ).scalar_one_or_none()
    await record_system_action(
        session,
        organization_id=organization_id,
        action="deployment.rolled_back" if previous_id else "deployment.failed",
        resource_type="deployment",
        resource_id=dep,
        new={"status": values["status"], "rolled_back_to_id": previous_id},
        metadata={"reason": reason[:500]},
        severity="warning",
    )
    if previous_id:
        prev = uuid.UUID(previous_id)
        # The previous version serves again: it is the environment's active deployment.
        row = await session.get(Deployment, prev)
        if row is not None:
            await session.execute(
                update(Deployment)
                .where(Deployment.id == prev)
                .values(status="active", updated_at=func.now())
            )
            await session.execute(
                update(Environment)
                .where(Environment.id == row.environment_id)
                .values(url=row.url, updated_at=func.now())
            )


async def ensure_deployment(session: AsyncSession, inp: DeploymentInput) -> None:
    """The intent row, for a workflow started without one (the pipeline's deploy stage starts
    DeploymentWorkflow as a child); an existing row (API path) is left as it is."""
    await session.execute(
        insert(Deployment)
        .values(
            id=uuid.UUID(inp.deployment_id),
            environment_id=uuid.UUID(inp.environment_id),
            project_id=uuid.UUID(inp.project_id),
            organization_id=uuid.UUID(inp.organization_id),
            pipeline_run_id=uuid.UUID(inp.pipeline_run_id) if inp.pipeline_run_id else None,
            version=inp.source.version[:100],
            commit_sha=inp.source.commit_sha,
            image_ref=inp.source.image,
            artifact_key=inp.source.static_prefix,
            status="pending",
            provider=inp.provider,
            config_snapshot=inp.config.model_dump(mode="json"),
            triggered_by_user_id=(
                uuid.UUID(inp.triggered_by_user_id) if inp.triggered_by_user_id else None
            ),
            approval_protected=inp.protected,
            required_approvals=max(1, inp.required_approvals) if inp.protected else 0,
            approver_roles=list(inp.approver_roles),
            rollback_of_id=(
                uuid.UUID(inp.rollback_of_deployment_id) if inp.rollback_of_deployment_id else None
            ),
            is_preview=inp.preview,
        )
        .on_conflict_do_nothing(index_elements=["id"])
    )


async def record_decision(
    session: AsyncSession, deployment_id: str, decision: ApprovalDecision
) -> None:
    """One row per (deployment, person): a retried or repeated decision is the same row."""
    # Postgres text cannot hold NUL: a decision sent before the API refused it must not
    # wedge the deployment.
    reason = decision.reason.replace("\x00", "\ufffd")
    approver = uuid.UUID(decision.approver_user_id)
    row = await session.get(Deployment, uuid.UUID(deployment_id), with_for_update=True)
    if row is None:
        return
    await session.execute(
        insert(DeploymentApproval)
        .values(
            deployment_id=row.id,
            user_id=approver,
            role=decision.approver_role,
            approved=decision.approved,
            reason=reason,
        )
        .on_conflict_do_nothing(index_elements=["deployment_id", "user_id"])
    )
    if decision.approved:
        row.approved_by_user_id = approver
        row.approved_at = row.approved_at or now()
        row.approval_reason = reason
    else:
        row.rejected_by_user_id = approver
        row.rejected_at = row.rejected_at or now()
        row.rejection_reason = reason


async def retire_environment(
    session: AsyncSession, environment_id: str, removed: Sequence[str], reason: str
) -> None:
    """A torn-down preview: the environment deleted, its containers removed, its live
    deployment superseded."""
    env = await session.get(Environment, uuid.UUID(environment_id))
    if env is None:
        return
    env.status = EnvironmentStatus.DELETED
    await mark_containers_removed(session, removed)
    await session.execute(
        update(Deployment)
        .where(Deployment.environment_id == env.id, Deployment.status == DeploymentStatus.ACTIVE)
        .values(status=DeploymentStatus.SUPERSEDED, error=f"preview torn down: {reason}")
    )


async def merge_health_summary(
    session: AsyncSession, deployment_id: str, summary: dict[str, Any]
) -> None:
    row = await session.get(Deployment, uuid.UUID(deployment_id))
    if row is not None:
        row.health_summary = {**(row.health_summary or {}), **summary}
