"""Status vocabularies of pipeline runs and their stage executions.

The member order is the order the database check constraints list them in.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"


# A run in these statuses has not ended: it holds or waits for a build slot.
ACTIVE_RUN_STATUSES: tuple[RunStatus, ...] = (RunStatus.QUEUED, RunStatus.RUNNING)
# A run in these statuses has ended; its workflow does nothing more for it.
FINISHED_RUN_STATUSES: tuple[RunStatus, ...] = (
    RunStatus.SUCCESS,
    RunStatus.FAILED,
    RunStatus.CANCELLED,
)


class StageStatus(StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    TIMED_OUT = "timed_out"


# A stage execution in these statuses has not ended (a finished run closes them).
UNFINISHED_STAGE_STATUSES: tuple[StageStatus, ...] = (
    StageStatus.PENDING,
    StageStatus.QUEUED,
    StageStatus.RUNNING,
)
# A stage execution in these statuses has ended: its log is complete.
FINISHED_STAGE_STATUSES: tuple[StageStatus, ...] = (
    StageStatus.SUCCESS,
    StageStatus.FAILED,
    StageStatus.CANCELLED,
    StageStatus.SKIPPED,
    StageStatus.TIMED_OUT,
)


class FailureClass(StrEnum):
    """Whose fault a failed stage attempt was, which decides whether it is retried."""

    INFRASTRUCTURE = "infrastructure"  # runner lost, OOM, network, registry: retried
    FLAKY = "flaky"  # known flaky patterns: retried
    CODE = "code"  # the repository's tests or build fail: not retried
    CONFIG = "config"  # the pipeline's fault: not retried, for the agent to repair


# Failure classes a stage is retried for automatically (a bounded number of times).
RETRIED_FAILURE_CLASSES: tuple[FailureClass, ...] = (
    FailureClass.INFRASTRUCTURE,
    FailureClass.FLAKY,
)


class PreviousStageRule(StrEnum):
    """When a stage runs, given how its dependencies ended."""

    SUCCESS = "success"
    FAILURE = "failure"
    ALWAYS = "always"
