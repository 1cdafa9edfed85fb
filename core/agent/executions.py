"""An agent task's executions: which agent runs it (the model or the built-in planner), and how
the task ends (its output, the generated pipeline, the closing rows)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.agent import outcomes, projections
from core.agent.errors import task_not_found
from core.agent.generated_pipelines import save_generated
from core.agent.progress import Tick, while_ticking
from core.agent.project_settings import build_settings_of
from core.agent.tools import AgentToolbox
from core.agent.verdicts import record_verification
from core.agent.workspaces import Workspaces
from db.models.agent import AgentTask
from db.session import session_scope
from forgeline.settings import Settings
from forgeline.statuses.agent import (
    AgentExecutionStatus,
    AgentProvider,
    AgentTaskStatus,
    AgentTaskType,
    execution_status_of,
)
from infra.storage import ObjectStore
from workflows.agent_models import (
    PLANNER_VERSION,
    AgentTaskInputData,
    CheckoutResult,
    FinishInput,
    FinishOutput,
    StartExecutionInput,
    StartExecutionOutput,
)


class OutputMissing(Exception):
    """The task type's output was not produced (no validated pipeline, no logs read)."""


async def start_execution(
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings,
    model: str | None,
    inp: StartExecutionInput,
) -> StartExecutionOutput:
    """Record the execution (the model's when `model` is set, else the planner's); a later
    sequence closes the one before it as failed with the reason the agent was replaced."""
    use_llm = model is not None and not inp.force_planner
    provider = AgentProvider.ANTHROPIC if use_llm else AgentProvider.PLANNER
    version = model if (use_llm and model) else PLANNER_VERSION
    async with session_scope(session_maker) as session:
        task = await session.get(AgentTask, inp.task_id)
        if task is None:
            raise task_not_found(inp.task_id)
        if inp.sequence > 1:
            previous = projections.execution_id(inp.task_id, inp.sequence - 1)
            await projections.finish_execution(
                session,
                previous,
                status=AgentExecutionStatus.FAILED,
                reasoning=None,
                error=inp.previous_error,
            )
        exec_id = await projections.start_execution(
            session,
            inp.task_id,
            sequence=inp.sequence,
            provider=provider,
            model=version if use_llm else None,
            planner_version=None if use_llm else PLANNER_VERSION,
        )
        budget = task.token_budget or settings.agent_token_budget
        return StartExecutionOutput(
            execution_id=exec_id,
            sequence=inp.sequence,
            provider=provider,
            agent_version=version,
            input_data=dict(task.input_data or {}),
            max_steps=settings.agent_max_steps,
            token_budget=budget,
        )


class TaskEndings:
    """Builds the task's output from what its tools left in the object store and records it."""

    def __init__(
        self,
        session_maker: async_sessionmaker[AsyncSession],
        store: ObjectStore,
        workspaces: Workspaces,
    ) -> None:
        self.session_maker = session_maker
        self.store = store
        self.workspaces = workspaces

    async def finish(self, inp: FinishInput, tick: Tick) -> FinishOutput:
        status, error = inp.status, inp.error
        output: dict[str, Any] = {}
        toolbox: AgentToolbox | None = None
        async with session_scope(self.session_maker) as session:
            task = await session.get(AgentTask, inp.task_id)
            if task is None:
                raise task_not_found(inp.task_id)
            input_data = AgentTaskInputData.model_validate(task.input_data or {})
            project = await build_settings_of(session, inp.task_id)
        if status == AgentTaskStatus.COMPLETED and inp.checkout is not None:
            root = await self.workspaces.ensure(inp.task_id, inp.checkout, tick)
            toolbox = AgentToolbox(root, self.store, str(inp.task_id), input_data, project)
            try:
                output = await while_ticking(asyncio.to_thread(build_output, inp, toolbox), tick)
            except OutputMissing as exc:
                status, error = AgentTaskStatus.FAILED, str(exc)
        if inp.final_text:
            # The model's own words sit beside a specific diagnosis, never over it.
            key = "agent_summary" if output.get("summary") else "summary"
            output[key] = inp.final_text[:8000]
        if inp.llm_error:
            output["llm_fallback_reason"] = inp.llm_error
        output.update({"steps": inp.steps, "tokens_used": inp.tokens_used})
        if inp.stop_reason:
            output["stop_reason"] = inp.stop_reason
        if inp.checkout is not None:
            output["commit_sha"] = inp.checkout.commit_sha
        async with session_scope(self.session_maker) as session:
            task = await session.get(AgentTask, inp.task_id)
            assert task is not None
            generated = inp.task_type == AgentTaskType.GENERATE_PIPELINE
            if status == AgentTaskStatus.COMPLETED and generated and toolbox:
                pid = await save_task_pipeline(session, task, inp.checkout, toolbox)
                output["pipeline_id"] = str(pid)
                if inp.verification is not None:
                    output["verification"] = await record_verification(
                        session, pid, inp.verification
                    )
            if inp.execution_id is not None:
                await projections.finish_execution(
                    session,
                    inp.execution_id,
                    status=execution_status_of(status),
                    reasoning=(inp.final_text or output.get("summary") or None),
                    error=error,
                    transcript_key=inp.conversation_ref,
                )
            await projections.finish_task(
                session, inp.task_id, status=status, output=output, error=error
            )
        self.workspaces.remove(inp.task_id)
        return FinishOutput(status=status, output=output, error=error)


async def save_task_pipeline(
    session: AsyncSession,
    task: AgentTask,
    checkout: CheckoutResult | None,
    toolbox: AgentToolbox,
) -> uuid.UUID:
    """The task's validated pipeline, saved (idempotent: a second call finds the first's)."""
    validated = toolbox.validated()
    assert validated is not None
    proposal, report = validated
    analysis = toolbox.analysis()
    pid = await save_generated(
        session,
        task=task,
        proposal=proposal,
        report=report,
        config={
            "framework": proposal.framework,
            "apps": [a.model_dump(mode="json") for a in analysis.apps],
            "default_image": analysis.primary.image,
            "estimated_build_seconds": proposal.estimated_build_seconds,
            "commit_sha": checkout.commit_sha if checkout else None,
        },
    )
    await projections.remember_framework(
        session,
        task.project_id,
        "monorepo" if analysis.is_monorepo else analysis.primary.framework,
    )
    return pid


def build_output(inp: FinishInput, toolbox: AgentToolbox) -> dict[str, Any]:
    """The task type's output from the analysis and the validated draft."""
    analysis = toolbox.analysis()
    primary = analysis.primary
    base: dict[str, Any] = {
        "detected_framework": primary.framework,
        "confidence": primary.confidence,
        "package_manager": primary.package_manager,
        "is_monorepo": analysis.is_monorepo,
        "apps": [a.model_dump(mode="json") for a in analysis.apps],
    }
    validated = toolbox.validated()
    if inp.task_type == AgentTaskType.GENERATE_PIPELINE:
        if validated is None:
            raise OutputMissing("no pipeline passed validation")
        generated = validated[0]
        base.update(
            {
                "recommended_stages": [s.name for s in generated.stages],
                "estimated_build_time_seconds": generated.estimated_build_seconds,
                "output_directory": primary.output_directory,
                "install_command": primary.install_command,
                "build_command": primary.build_command,
                "test_command": primary.test_command,
                "lint_command": primary.lint_command,
            }
        )
        return base
    if inp.task_type == AgentTaskType.ANALYZE_REPO:
        base.update({"file_count": analysis.file_count, "notes": analysis.notes})
        return base
    proposal = validated[0] if validated else None
    if inp.task_type == AgentTaskType.TROUBLESHOOT_FAILURE:
        raw = toolbox.stored("run_logs.json")
        if raw is None:
            raise OutputMissing("the failed run's logs could not be read")
        base.update(outcomes.diagnose(json.loads(raw), proposal, toolbox.files))
        if validated:
            base["proposed_pipeline"] = validated[0].model_dump(mode="json")
        return base
    base["existing_ci"] = outcomes.existing_ci(toolbox.files)
    base["suggestions"] = outcomes.suggestions(analysis, toolbox.files, proposal)
    if inp.task_type == AgentTaskType.OPTIMIZE_CONFIG and validated:
        base["proposed_pipeline"] = validated[0].model_dump(mode="json")
        base["github_actions_yaml"] = validated[1].github_actions_yaml
        base["gitlab_ci_yaml"] = validated[1].gitlab_ci_yaml
    return base
