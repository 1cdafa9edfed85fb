"""Payloads of a generated pipeline's verification: the run that proves it, the examination of
a failed run (diagnosis, evidence, the repair made), and the verdict stored with the pipeline.
Pure pydantic: importable inside the workflow sandbox."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, Field

from workflows.agent_models import CheckoutResult


class PrepareVerificationInput(BaseModel):
    task_id: uuid.UUID
    checkout: CheckoutResult
    # 1 for the first run; each repair reruns from the failed stage as the next attempt.
    attempt: int = 1
    # The failed run the next attempt reruns from (its passed stages are reused).
    rerun_of: uuid.UUID | None = None


class VerificationRun(BaseModel):
    """A verification run, committed and ready for its PipelineRunWorkflow."""

    run_id: uuid.UUID
    pipeline_id: uuid.UUID
    project_id: uuid.UUID
    organization_id: uuid.UUID | None = None
    workflow_id: str
    attempt: int = 1


class ExamineRunInput(BaseModel):
    task_id: uuid.UUID
    run_id: uuid.UUID
    checkout: CheckoutResult
    # Whether a repair may still be made (the attempt budget is not spent).
    may_repair: bool = True


class RunExamination(BaseModel):
    """What a finished verification run showed and what was done about it."""

    run_id: uuid.UUID
    status: str
    green: bool = False
    failed_stage: str | None = None
    failure_class: str | None = None
    diagnosis: str | None = None
    evidence: list[str] = Field(default_factory=list)
    # The pipeline's fault, repaired as a new version: rerun from the failed stage.
    repaired: bool = False
    repair: str | None = None
    # The pipeline's fault but no rule knows the repair (or the budget is spent).
    repairable: bool = False


class Verification(BaseModel):
    """The verdict stored on the pipeline and on the version it ran."""

    verified: bool
    run_id: uuid.UUID | None = None
    attempts: int = 0
    failed_stage: str | None = None
    failure_class: str | None = None
    diagnosis: str | None = None
    evidence: list[str] = Field(default_factory=list)
    repairs: list[str] = Field(default_factory=list)
    runs: list[uuid.UUID] = Field(default_factory=list)
    stop_reason: str | None = None

    def as_output(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
