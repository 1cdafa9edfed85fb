"""Every activity of the operations domain. The names are part of recorded histories and never
change.

Pure: importable inside the workflow sandbox.
"""

from __future__ import annotations

from workflows.contract import ActivityContract
from workflows.operations_models import (
    InsightsRollupInput,
    InsightsRollupResult,
    ReconcileInput,
    ReconcileResult,
)

RECONCILE_CLOSED_EXECUTIONS = ActivityContract(
    "reconcile_closed_executions", ReconcileInput, ReconcileResult, non_retryable=("ValueError",)
)
ROLLUP_INSIGHTS = ActivityContract(
    "rollup_insights", InsightsRollupInput, InsightsRollupResult, non_retryable=("ValueError",)
)
