"""BuildSlotsWorkflow: a per-organization counting semaphore for concurrent pipeline runs.

Runs acquire with update-with-start (`build-slots-{org}`): the update answers whether the slot is
held now, else a `slot_granted` signal follows. They release when they finish (success, failure or
cancel). Waiters are served first come, first served. No polling: the workflow sleeps until a
signal arrives, and ends after `idle_seconds` without holders or waiters (one timer, started only
when idle). When a run has to queue, one activity checks that every holder still runs: a
terminated run never releases, so its slot is freed there instead of blocking the organization
forever.
"""

from __future__ import annotations

import asyncio
from collections import deque
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, FailureError

with workflow.unsafe.imports_passed_through():
    from workflows.pipeline_models import (
        ACQUIRE_SIGNAL,
        ACQUIRE_UPDATE,
        FIND_GONE_HOLDERS,
        GRANT_SIGNAL,
        RELEASE_SIGNAL,
        BuildSlotsInput,
        BuildSlotsView,
        SlotHolders,
        SlotRelease,
        SlotRequest,
    )

HOLDER_CHECK_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200), maximum_attempts=5, non_retryable_error_types=[]
)


@workflow.defn(name="BuildSlotsWorkflow")
class BuildSlotsWorkflow:
    def __init__(self) -> None:
        self.limit = 1
        self.holders: list[str] = []
        self.waiting: deque[str] = deque()
        self.to_grant: deque[str] = deque()
        self.org = ""
        self.check_holders = False

    @workflow.signal(name=ACQUIRE_SIGNAL)
    def acquire(self, request: SlotRequest) -> None:
        # The latest plan limit wins (an upgrade frees slots for the queue at once).
        self.limit = max(1, request.limit)
        wf_id = request.run_workflow_id
        if wf_id in self.holders:
            self.to_grant.append(wf_id)  # a repeated acquire (retried activity): grant again
        elif wf_id not in self.waiting:
            self.waiting.append(wf_id)
        self._fill()
        if self.waiting:
            # Someone has to wait: make sure no holder is a run that disappeared.
            self.check_holders = True

    @workflow.update(name=ACQUIRE_UPDATE)
    def acquire_now(self, request: SlotRequest) -> bool:
        """Queue like `acquire`; answer True when the caller holds a slot now. The answer replaces
        the grant signal (one workflow-task turnaround less for a run that does not wait)."""
        wf_id = request.run_workflow_id
        pending = self.to_grant.count(wf_id)
        self.acquire(request)
        if wf_id not in self.holders:
            return False
        # Drop only the grant this call queued: one queued earlier by the acquire signal (a run
        # whose update timed out client-side and that queued by signal) must still be sent.
        # acquire() queued it last (a holder's repeat, or the newest waiter that _fill() took).
        if self.to_grant.count(wf_id) > pending and self.to_grant[-1] == wf_id:
            self.to_grant.pop()
        return True

    @workflow.signal(name=RELEASE_SIGNAL)
    def release(self, release: SlotRelease) -> None:
        wf_id = release.run_workflow_id
        if wf_id in self.holders:
            self.holders.remove(wf_id)
        if wf_id in self.waiting:
            self.waiting.remove(wf_id)
        self._fill()

    @workflow.query(name="state")
    def state(self) -> BuildSlotsView:
        return BuildSlotsView(limit=self.limit, holders=self.holders, waiting=list(self.waiting))

    async def _grant(self, wf_id: str) -> None:
        try:
            await workflow.get_external_workflow_handle(wf_id).signal(GRANT_SIGNAL)
        except FailureError:
            # The run is gone (terminated before releasing): free its slot.
            self.release(SlotRelease(run_workflow_id=wf_id))

    def _idle(self) -> bool:
        return not self.holders and not self.waiting and not self.to_grant

    def _fill(self) -> None:
        while self.waiting and len(self.holders) < self.limit:
            wf_id = self.waiting.popleft()
            self.holders.append(wf_id)
            self.to_grant.append(wf_id)

    async def _release_gone_holders(self) -> None:
        try:
            gone: SlotHolders = await workflow.execute_activity(
                FIND_GONE_HOLDERS,
                SlotHolders(workflow_ids=list(self.holders)),
                result_type=SlotHolders,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=HOLDER_CHECK_RETRY,
            )
        except ActivityError:
            workflow.logger.warning("could not check build slot holders; keeping them")
            return
        for wf_id in gone.workflow_ids:
            workflow.logger.warning("slot holder %s no longer runs; slot freed", wf_id)
            self.release(SlotRelease(run_workflow_id=wf_id))

    @workflow.run
    async def run(self, inp: BuildSlotsInput) -> None:
        self.org = inp.organization_key
        self.limit = max(self.limit, inp.limit)
        # State carried over continue-as-new comes before signals delivered in the first task.
        self.holders = [*inp.holders, *(h for h in self.holders if h not in inp.holders)]
        carried = [w for w in inp.waiting if w not in self.holders]
        self.waiting = deque([*carried, *(w for w in self.waiting if w not in carried)])
        self._fill()
        while True:
            await workflow.wait_condition(
                lambda: (
                    bool(self.to_grant)
                    or self.check_holders
                    or self._idle()
                    or workflow.info().is_continue_as_new_suggested()
                )
            )
            while self.to_grant:
                # All pending grants at once: one workflow task for a burst of queued runs.
                batch = list(self.to_grant)
                self.to_grant.clear()
                await asyncio.gather(*(self._grant(wf_id) for wf_id in batch))
            if self.check_holders:
                self.check_holders = False
                await self._release_gone_holders()
                continue
            if self._idle():
                # Linger before ending: the organization's next run then finds a running (and
                # cached) semaphore, one update instead of starting a new workflow.
                try:
                    await workflow.wait_condition(
                        lambda: not self._idle(), timeout=timedelta(seconds=inp.idle_seconds)
                    )
                    continue
                except TimeoutError:
                    await workflow.wait_condition(workflow.all_handlers_finished)
                    return
            if not self.to_grant and workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    BuildSlotsInput(
                        organization_key=self.org,
                        limit=self.limit,
                        holders=self.holders,
                        waiting=list(self.waiting),
                        idle_seconds=inp.idle_seconds,
                    )
                )
