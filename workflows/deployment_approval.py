"""The state every step of a deployment shares (input, status, step) and its approval gate: the
approve/reject Update, who may decide, and the wait for enough distinct approvers.

DeploymentWorkflow inherits it; the Update and its validator are registered on that workflow.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows.contract import ActivityContract, InputT, OutputT
    from workflows.contracts.deployments import NON_RETRYABLE, RECORD_DECISION, RECORD_STATUS
    from workflows.deployment_models import (
        ApprovalDecision,
        ApprovalOutcome,
        DecisionRecord,
        DeploymentInput,
        DeploymentStatus,
        StatusUpdate,
        unprintable,
    )

# Bounded: ~5 minutes of attempts rides out a database restart; a write that can never succeed
# (bad data) fails the deployment instead of retrying for ever.
PROJECTION_RETRY = RetryPolicy(
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=60,
    non_retryable_error_types=list(NON_RETRYABLE),
)
# Bookkeeping writes take milliseconds: a lost worker's attempt is retried after this, not after a
# minute during which newer deployments overtake this one.
PROJECTION_TIMEOUT = timedelta(seconds=10)


async def record(contract: ActivityContract[InputT, OutputT], arg: InputT) -> OutputT:
    """A bookkeeping write (a projection into Postgres): short, and retried until it lands."""
    return await contract.execute(
        arg, start_to_close_timeout=PROJECTION_TIMEOUT, retry_policy=PROJECTION_RETRY
    )


# Patch: approvals are counted per distinct person up to the deployment's required number (a
# history from before took the first decision as final).
APPROVAL_QUORUM = "approval-quorum"

AWAITING = DeploymentStatus.AWAITING_APPROVAL


class ApprovalRejected(Exception):
    """A person rejected the deployment, or nobody approved it in time."""


class DeploymentApprovalGate:
    def __init__(self) -> None:
        self._status = DeploymentStatus.PENDING
        self._step = "starting"
        self._input: DeploymentInput | None = None
        self._decision: ApprovalDecision | None = None
        # Approval quorum: every accepted decision in arrival order (one per person) and how
        # many of them are recorded in Postgres.
        self._quorum = False
        self._decisions: list[ApprovalDecision] = []
        self._recorded = 0

    @property
    def _inp(self) -> DeploymentInput:
        assert self._input is not None
        return self._input

    async def _set_status(self, status: DeploymentStatus, **fields: Any) -> None:
        self._status = status
        self._step = status
        await record(
            RECORD_STATUS,
            StatusUpdate(deployment_id=self._inp.deployment_id, status=status, **fields),
        )

    # --- the approve / reject Update -----------------------------------------------------------

    @workflow.update
    async def decide(self, decision: ApprovalDecision) -> ApprovalOutcome:
        if not self._quorum:
            self._decision = decision
            await workflow.wait_condition(lambda: self._status != AWAITING)
            return ApprovalOutcome(
                deployment_id=self._inp.deployment_id,
                approved=decision.approved,
                status=self._status,
            )
        people = [d.approver_user_id for d in self._decisions]
        if decision.approver_user_id not in people:
            # Two approvals by the same person at once: both pass the validator, one counts.
            self._decisions.append(decision)
            people.append(decision.approver_user_id)
        mine = people.index(decision.approver_user_id)
        await workflow.wait_condition(lambda: self._recorded > mine or self._status != AWAITING)
        return ApprovalOutcome(
            deployment_id=self._inp.deployment_id,
            approved=self._decisions[mine].approved,
            status=self._status,
            approved_by=[
                d.approver_user_id for d in self._decisions[: self._recorded] if d.approved
            ],
            required_approvals=self._required_approvals(),
        )

    @decide.validator
    def _validate_decision(self, decision: ApprovalDecision) -> None:
        inp = self._inp
        if self._quorum:
            if self._status != AWAITING:
                raise ApplicationError(f"deployment is {self._status}, not awaiting approval")
            earlier = next(
                (d for d in self._decisions if d.approver_user_id == decision.approver_user_id),
                None,
            )
            if earlier is not None and earlier.approved != decision.approved:
                raise ApplicationError("this person has already decided on the deployment")
        elif self._status != AWAITING or self._decision is not None:
            raise ApplicationError(f"deployment is {self._status}, not awaiting approval")
        if unprintable(decision.reason):
            raise ApplicationError("the reason must not contain control characters")
        if inp.triggered_by_user_id and decision.approver_user_id == inp.triggered_by_user_id:
            raise ApplicationError("the member who triggered a deployment cannot approve it")
        if decision.approver_role not in inp.approver_roles:
            raise ApplicationError(
                f"role {decision.approver_role!r} cannot approve; needs one of {inp.approver_roles}"
            )

    def _required_approvals(self) -> int:
        return max(1, self._inp.required_approvals)

    # --- the wait ------------------------------------------------------------------------------

    async def _await_approval(self) -> None:
        inp = self._inp
        # Decided before the status opens the gate: every decision then takes the same path.
        self._quorum = workflow.patched(APPROVAL_QUORUM)
        await self._set_status(AWAITING)
        self._step = "awaiting approval"
        if self._quorum:
            await self._await_quorum()
            return
        try:
            await workflow.wait_condition(
                lambda: self._decision is not None,
                timeout=timedelta(seconds=inp.approval_timeout_seconds),
            )
        except TimeoutError:
            self._status = DeploymentStatus.REJECTED
            raise ApprovalRejected(
                f"approval timed out after {inp.approval_timeout_seconds:.0f} seconds"
            ) from None
        assert self._decision is not None
        await self._record_decision(self._decision)
        if not self._decision.approved:
            self._status = DeploymentStatus.REJECTED
            raise ApprovalRejected(f"rejected: {self._decision.reason}")
        self._status = DeploymentStatus.PENDING

    async def _await_quorum(self) -> None:
        """Wait for the required number of distinct approvers (a rejection ends the wait)."""
        inp = self._inp
        required = self._required_approvals()
        deadline = workflow.now() + timedelta(seconds=inp.approval_timeout_seconds)
        while True:
            remaining = (deadline - workflow.now()).total_seconds()
            try:
                if remaining <= 0:
                    raise TimeoutError
                await workflow.wait_condition(
                    lambda: len(self._decisions) > self._recorded,
                    timeout=timedelta(seconds=remaining),
                )
            except TimeoutError:
                self._status = DeploymentStatus.REJECTED
                raise ApprovalRejected(
                    f"approval timed out after {inp.approval_timeout_seconds:.0f} seconds "
                    f"({self._approvals()} of {required} approvals)"
                ) from None
            # Every decision that arrived, also while recording, is recorded before the verdict
            # (one row per person): people approving at once all count.
            pending = self._recorded
            while pending < len(self._decisions):
                await self._record_decision(self._decisions[pending])
                pending += 1
            rejection = next((d for d in self._decisions[:pending] if not d.approved), None)
            if rejection is not None:
                self._status = DeploymentStatus.REJECTED
                self._recorded = pending
                raise ApprovalRejected(f"rejected: {rejection.reason}")
            if self._approvals(pending) >= required:
                self._status = DeploymentStatus.PENDING
            self._recorded = pending
            if self._status == DeploymentStatus.PENDING:
                return

    async def _record_decision(self, decision: ApprovalDecision) -> None:
        await record(
            RECORD_DECISION,
            DecisionRecord(deployment_id=self._inp.deployment_id, decision=decision),
        )

    def _approvals(self, upto: int | None = None) -> int:
        decisions = self._decisions[: self._recorded if upto is None else upto]
        return len({d.approver_user_id for d in decisions if d.approved})
