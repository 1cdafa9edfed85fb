"""Host names environments claim (their generated app host and custom domains): one owner each,
across every tenant. Claims are checked under a transaction-scoped advisory lock per host name, so
two concurrent claims of one name are serialised and the second sees the first."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from db.models.projects import Environment

HOSTNAME_KEY = "hostname"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
HOSTNAME_PATTERN = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})+$")


def is_hostname(value: str) -> bool:
    """A DNS host name of two labels or more (lowercase), not an IPv4 address."""
    return bool(HOSTNAME_PATTERN.match(value)) and not re.fullmatch(r"[0-9.]+", value)


def claimed_hosts(config: Mapping[str, Any] | None) -> list[str]:
    """Every host name an environment's config claims: generated host first, then domains."""
    config = config or {}
    hosts: list[str] = []
    for value in (
        config.get(HOSTNAME_KEY),
        config.get("custom_domain"),
        *config.get("domains", []),
    ):
        if isinstance(value, str) and value and value not in hosts:
            hosts.append(value)
    return hosts


async def lock_hosts(session: AsyncSession, hosts: Iterable[str]) -> None:
    # Sorted, so two transactions claiming overlapping sets never deadlock.
    for host in sorted(set(hosts)):
        await session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
            {"key": f"forgeline-app-host:{host}"},
        )


async def owner_of(
    session: AsyncSession, host: str, *, excluding: uuid.UUID | None = None
) -> uuid.UUID | None:
    """The live environment that claims `host`, other than `excluding`."""
    config = Environment.config
    query = select(Environment.id).where(
        Environment.status != "deleted",
        or_(
            config[HOSTNAME_KEY].astext == host,
            config["custom_domain"].astext == host,
            func.coalesce(config["domains"], text("'[]'::jsonb")).op("?")(host),
        ),
    )
    if excluding is not None:
        query = query.where(Environment.id != excluding)
    return await session.scalar(query.limit(1))


async def first_taken(
    session: AsyncSession, hosts: Iterable[str], *, excluding: uuid.UUID | None
) -> str | None:
    """Lock `hosts` and return the first one another environment already claims."""
    hosts = list(hosts)
    await lock_hosts(session, hosts)
    for host in hosts:
        if await owner_of(session, host, excluding=excluding) is not None:
            return host
    return None
