"""Vocabularies of agent tasks, their executions, steps and tool calls.

The member order is the order the database check constraints list them in.
"""

from __future__ import annotations

from enum import StrEnum


class AgentTaskType(StrEnum):
    GENERATE_PIPELINE = "generate_pipeline"
    ANALYZE_REPO = "analyze_repo"
    OPTIMIZE_CONFIG = "optimize_config"
    TROUBLESHOOT_FAILURE = "troubleshoot_failure"
    SUGGEST_IMPROVEMENTS = "suggest_improvements"


class AgentTaskStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


# A task in these statuses has finished; it cannot be cancelled any more.
TERMINAL_TASK_STATUSES: tuple[AgentTaskStatus, ...] = (
    AgentTaskStatus.COMPLETED,
    AgentTaskStatus.FAILED,
    AgentTaskStatus.CANCELLED,
)
# A task in these statuses may still change (its workflow runs or is about to).
OPEN_TASK_STATUSES: tuple[AgentTaskStatus, ...] = (AgentTaskStatus.PENDING, AgentTaskStatus.RUNNING)


class AgentProvider(StrEnum):
    ANTHROPIC = "anthropic"
    PLANNER = "planner"


class AgentExecutionStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"


class AgentStepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"


class ToolInvocationStatus(StrEnum):
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    TIMEOUT = "timeout"


def execution_status_of(task_status: AgentTaskStatus) -> AgentExecutionStatus:
    """The status an execution ends with when its task ends with `task_status`."""
    if task_status == AgentTaskStatus.COMPLETED:
        return AgentExecutionStatus.COMPLETED
    if task_status == AgentTaskStatus.FAILED:
        return AgentExecutionStatus.FAILED
    return AgentExecutionStatus.CANCELLED
