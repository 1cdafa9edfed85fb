"""Approving and rejecting protected deployments: who may decide, sending the decision to the
running workflow (which counts distinct approvers), and the state shown on a deployment."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client, RPCTimeoutOrCancelledError, WorkflowUpdateFailedError
from temporalio.service import RPCError

from core.audit.origin import Origin
from core.audit.service import write_audit
from core.deployments import repository
from core.deployments.config import APPROVER_ROLES
from core.principal import Principal
from db.models.deployments import Deployment, DeploymentApproval
from forgeline.errors import Conflict, DomainError, Forbidden
from forgeline.statuses.deployments import DeploymentStatus
from workflows.deployment import DeploymentWorkflow
from workflows.deployment_models import ApprovalDecision, ApprovalOutcome

# How long an approve/reject request waits for the workflow to record the decision.
DECISION_WAIT_SECONDS = 30.0


class DecisionNotRecorded(
    DomainError, status=503, title="Service unavailable", slug="service-unavailable"
):
    """The workflow did not record the decision in time (its worker is busy or down); the same
    request sent again is the same decision."""


@dataclass(frozen=True)
class ApprovalState:
    """Who decided on a protected deployment and who is still needed."""

    required: int
    approved: int
    missing: int
    approver_roles: list[str]
    decisions: Sequence[DeploymentApproval]
    eligible_user_ids: list[uuid.UUID]


async def decide(
    session: AsyncSession,
    temporal: Client,
    deployment: Deployment,
    *,
    member: uuid.UUID | None,
    role: str,
    approved: bool,
    reason: str,
) -> ApprovalOutcome:
    """Check who decides (a member with an approving role, not the person who triggered the
    deployment), then send the decision to the workflow and wait for it to be recorded."""
    if member is None:
        raise Forbidden("approvals need a member, not an organization-wide key")
    roles = list(deployment.approver_roles or APPROVER_ROLES)
    if role not in roles:
        raise Forbidden(f"role {role!r} cannot decide deployments ({' or '.join(roles)})")
    # The person, not the credential: a deployment requested with someone's API key is theirs.
    if await repository.triggering_person(session, deployment) == member:
        raise Forbidden("the member who triggered a deployment cannot approve or reject it")
    decision = ApprovalDecision(
        approver_user_id=str(member), approver_role=role, approved=approved, reason=reason
    )
    return await send_decision(temporal, deployment, decision)


async def decide_as(
    session: AsyncSession,
    temporal: Client,
    principal: Principal,
    origin: Origin,
    deployment_id: uuid.UUID,
    *,
    approved: bool,
    reason: str,
) -> tuple[Deployment, ApprovalOutcome]:
    """The caller's decision on a deployment of their organization (see `decide`), written to
    the audit trail once the workflow recorded it."""
    row = await repository.deployment_for(session, principal.organization_id, deployment_id)
    member = await repository.person_behind(session, principal.user_id, principal.api_key_id)
    outcome = await decide(
        session, temporal, row, member=member, role=principal.role, approved=approved, reason=reason
    )
    await write_audit(
        session,
        principal,
        origin,
        "deployment.approve" if approved else "deployment.reject",
        "deployment",
        row.id,
        old={"status": DeploymentStatus.AWAITING_APPROVAL},
        new={"status": outcome.status, "reason": reason},
    )
    return row, outcome


async def send_decision(
    temporal: Client, deployment: Deployment, decision: ApprovalDecision
) -> ApprovalOutcome:
    """Send the approve/reject Update; the workflow's validator enforces who may decide."""
    if deployment.status != DeploymentStatus.AWAITING_APPROVAL:
        raise Conflict(f"deployment is {deployment.status}, not awaiting approval")
    handle = temporal.get_workflow_handle_for(DeploymentWorkflow.run, deployment.workflow_id or "")
    try:
        # One update ID per person: a repeated (or concurrent) decision by the same person is
        # the same update, answered once and counted once; so a request that gave up waiting
        # can be sent again safely.
        async with asyncio.timeout(DECISION_WAIT_SECONDS):
            return await handle.execute_update(
                DeploymentWorkflow.decide, decision, id=f"decision-{decision.approver_user_id}"
            )
    except (TimeoutError, RPCTimeoutOrCancelledError) as exc:
        # The SDK turns the timeout's cancellation into its own error.
        raise DecisionNotRecorded(
            "the decision is not recorded yet (the deployment's worker is busy or down); "
            "send the same request again"
        ) from exc
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        message = getattr(cause, "message", None) or str(cause or exc)
        if "cannot approve" in message or "triggered" in message:
            raise Forbidden(message) from exc
        raise Conflict(message) from exc
    except RPCError as exc:
        raise Conflict(f"deployment workflow is not running: {exc.message}") from exc


async def approval_state(session: AsyncSession, deployment: Deployment) -> ApprovalState | None:
    """Who decided on a protected deployment, how many approvals it still needs, and which
    members may still give one."""
    if not deployment.approval_protected:
        return None
    decisions = await repository.decisions(session, deployment.id)
    roles = list(deployment.approver_roles or APPROVER_ROLES)
    required = max(1, deployment.required_approvals)
    approved = len({d.user_id for d in decisions if d.approved})
    open_ = deployment.status == DeploymentStatus.AWAITING_APPROVAL
    eligible: list[uuid.UUID] = []
    if open_ and deployment.organization_id is not None:
        trigger = await repository.triggering_person(session, deployment)
        decided = {d.user_id for d in decisions}
        members = await repository.members_with_roles(session, deployment.organization_id, roles)
        eligible = [m for m in members if m != trigger and m not in decided]
    return ApprovalState(
        required=required,
        approved=approved,
        missing=max(0, required - approved) if open_ else 0,
        approver_roles=roles,
        decisions=decisions,
        eligible_user_ids=eligible,
    )
