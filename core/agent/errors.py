"""Failures of the agent's work that the caller maps to its transport (a Temporal error type)."""

from __future__ import annotations


class AgentFailure(Exception):
    """`kind` names the failure for the workflow (workflows/contracts/agent.py lists the kinds no
    retry can fix); `retryable` says whether another attempt may succeed."""

    def __init__(self, kind: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retryable = retryable


def task_not_found(task_id: object) -> AgentFailure:
    return AgentFailure("TaskNotFound", f"agent task {task_id} not found")
