"""AgentTaskWorkflow activities: Temporal adapters over core/agent (unpack the contract input,
heartbeat while the core works, turn its failures into Temporal errors)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from core.agent.errors import AgentFailure
from core.agent.executions import TaskEndings, start_execution
from core.agent.tool_calls import ToolCalls
from core.agent.turns import ModelTurns, take_planner_turn
from core.agent.verification import VerificationRuns
from core.agent.workspaces import Workspaces
from forgeline.settings import Settings
from infra.llm import AnthropicLlm
from infra.storage import ObjectStore
from workflows.agent_models import (
    CheckoutInput,
    CheckoutResult,
    FinishInput,
    FinishOutput,
    LlmTurnInput,
    LlmTurnOutput,
    PlannerTurnInput,
    PlannerTurnOutput,
    StartExecutionInput,
    StartExecutionOutput,
    ToolActivityInput,
    ToolActivityOutput,
)
from workflows.contracts.agent import (
    CHECKOUT_REPOSITORY,
    EXAMINE_VERIFICATION_RUN,
    FINISH_TASK,
    LLM_TURN,
    PLANNER_TURN,
    PREPARE_VERIFICATION,
    RUN_TOOL,
    START_EXECUTION,
)
from workflows.verification_models import (
    ExamineRunInput,
    PrepareVerificationInput,
    RunExamination,
    VerificationRun,
)


def heartbeat() -> None:
    if activity.in_activity():
        activity.heartbeat()


@asynccontextmanager
async def temporal_errors() -> AsyncIterator[None]:
    """Core failures become application errors of the same type, non-retryable unless the
    failure says another attempt may succeed."""
    try:
        yield
    except AgentFailure as exc:
        raise ApplicationError(
            exc.message, type=exc.kind, non_retryable=not exc.retryable
        ) from None


def _worker_client() -> Client | None:
    """The worker's Temporal client (absent when the activity runs outside a worker)."""
    try:
        return activity.client()
    except RuntimeError:
        return None


class AgentActivities:
    """Clients are built once per worker in registration.py and injected here."""

    def __init__(
        self,
        settings: Settings,
        session_maker: async_sessionmaker[AsyncSession],
        store: ObjectStore,
        llm: AnthropicLlm | None,
    ) -> None:
        self.settings = settings
        self.session_maker = session_maker
        self.llm = llm
        self.workspaces = Workspaces(settings, session_maker)
        self.model_turns = ModelTurns(session_maker, store, llm) if llm else None
        self.tool_calls = ToolCalls(session_maker, store, self.workspaces)
        self.endings = TaskEndings(session_maker, store, self.workspaces)
        self.verifications = VerificationRuns(settings, session_maker, store, self.workspaces)

    @START_EXECUTION.implement
    async def start_execution(self, inp: StartExecutionInput) -> StartExecutionOutput:
        model = self.llm.model if self.llm else None
        async with temporal_errors():
            return await start_execution(self.session_maker, self.settings, model, inp)

    @CHECKOUT_REPOSITORY.implement
    async def checkout_repository(self, inp: CheckoutInput) -> CheckoutResult:
        async with temporal_errors():
            return await self.workspaces.check_out(
                inp.task_id, inp.project_id, inp.branch, inp.commit, heartbeat
            )

    @PLANNER_TURN.implement
    async def planner_turn(self, inp: PlannerTurnInput) -> PlannerTurnOutput:
        return await take_planner_turn(self.session_maker, inp)

    @LLM_TURN.implement
    async def llm_turn(self, inp: LlmTurnInput) -> LlmTurnOutput:
        if self.model_turns is None:
            raise ApplicationError(
                "no Anthropic key configured on this worker",
                type="LlmNotConfigured",
                non_retryable=True,
            )
        async with temporal_errors():
            return await self.model_turns.take(inp, heartbeat)

    @RUN_TOOL.implement
    async def run_tool(self, inp: ToolActivityInput) -> ToolActivityOutput:
        async with temporal_errors():
            return await self.tool_calls.run(inp, heartbeat)

    @FINISH_TASK.implement
    async def finish_task(self, inp: FinishInput) -> FinishOutput:
        async with temporal_errors():
            return await self.endings.finish(inp, heartbeat)

    @PREPARE_VERIFICATION.implement
    async def prepare_verification(self, inp: PrepareVerificationInput) -> VerificationRun:
        async with temporal_errors():
            return await self.verifications.prepare(inp, heartbeat, _worker_client())

    @EXAMINE_VERIFICATION_RUN.implement
    async def examine_verification_run(self, inp: ExamineRunInput) -> RunExamination:
        async with temporal_errors():
            return await self.verifications.examine(inp, heartbeat)

    @property
    def activities(self) -> list[Any]:
        return [
            self.start_execution,
            self.checkout_repository,
            self.planner_turn,
            self.llm_turn,
            self.run_tool,
            self.finish_task,
            self.prepare_verification,
            self.examine_verification_run,
        ]
