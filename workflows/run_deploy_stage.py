"""A deploy stage with an environment: once its commands passed, DeploymentWorkflow runs as a
child of the pipeline run, and the stage fails unless the deployment went live."""

from __future__ import annotations

from collections.abc import Callable

from temporalio import workflow
from temporalio.exceptions import ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from forgeline.settings import DEPLOYMENTS_TASK_QUEUE
    from workflows.contracts.deployments import PREPARE_PIPELINE_DEPLOYMENT
    from workflows.deployment import DeploymentWorkflow
    from workflows.run_build_slot import BuildSlotHold
    from workflows.run_policies import BOOKKEEPING, BOOKKEEPING_TIMEOUT
    from workflows.runs_models import DeployStageInput, SlotRequest

# A deployment that ended so went live: the deploy stage succeeded.
DEPLOYMENT_LIVE = ("active", "superseded")


async def deploy(
    request: DeployStageInput,
    *,
    slot: BuildSlotHold,
    slot_request: SlotRequest,
    only_stage_running: Callable[[], bool],
) -> str | None:
    """Start the deployment and wait for its end. Returns why it did not go live (failed,
    rolled back, rejected), else None.

    The deployments domain owns `prepare_pipeline_deployment` (creates the deployments row,
    returns the DeploymentInput) on its task queue; its failure fails this stage's run.
    """
    deployment_input = await PREPARE_PIPELINE_DEPLOYMENT.execute(
        request,
        task_queue=DEPLOYMENTS_TASK_QUEUE,
        start_to_close_timeout=BOOKKEEPING_TIMEOUT,
        retry_policy=BOOKKEEPING,
    )
    # A protected environment waits for a person, maybe for hours: unless another stage of this
    # run is building, the run gives its build slot back meanwhile and queues for one again once
    # the deployment has ended (GitLab's manual jobs hold no runner either).
    yield_slot = deployment_input.protected and only_stage_running()
    if yield_slot:
        await slot.release(slot_request)
    try:
        outcome = await workflow.execute_child_workflow(
            DeploymentWorkflow.run,
            deployment_input,
            id=f"deployment-{deployment_input.deployment_id}",
            task_queue=DEPLOYMENTS_TASK_QUEUE,
        )
    except ChildWorkflowError:
        if yield_slot:
            await slot.reacquire(slot_request)
        raise
    if yield_slot:
        await slot.reacquire(slot_request)
    if outcome.status in DEPLOYMENT_LIVE:
        return None
    return (
        f"deployment {outcome.deployment_id} ended {outcome.status}: "
        f"{outcome.reason or 'no reason given'}"
    )
