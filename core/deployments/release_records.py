"""What a release leaves behind, recorded idempotently: its containers, cloud resources, health
checks and runtime log lines (keys are deterministic, so a retried activity writes nothing new)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from db.models.deployments import (
    DeploymentContainer,
    DeploymentHealthCheck,
    DeploymentRuntimeLog,
    InfrastructureResource,
)


def now() -> datetime:
    return datetime.now(UTC)


async def upsert_container(
    session: AsyncSession,
    *,
    deployment_id: str,
    name: str,
    container_id: str,
    image: str,
    host_port: int,
    container_port: int,
    status: str,
) -> None:
    stmt = insert(DeploymentContainer).values(
        deployment_id=uuid.UUID(deployment_id),
        name=name,
        container_id=container_id,
        image=image,
        host="127.0.0.1",
        host_port=host_port,
        container_port=container_port,
        status=status,
        started_at=now(),
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["name"],
            set_={
                "container_id": stmt.excluded.container_id,
                "host_port": stmt.excluded.host_port,
                "status": stmt.excluded.status,
                "stopped_at": None,
            },
        )
    )


async def mark_containers_removed(session: AsyncSession, deployment_ids: Sequence[str]) -> None:
    if not deployment_ids:
        return
    await session.execute(
        update(DeploymentContainer)
        .where(
            DeploymentContainer.deployment_id.in_([uuid.UUID(d) for d in deployment_ids]),
            DeploymentContainer.status != "removed",
        )
        .values(status="removed", stopped_at=func.now())
    )


async def next_check_number(session: AsyncSession, deployment_id: str) -> int:
    current = await session.scalar(
        select(func.coalesce(func.max(DeploymentHealthCheck.check_number), 0)).where(
            DeploymentHealthCheck.deployment_id == uuid.UUID(deployment_id)
        )
    )
    return int(current or 0) + 1


async def insert_health_check(
    session: AsyncSession,
    *,
    deployment_id: str,
    check_number: int,
    phase: str,
    url: str,
    status_code: int | None,
    latency_ms: int | None,
    ok: bool,
    error: str | None,
    checked_at: datetime,
) -> None:
    await session.execute(
        insert(DeploymentHealthCheck)
        .values(
            deployment_id=uuid.UUID(deployment_id),
            check_number=check_number,
            phase=phase,
            url=url,
            status_code=status_code,
            latency_ms=latency_ms,
            ok=ok,
            error=error,
            checked_at=checked_at,
        )
        .on_conflict_do_nothing(index_elements=["deployment_id", "check_number"])
    )


async def append_logs(
    session: AsyncSession,
    deployment_id: str,
    lines: Sequence[tuple[int, str, str, str, datetime | None]],
) -> None:
    """(seq, stream, source, line, logged_at); seq makes a re-collection idempotent."""
    if not lines:
        return
    rows = [
        {
            "deployment_id": uuid.UUID(deployment_id),
            "seq": seq,
            "stream": stream,
            "source": source,
            "line": line[:8000],
            "logged_at": logged_at or now(),
            "level": "error" if stream == "stderr" else "info",
        }
        for seq, stream, source, line, logged_at in lines
    ]
    await session.execute(
        insert(DeploymentRuntimeLog)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["deployment_id", "seq"])
    )


async def upsert_resource(
    session: AsyncSession,
    *,
    organization_id: str,
    project_id: str,
    environment_id: str,
    deployment_id: str,
    provider: str,
    resource_type: str,
    resource_id: str,
    region: str | None,
    config: dict[str, Any],
    monthly_cost: Decimal | None,
) -> None:
    stmt = insert(InfrastructureResource).values(
        organization_id=uuid.UUID(organization_id),
        project_id=uuid.UUID(project_id),
        environment_id=uuid.UUID(environment_id),
        deployment_id=uuid.UUID(deployment_id),
        provider=provider,
        resource_type=resource_type,
        resource_id=resource_id,
        region=region,
        config=config,
        status="active",
        monthly_cost=monthly_cost,
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["provider", "resource_id"],
            set_={
                "deployment_id": stmt.excluded.deployment_id,
                "config": stmt.excluded.config,
                "monthly_cost": stmt.excluded.monthly_cost,
                "status": "active",
                "destroyed_at": None,
                "updated_at": func.now(),
            },
        )
    )
