"""One deployment at a time per environment: a small lock workflow that grants in arrival order.

Deployments ask through signal-with-start (`environment-lock-{environment_id}`); a newer preview
deployment supersedes older queued ones. The lock ends itself when idle, and continues as new to
keep its history short.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, Field

    from workflows.deployment_models import LockRequest

GRANTED_SIGNAL = "lock_granted"
SUPERSEDED_SIGNAL = "lock_superseded"


def lock_workflow_id(environment_id: str) -> str:
    return f"environment-lock-{environment_id}"


class LockState(BaseModel):
    environment_id: str
    queue: list[LockRequest] = Field(default_factory=list)
    idle_seconds: float = 600.0
    max_hold_seconds: float = 3600.0
    grants_per_run: int = 200


class LockView(BaseModel):
    holder: str | None
    queue: list[str]


@workflow.defn(name="EnvironmentDeploymentLock")
class EnvironmentDeploymentLock:
    def __init__(self) -> None:
        self._queue: list[LockRequest] = []
        self._holder: LockRequest | None = None
        self._pending_signals: list[tuple[str, str]] = []

    @workflow.signal
    def request(self, req: LockRequest) -> None:
        if (self._holder and self._holder.workflow_id == req.workflow_id) or any(
            q.workflow_id == req.workflow_id for q in self._queue
        ):
            return  # a retried acquire activity: already known
        if req.preview:
            # Previews only care about the newest commit: older queued previews are dropped.
            for old in [q for q in self._queue if q.preview]:
                self._queue.remove(old)
                self._pending_signals.append((old.workflow_id, SUPERSEDED_SIGNAL))
        # In request order: before the first queued request that was asked for later. Requests
        # without a time (histories from before) keep arrival order.
        later = [
            i
            for i, q in enumerate(self._queue)
            if req.requested_at is not None
            and q.requested_at is not None
            and q.requested_at > req.requested_at
        ]
        self._queue.insert(later[0] if later else len(self._queue), req)

    @workflow.signal
    def release(self, workflow_id: str) -> None:
        if self._holder and self._holder.workflow_id == workflow_id:
            self._holder = None
        else:
            self._queue = [q for q in self._queue if q.workflow_id != workflow_id]

    @workflow.query
    def state(self) -> LockView:
        return LockView(
            holder=self._holder.workflow_id if self._holder else None,
            queue=[q.workflow_id for q in self._queue],
        )

    async def _send(self, workflow_id: str, signal: str) -> None:
        try:
            await workflow.get_external_workflow_handle(workflow_id).signal(signal)
        except Exception:
            # The requester is gone (terminated, timed out): nothing waits for this grant.
            workflow.logger.warning("lock: could not signal %s to %s", signal, workflow_id)

    async def _flush(self) -> None:
        while self._pending_signals:
            workflow_id, signal = self._pending_signals.pop(0)
            await self._send(workflow_id, signal)

    @workflow.run
    async def run(self, state: LockState) -> None:
        self._queue = list(state.queue) + self._queue
        grants = 0
        while True:
            await self._flush()
            try:
                await workflow.wait_condition(
                    lambda: bool(self._queue) or bool(self._pending_signals),
                    timeout=timedelta(seconds=state.idle_seconds),
                )
            except TimeoutError:
                if not self._queue and not self._pending_signals:
                    return
            await self._flush()
            if not self._queue:
                continue
            self._holder = self._queue.pop(0)
            await self._send(self._holder.workflow_id, GRANTED_SIGNAL)
            try:
                await workflow.wait_condition(
                    lambda: self._holder is None,
                    timeout=timedelta(seconds=state.max_hold_seconds),
                )
            except TimeoutError:
                workflow.logger.warning("lock: %s held too long, moving on", self._holder)
                self._holder = None
            grants += 1
            if grants >= state.grants_per_run or workflow.info().is_continue_as_new_suggested():
                await self._flush()
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    LockState(
                        environment_id=state.environment_id,
                        queue=self._queue,
                        idle_seconds=state.idle_seconds,
                        max_hold_seconds=state.max_hold_seconds,
                        grants_per_run=state.grants_per_run,
                    )
                )
