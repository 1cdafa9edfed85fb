"""The AI agent's work: tasks, executions (LLM or planner), numbered steps, tool calls, outputs."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from db.base import Base, Timestamps, UUIDPrimaryKey
from db.models.columns import (
    PRECISE_MONEY,
    TZ_DATETIME,
    check_in,
    created_at_column,
    json_array,
    json_object,
)
from forgeline.statuses.agent import (
    AgentExecutionStatus,
    AgentProvider,
    AgentStepStatus,
    AgentTaskStatus,
    AgentTaskType,
    ToolInvocationStatus,
)

TASK_TYPES = tuple(AgentTaskType)
TASK_STATUSES = tuple(AgentTaskStatus)
AGENT_PROVIDERS = tuple(AgentProvider)
EXECUTION_STATUSES = tuple(AgentExecutionStatus)
STEP_STATUSES = tuple(AgentStepStatus)
TOOL_STATUSES = tuple(ToolInvocationStatus)
TEST_TYPES = ("unit", "integration", "e2e")


class AgentTask(UUIDPrimaryKey, Timestamps, Base):
    """A request to the agent (generate a pipeline, troubleshoot a run...): AgentTaskWorkflow."""

    __tablename__ = "agent_tasks"

    organization_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    task_type: Mapped[str] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(20), default="pending", server_default="pending")
    # branch, framework hint, preferences (deploy provider, include tests, previews).
    input_data: Mapped[dict[str, Any]] = json_object()
    output_data: Mapped[dict[str, Any] | None] = json_object(nullable=True)
    error: Mapped[str | None] = mapped_column(Text)
    token_budget: Mapped[int | None] = mapped_column(Integer)
    tokens_used: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    cost_usd: Mapped[Decimal] = mapped_column(
        PRECISE_MONEY, default=Decimal("0"), server_default=text("0")
    )
    retry_count: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    workflow_id: Mapped[str | None] = mapped_column(String(255))
    created_by_user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    created_by_api_key_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL")
    )
    started_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)
    completed_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)

    executions: Mapped[list[AgentExecution]] = relationship(
        back_populates="task",
        lazy="raise",
        passive_deletes=True,
        order_by="AgentExecution.sequence",
    )

    __table_args__ = (
        check_in("task_type", TASK_TYPES),
        check_in("status", TASK_STATUSES),
        CheckConstraint("tokens_used >= 0", name="tokens_used_non_negative"),
        CheckConstraint("token_budget IS NULL OR token_budget > 0", name="token_budget_positive"),
        Index("ix_agent_tasks_project_id_created_at", "project_id", "created_at", "id"),
        Index("ix_agent_tasks_organization_id_created_at", "organization_id", "created_at", "id"),
        Index(
            "ix_agent_tasks_unfinished",
            "status",
            "created_at",
            postgresql_where=text("status IN ('pending', 'running')"),
        ),
    )


class AgentExecution(UUIDPrimaryKey, Timestamps, Base):
    """One agent session on a task (a continue-as-new or a fallback to the planner is another)."""

    __tablename__ = "agent_executions"

    task_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agent_tasks.id", ondelete="CASCADE"))
    sequence: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    provider: Mapped[str] = mapped_column(String(20))
    model: Mapped[str | None] = mapped_column(String(100))
    planner_version: Mapped[str | None] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(20), default="running", server_default="running")
    # Short human-readable reasoning; full transcripts go to the object store (transcript_key).
    reasoning_trace: Mapped[str | None] = mapped_column(Text)
    transcript_key: Mapped[str | None] = mapped_column(String(1024))
    input_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    output_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    cost_usd: Mapped[Decimal] = mapped_column(
        PRECISE_MONEY, default=Decimal("0"), server_default=text("0")
    )
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(TZ_DATETIME, server_default=text("now()"))
    finished_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)

    task: Mapped[AgentTask] = relationship(back_populates="executions", lazy="raise")
    steps: Mapped[list[AgentStep]] = relationship(
        back_populates="execution",
        lazy="raise",
        passive_deletes=True,
        order_by="AgentStep.step_number",
    )

    __table_args__ = (
        UniqueConstraint("task_id", "sequence"),
        check_in("provider", AGENT_PROVIDERS),
        check_in("status", EXECUTION_STATUSES),
        CheckConstraint("input_tokens >= 0 AND output_tokens >= 0", name="tokens_non_negative"),
    )


class AgentStep(UUIDPrimaryKey, Base):
    """A numbered step of an execution: an LLM turn, a planner phase, a tool round."""

    __tablename__ = "agent_steps"

    execution_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("agent_executions.id", ondelete="CASCADE")
    )
    step_number: Mapped[int] = mapped_column(Integer)
    # llm_turn, analyze_repository, detect_framework, generate_config, validate_config, ...
    step_type: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="completed", server_default="completed")
    content: Mapped[dict[str, Any]] = json_object()
    input_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    output_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    created_at: Mapped[datetime] = created_at_column()

    execution: Mapped[AgentExecution] = relationship(back_populates="steps", lazy="raise")

    __table_args__ = (
        UniqueConstraint("execution_id", "step_number"),
        check_in("status", STEP_STATUSES),
    )


class ToolInvocation(UUIDPrimaryKey, Base):
    """A tool call of the agent; `invocation_key` (workflow + step + call) makes it idempotent."""

    __tablename__ = "tool_invocations"

    execution_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("agent_executions.id", ondelete="CASCADE"), index=True
    )
    step_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("agent_steps.id", ondelete="CASCADE"), index=True
    )
    invocation_key: Mapped[str] = mapped_column(String(255), unique=True)
    tool_name: Mapped[str] = mapped_column(String(100))
    parameters: Mapped[dict[str, Any]] = json_object()
    result_summary: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default="running", server_default="running")
    error: Mapped[str | None] = mapped_column(Text)
    invoked_at: Mapped[datetime] = created_at_column()
    completed_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)

    __table_args__ = (
        check_in("status", TOOL_STATUSES),
        Index("ix_tool_invocations_tool_name_invoked_at", "tool_name", "invoked_at"),
    )


class CodeReview(UUIDPrimaryKey, Base):
    """An AI review of one file at a commit: score, issues by line, highlights."""

    __tablename__ = "code_reviews"

    project_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    agent_task_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("agent_tasks.id", ondelete="SET NULL"), index=True
    )
    commit_sha: Mapped[str | None] = mapped_column(String(64))
    file_path: Mapped[str] = mapped_column(String(1000))
    language: Mapped[str | None] = mapped_column(String(50))
    score: Mapped[int] = mapped_column(Integer)
    issues: Mapped[list[Any]] = json_array()
    highlights: Mapped[list[Any]] = json_array()
    summary: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (CheckConstraint("score BETWEEN 0 AND 100", name="score_range"),)


class TestResult(UUIDPrimaryKey, Base):
    """Tests the agent generated or evaluated for a source file, with coverage figures."""

    __tablename__ = "test_results"
    __test__ = False  # not a pytest class

    project_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    agent_task_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("agent_tasks.id", ondelete="SET NULL"), index=True
    )
    pipeline_run_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("pipeline_runs.id", ondelete="SET NULL"), index=True
    )
    file_path: Mapped[str] = mapped_column(String(1000))
    test_type: Mapped[str] = mapped_column(String(20))
    framework: Mapped[str | None] = mapped_column(String(50))
    test_code: Mapped[str | None] = mapped_column(Text)
    edge_cases: Mapped[list[Any]] = json_array()
    coverage_goal: Mapped[int | None] = mapped_column(Integer)
    coverage_percentage: Mapped[Decimal | None] = mapped_column(Numeric(5, 2))
    passed: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    failed: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    skipped: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        check_in("test_type", TEST_TYPES),
        CheckConstraint(
            "coverage_goal IS NULL OR coverage_goal BETWEEN 0 AND 100", name="coverage_goal_range"
        ),
        CheckConstraint(
            "coverage_percentage IS NULL OR coverage_percentage BETWEEN 0 AND 100",
            name="coverage_range",
        ),
    )
