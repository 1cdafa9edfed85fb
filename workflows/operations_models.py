"""Payloads of the operations workflows (the scheduled reconciler)."""

from __future__ import annotations

from pydantic import BaseModel, Field

RECONCILER_WORKFLOW_ID = "forgeline-reconciler-pass"


class ReconcileInput(BaseModel):
    # Executions closed this long ago at most are looked at (each pass is idempotent, so a
    # window wider than the schedule's interval only costs re-reading the same closures).
    lookback_seconds: float = Field(default=3600.0, gt=0)


class ReconcileResult(BaseModel):
    examined: int = 0
    corrected: list[str] = Field(default_factory=list)


INSIGHTS_ROLLUP_WORKFLOW_ID = "forgeline-insights-rollup-pass"


class InsightsRollupInput(BaseModel):
    # Days recomputed on each pass (late restores and reruns of those days are seen).
    horizon_days: int = Field(default=3, ge=1, le=365)


class InsightsRollupResult(BaseModel):
    projects: int = 0
