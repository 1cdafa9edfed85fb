"""A matrix stage's status as the aggregate of its legs' (the last attempt of each): a leg that
failed or timed out fails it, then a cancelled one cancels it, then one still going keeps it
running; all skipped is skipped, else it succeeded."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from forgeline.statuses.runs import StageStatus

# Stage names never hold " (" (core/pipelines/document.py): a leg's name is `stage (values)`.
LEG_SEPARATOR = " ("

_ORDER = (
    ({StageStatus.FAILED, StageStatus.TIMED_OUT}, StageStatus.FAILED),
    ({StageStatus.CANCELLED}, StageStatus.CANCELLED),
    ({StageStatus.PENDING, StageStatus.QUEUED, StageStatus.RUNNING}, StageStatus.RUNNING),
)


@dataclass(frozen=True)
class MatrixStatus:
    stage: str
    status: StageStatus
    legs: dict[str, StageStatus]


def matrix_of(stage_name: str) -> str | None:
    """The matrix stage a leg belongs to (None for a stage that is not a leg)."""
    if not stage_name.endswith(")") or LEG_SEPARATOR not in stage_name:
        return None
    return stage_name.split(LEG_SEPARATOR, 1)[0]


def aggregate(statuses: Iterable[StageStatus]) -> StageStatus:
    found = set(statuses)
    for members, status in _ORDER:
        if found & members:
            return status
    if found and found <= {StageStatus.SKIPPED}:
        return StageStatus.SKIPPED
    return StageStatus.SUCCESS


def matrix_statuses(executions: Iterable[tuple[str, int, str]]) -> list[MatrixStatus]:
    """(stage name, attempt, status) rows in any order -> one aggregate per matrix stage."""
    last: dict[str, tuple[int, StageStatus]] = {}
    for name, attempt, status in executions:
        if name not in last or attempt > last[name][0]:
            last[name] = (attempt, StageStatus(status))
    legs: dict[str, dict[str, StageStatus]] = {}
    for name in sorted(last):
        stage = matrix_of(name)
        if stage is not None:
            legs.setdefault(stage, {})[name] = last[name][1]
    return [
        MatrixStatus(stage=stage, status=aggregate(of.values()), legs=of)
        for stage, of in sorted(legs.items())
    ]
