"""Request/response schemas of the agent tasks API (requests forbid unknown fields)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from forgeline.statuses.agent import (
    AgentExecutionStatus,
    AgentProvider,
    AgentStepStatus,
    AgentTaskStatus,
    AgentTaskType,
    ToolInvocationStatus,
)
from workflows.agent_models import AgentTaskInputData


class AgentTaskCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task_type: AgentTaskType
    input_data: AgentTaskInputData = Field(default_factory=AgentTaskInputData)
    token_budget: int | None = Field(default=None, ge=1_000, le=5_000_000)


class ToolInvocationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    step_id: uuid.UUID | None
    tool_name: str
    parameters: dict[str, Any]
    result_summary: str | None
    duration_ms: int | None
    status: ToolInvocationStatus
    error: str | None
    invoked_at: datetime


class AgentStepOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    step_number: int
    step_type: str
    description: str | None
    status: AgentStepStatus
    content: dict[str, Any]
    input_tokens: int
    output_tokens: int
    created_at: datetime
    tool_invocations: list[ToolInvocationOut] = Field(default_factory=list)


class AgentExecutionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    sequence: int
    provider: AgentProvider
    model: str | None
    planner_version: str | None
    status: AgentExecutionStatus
    reasoning_trace: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal
    error: str | None
    started_at: datetime
    finished_at: datetime | None
    steps: list[AgentStepOut] = Field(default_factory=list)


class AgentTaskOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    project_id: uuid.UUID
    task_type: AgentTaskType
    status: AgentTaskStatus
    input_data: dict[str, Any]
    output_data: dict[str, Any] | None
    error: str | None
    token_budget: int | None
    tokens_used: int
    cost_usd: Decimal
    workflow_id: str | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None


class AgentTaskDetail(AgentTaskOut):
    executions: list[AgentExecutionOut] = Field(default_factory=list)
    # While the task runs: its workflow's live phase (e.g. "verifying (run 2 of 3)"), step and
    # tokens; null when finished or when the workflow cannot answer in time.
    live: dict[str, Any] | None = None


class AgentTaskApply(BaseModel):
    """Which pipeline the proposal becomes the next version of (by default the failed run's
    pipeline, or the project's pipeline of the proposal's name, or its only one)."""

    model_config = ConfigDict(extra="forbid")

    pipeline_id: uuid.UUID | None = None


class AppliedProposal(BaseModel):
    pipeline_id: uuid.UUID
    version: int
    change: str
    agent_task_id: uuid.UUID | None
    created_at: datetime
