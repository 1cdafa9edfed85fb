"""A run's hold on one of its organization's build slots, as PipelineRunWorkflow keeps it: the
current claim, the claims granted (at once, or by signal), and giving the slot back and queueing
for it again around a deployment that waits for an approval."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.contracts.runs import ACQUIRE_SLOT, RELEASE_SLOT
    from workflows.run_policies import BOOKKEEPING, BOOKKEEPING_TIMEOUT
    from workflows.runs_models import SlotRequest


class BuildSlotHold:
    def __init__(self) -> None:
        # A grant for an earlier claim (given back while awaiting an approval) is not for the
        # current one.
        self.claim: int | None = None
        self.grants: set[int] = set()
        self.waiting = False

    def granted(self, seq: int) -> None:
        self.grants.add(seq)

    def claimed(self, seq: int, granted: bool) -> None:
        self.claim = seq
        if granted:
            self.grants.add(seq)

    def held(self) -> bool:
        return self.claim in self.grants

    async def wait(self) -> None:
        """Until the current claim is granted."""
        self.waiting = True
        await workflow.wait_condition(self.held)
        self.waiting = False

    async def release(self, request: SlotRequest) -> None:
        self.claim = None
        await RELEASE_SLOT.execute_local(
            request, start_to_close_timeout=BOOKKEEPING_TIMEOUT, retry_policy=BOOKKEEPING
        )

    async def reacquire(self, request: SlotRequest) -> None:
        self.waiting = True
        claim = await ACQUIRE_SLOT.execute_local(
            request, start_to_close_timeout=BOOKKEEPING_TIMEOUT, retry_policy=BOOKKEEPING
        )
        self.claimed(claim.seq, claim.granted)
        await workflow.wait_condition(self.held)
        self.waiting = False
