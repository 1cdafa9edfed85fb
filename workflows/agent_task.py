"""AgentTaskWorkflow: clone, then an agent loop (LLM or built-in planner turns, one activity per
tool call) until done, step limit or token budget; continue-as-new keeps the history short."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Literal

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from forgeline.statuses.agent import AgentProvider, AgentTaskStatus, AgentTaskType
    from workflows.agent_models import (
        AgentTaskInputData,
        AgentTaskState,
        AgentTaskWorkflowInput,
        AgentTaskWorkflowOutput,
        CheckoutInput,
        FinishInput,
        LlmTurnInput,
        PlannerTurnInput,
        StartExecutionInput,
        StartExecutionOutput,
        ToolActivityInput,
        ToolActivityOutput,
        ToolCall,
    )
    from workflows.contracts.agent import (
        CHECKOUT_REPOSITORY,
        FINISH_TASK,
        LLM_TURN,
        PLANNER_TURN,
        RUN_TOOL,
        START_EXECUTION,
    )
    from workflows.verification_models import Verification
from workflows.agent_verification import (
    VerificationContext,
    run_pipeline_tool,
    verify_pipeline,
)

# Each activity's contract adds the errors no attempt can fix (workflows/contracts/agent.py).
DB_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=20),
    maximum_attempts=10,
)
CLONE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=3,
)
LLM_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=8,
)
TOOL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=20),
    maximum_attempts=5,
)
Ending = Literal[AgentTaskStatus.COMPLETED, AgentTaskStatus.FAILED, AgentTaskStatus.CANCELLED]


def _reason(err: BaseException) -> str:
    cause = err.cause if isinstance(err, ActivityError) else err
    if isinstance(cause, ApplicationError):
        return cause.message
    return str(cause or err)


@workflow.defn(name="AgentTaskWorkflow")
class AgentTaskWorkflow:
    """Start an execution, check the repository out, let the agent take turns (each tool call
    one activity) until it is done or out of steps or tokens, make sure the task type's output
    exists, then record the outcome."""

    def __init__(self) -> None:
        self._phase = "starting"
        self._step = 0
        self._tokens = 0

    @workflow.query
    def progress(self) -> dict[str, object]:
        return {"phase": self._phase, "step": self._step, "tokens_used": self._tokens}

    @workflow.run
    async def run(self, inp: AgentTaskWorkflowInput) -> AgentTaskWorkflowOutput:
        self._inp = inp
        state = inp.state.model_copy(deep=True)
        self._step, self._tokens = state.step_number, state.tokens_used
        try:
            if state.execution is None:
                self._phase = "starting"
                state.execution = await self._start_execution(
                    StartExecutionInput(task_id=inp.task_id)
                )
            if state.checkout is None:
                self._phase = "cloning"
                data = AgentTaskInputData.model_validate(state.execution.input_data)
                state.checkout = await CHECKOUT_REPOSITORY.execute(
                    CheckoutInput(
                        task_id=inp.task_id,
                        project_id=inp.project_id,
                        branch=data.branch,
                        commit=data.commit,
                    ),
                    start_to_close_timeout=timedelta(minutes=10),
                    heartbeat_timeout=self._heartbeat(),
                    retry_policy=CLONE_RETRY,
                )
            stop_reason = await self._loop(state)
            if stop_reason == "continue_as_new":
                state.continued_runs += 1
                workflow.continue_as_new(inp.model_copy(update={"state": state}))
            await self._planner_fallback(state)
            if self._output_ready(state):
                verification = await self._verify(state)
                return await self._finish(
                    state,
                    AgentTaskStatus.COMPLETED,
                    stop_reason=stop_reason,
                    verification=verification,
                )
            return await self._finish(
                state,
                AgentTaskStatus.FAILED,
                error="no pipeline passed validation",
                stop_reason=stop_reason,
            )
        except asyncio.CancelledError:
            # Cancellation reaches the awaiting activity; record it, then end as cancelled.
            await self._finish(state, AgentTaskStatus.CANCELLED, error="cancelled by user")
            raise
        except ActivityError as err:
            return await self._finish(state, AgentTaskStatus.FAILED, error=_reason(err))

    def _heartbeat(self) -> timedelta:
        return timedelta(seconds=max(2, self._inp.heartbeat_timeout_seconds))

    def _output_ready(self, state: AgentTaskState) -> bool:
        if self._inp.task_type == AgentTaskType.GENERATE_PIPELINE:
            return state.validated
        if self._inp.task_type == AgentTaskType.TROUBLESHOOT_FAILURE:
            return state.logs_read
        return True

    def _set_phase(self, phase: str) -> None:
        self._phase = phase

    def _verifies(self) -> bool:
        return self._inp.verify and self._inp.task_type == AgentTaskType.GENERATE_PIPELINE

    async def _verify(self, state: AgentTaskState) -> dict[str, object] | None:
        """Only when asked (histories from before verification never ask): the validated
        pipeline run on the commit, repaired until green or out of attempts."""
        if not self._verifies():
            return None
        assert state.checkout is not None and state.execution is not None
        budget = state.execution.token_budget

        verdict = await verify_pipeline(
            self._verification_context(state),
            Verification.model_validate(state.verification or {"verified": False}),
            changed=state.patched_since_run,
            budget_left=lambda: state.tokens_used < budget,
            on_phase=self._set_phase,
        )
        return verdict.as_output()

    def _verification_context(self, state: AgentTaskState) -> VerificationContext:
        assert state.checkout is not None
        return VerificationContext(
            task_id=self._inp.task_id,
            checkout=state.checkout,
            attempts=self._inp.verify_attempts,
            task_queue=self._inp.verification_task_queue,
            heartbeat=self._heartbeat(),
        )

    async def _start_execution(self, inp: StartExecutionInput) -> StartExecutionOutput:
        return await START_EXECUTION.execute(
            inp, start_to_close_timeout=timedelta(seconds=30), retry_policy=DB_RETRY
        )

    async def _loop(self, state: AgentTaskState) -> str:
        """Turns until the agent is done; the reason it stopped."""
        turns_this_run = 0
        while True:
            execution = state.execution
            assert execution is not None
            if state.step_number >= execution.max_steps:
                return "step_limit"
            if state.tokens_used >= execution.token_budget:
                return "token_budget"
            if turns_this_run >= self._inp.continue_as_new_after_steps or (
                turns_this_run > 0 and workflow.info().is_continue_as_new_suggested()
            ):
                return "continue_as_new"
            state.step_number += 1
            self._step = state.step_number
            turns_this_run += 1
            if execution.provider == AgentProvider.ANTHROPIC:
                calls, done = await self._llm_turn(state)
            else:
                calls, done = await self._planner_turn(state)
            if done:
                return "finished"
            state.pending_results = await self._run_tools(state, calls)

    async def _llm_turn(self, state: AgentTaskState) -> tuple[list[ToolCall], bool]:
        execution = state.execution
        assert execution is not None
        self._phase = "llm_turn"
        try:
            turn = await LLM_TURN.execute(
                LlmTurnInput(
                    task_id=self._inp.task_id,
                    execution_id=execution.execution_id,
                    sequence=execution.sequence,
                    step_number=state.step_number,
                    conversation_ref=state.conversation_ref,
                    tool_results=state.pending_results,
                    task_type=self._inp.task_type,
                    input_data=execution.input_data,
                ),
                start_to_close_timeout=timedelta(minutes=3),
                heartbeat_timeout=self._heartbeat(),
                retry_policy=LLM_RETRY,
            )
        except ActivityError as err:
            # The model is unavailable for good: continue with the planner, recorded as a new
            # execution, instead of failing the user's task.
            state.llm_error = _reason(err)
            state.execution = await self._start_execution(
                StartExecutionInput(
                    task_id=self._inp.task_id,
                    sequence=execution.sequence + 1,
                    force_planner=True,
                    previous_error=state.llm_error,
                )
            )
            state.step_number, state.pending_results, state.planner_state = 0, [], {}
            state.validated = state.logs_read = False
            return [], False
        state.conversation_ref = turn.conversation_ref
        state.tokens_used += turn.input_tokens + turn.output_tokens
        self._tokens = state.tokens_used
        state.pending_results = []
        if turn.text:
            state.final_text = turn.text
        return turn.tool_calls, not turn.tool_calls

    async def _planner_turn(self, state: AgentTaskState) -> tuple[list[ToolCall], bool]:
        execution = state.execution
        assert execution is not None
        self._phase = "planner_turn"
        turn = await PLANNER_TURN.execute(
            PlannerTurnInput(
                task_id=self._inp.task_id,
                execution_id=execution.execution_id,
                step_number=state.step_number,
                task_type=self._inp.task_type,
                input_data=execution.input_data,
                planner_state=state.planner_state,
                tool_results=state.pending_results,
            ),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=DB_RETRY,
        )
        state.planner_state = turn.planner_state
        state.pending_results = []
        if turn.done:
            state.step_number -= 1  # the closing turn records no step
            state.final_text = state.final_text or turn.text
        return turn.tool_calls, turn.done

    async def _run_tools(
        self, state: AgentTaskState, calls: list[ToolCall]
    ) -> list[ToolActivityOutput]:
        execution = state.execution
        assert execution is not None and state.checkout is not None
        self._phase = "tools"
        results: list[ToolActivityOutput] = []
        # Sequential on purpose: propose -> validate within one turn must see each other's output.
        for index, call in enumerate(calls):
            if call.name == "run_pipeline" and self._verifies():
                ctx = self._verification_context(state)
                results.append(await run_pipeline_tool(ctx, state, call, self._set_phase))
                continue
            result = await RUN_TOOL.execute(
                ToolActivityInput(
                    task_id=self._inp.task_id,
                    execution_id=execution.execution_id,
                    step_number=state.step_number,
                    invocation_key=(
                        f"agent-task-{self._inp.task_id}:{execution.sequence}:"
                        f"{state.step_number}:{index}:{call.call_id}"
                    )[:255],
                    call=call,
                    checkout=state.checkout,
                    input_data=execution.input_data,
                ),
                start_to_close_timeout=timedelta(minutes=2),
                heartbeat_timeout=self._heartbeat(),
                retry_policy=TOOL_RETRY,
            )
            if result.passed_validation:
                state.validated = True
            if result.name == "read_run_logs" and result.ok:
                state.logs_read = True
            if result.name == "propose_pipeline" and result.ok:
                state.validated = False  # a new draft needs its own validation
            if result.name == "patch_stage" and result.ok and result.data.get("version"):
                state.patched_since_run = True
                if state.verification is not None:
                    done = list(state.verification.get("repairs") or [])
                    state.verification["repairs"] = [*done, result.content]
            results.append(result)
        return results

    async def _planner_fallback(self, state: AgentTaskState) -> None:
        """Honest fallback: when the agent stopped without what the task type needs (a valid
        pipeline, the failed run's logs), the planner's tools produce it, recorded as one step."""
        calls: list[ToolCall] = []
        run_id = (state.execution.input_data if state.execution else {}).get("pipeline_run_id")
        task_type = self._inp.task_type
        if task_type == AgentTaskType.TROUBLESHOOT_FAILURE and not state.logs_read:
            calls.append(
                ToolCall(
                    call_id="fallback-logs",
                    name="read_run_logs",
                    arguments={"pipeline_run_id": str(run_id or "")},
                )
            )
        if task_type == AgentTaskType.GENERATE_PIPELINE and not state.validated:
            calls += [
                ToolCall(call_id="fallback-propose", name="propose_pipeline", arguments={}),
                ToolCall(call_id="fallback-validate", name="validate_pipeline", arguments={}),
            ]
        if not calls or state.execution is None:
            return
        state.step_number += 1
        self._step = state.step_number
        await PLANNER_TURN.execute(
            PlannerTurnInput(
                task_id=self._inp.task_id,
                execution_id=state.execution.execution_id,
                step_number=state.step_number,
                task_type=task_type,
                description="Planner fallback: " + ", ".join(c.name for c in calls),
            ),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=DB_RETRY,
        )
        await self._run_tools(state, calls)

    async def _finish(
        self,
        state: AgentTaskState,
        status: Ending,
        *,
        error: str | None = None,
        stop_reason: str | None = None,
        verification: dict[str, object] | None = None,
    ) -> AgentTaskWorkflowOutput:
        self._phase = "finishing"
        result = await FINISH_TASK.execute(
            FinishInput(
                task_id=self._inp.task_id,
                execution_id=state.execution.execution_id if state.execution else None,
                task_type=self._inp.task_type,
                status=status,
                checkout=state.checkout,
                final_text=state.final_text,
                error=error,
                stop_reason=stop_reason,
                tokens_used=state.tokens_used,
                steps=state.step_number,
                llm_error=state.llm_error,
                conversation_ref=state.conversation_ref,
                verification=verification,
            ),
            start_to_close_timeout=timedelta(minutes=3),
            heartbeat_timeout=self._heartbeat(),
            retry_policy=DB_RETRY,
        )
        self._phase = result.status
        return AgentTaskWorkflowOutput(
            task_id=self._inp.task_id,
            status=result.status,
            output=result.output,
            error=result.error,
        )
