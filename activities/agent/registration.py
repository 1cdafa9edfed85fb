"""Agent task queue: the AgentTaskWorkflow and its activities, with clients built once."""

from __future__ import annotations

from activities.agent.activities import AgentActivities
from activities.deps import Registration, WorkerDeps
from forgeline.settings import AGENT_TASK_QUEUE
from infra.llm import AnthropicLlm
from infra.storage import create_object_store
from workflows.agent_task import AgentTaskWorkflow


def registration(deps: WorkerDeps) -> Registration:
    settings = deps.settings
    llm: AnthropicLlm | None = None
    if settings.anthropic_api_key is not None and settings.anthropic_api_key.get_secret_value():
        llm = AnthropicLlm(
            api_key=settings.anthropic_api_key.get_secret_value(),
            model=settings.anthropic_model,
            base_url=settings.anthropic_base_url,
        )
    agent = AgentActivities(settings, deps.session_maker, create_object_store(settings), llm)
    return Registration(
        task_queue=AGENT_TASK_QUEUE,
        workflows=[AgentTaskWorkflow],
        activities=agent.activities,
        on_shutdown=[llm.close] if llm else [],
    )
