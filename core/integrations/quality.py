"""The pull request's quality score (`pr_tracking.quality_score`, 0-100, two decimals).

The seeds give the column (DECIMAL(5,2), "calculated quality score 0-100") and the signals it is
computed from (CI status, test coverage, security scan) without weights; Forgeline fixes them:

    score = 100 * sum(weight * value) / sum(weight)   over the signals that are known

    signal     weight  value
    CI         50      share of the pull request's pipelines whose latest run passed
    coverage   30      line coverage / 100 (from the runs' coverage reports)
    security   20      1 when the runs' security_scan stages passed, 0 when one failed

A signal that is not known yet (a pipeline still queued or running, no coverage report, no
security scan) is left out of both sums, so a pull request is not marked down for what was not
measured; with no known signal at all the score is None (shown as "not scored yet").
docs/pull-requests.md documents the same formula for users.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Decimal

CI_WEIGHT = Decimal(50)
COVERAGE_WEIGHT = Decimal(30)
SECURITY_WEIGHT = Decimal(20)
FINAL_CHECKS = ("success", "failure")


def quality_score(
    pipeline_statuses: Iterable[str],
    coverage_percentage: Decimal | None,
    security_scan_status: str | None,
) -> Decimal | None:
    """The score from the latest check status of each pipeline ('success', 'failure',
    'pending', 'running'), the line coverage in percent and the security scan's status."""
    weighted = Decimal(0)
    weights = Decimal(0)
    finished = [s for s in pipeline_statuses if s in FINAL_CHECKS]
    if finished:
        passed = Decimal(sum(1 for s in finished if s == "success")) / Decimal(len(finished))
        weighted += CI_WEIGHT * passed
        weights += CI_WEIGHT
    if coverage_percentage is not None:
        bounded = min(max(coverage_percentage, Decimal(0)), Decimal(100))
        weighted += COVERAGE_WEIGHT * bounded / 100
        weights += COVERAGE_WEIGHT
    if security_scan_status in FINAL_CHECKS:
        weighted += SECURITY_WEIGHT * (1 if security_scan_status == "success" else 0)
        weights += SECURITY_WEIGHT
    if weights == 0:
        return None
    return (100 * weighted / weights).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
