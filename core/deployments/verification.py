"""Health verification of a release through its provider: every probe recorded as a numbered
health check (a retried activity continues the numbering), N passes in a row or a rollback."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.deployments import release_records
from core.deployments.health import Probe, verify
from core.deployments.providers.base import ReleaseProvider
from db.session import session_scope
from workflows.deployment_models import HealthRequest, HealthVerdict


async def check_health(
    sessions: async_sessionmaker[AsyncSession],
    provider: ReleaseProvider,
    req: HealthRequest,
    phase: str,
    *,
    heartbeat: Callable[[str], None],
) -> HealthVerdict:
    async with session_scope(sessions) as session:
        number = await release_records.next_check_number(session, req.deployment_id)
    counter = [number]

    async def record(probe: Probe) -> None:
        async with session_scope(sessions) as session:
            await release_records.insert_health_check(
                session,
                deployment_id=req.deployment_id,
                check_number=counter[0],
                phase=phase,
                url=probe.url,
                status_code=probe.http_status,
                latency_ms=probe.latency_ms,
                ok=probe.passed,
                error=probe.error,
                checked_at=probe.checked_at,
            )
        counter[0] += 1

    policy = req.policy
    if req.single_probe:
        policy = policy.model_copy(update={"required_passes": 1, "failure_threshold": 1})
    async with httpx.AsyncClient() as http:
        target = provider.verify(req, http)
        return await verify(
            target.probe, record, policy, heartbeat=heartbeat, dead_reason=target.dead_reason
        )


def monitor_summary(verdict: HealthVerdict) -> dict[str, object]:
    """What a monitor probe adds to the deployment's health summary."""
    return {
        "status": "healthy" if verdict.healthy else "unhealthy",
        "last_check_at": verdict.checked_at.isoformat() if verdict.checked_at else None,
        "response_time_ms": verdict.last_latency_ms,
        "http_status": verdict.last_status,
        "monitor": True,
        "reason": verdict.reason,
    }
