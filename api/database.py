"""The API's engine: no per-checkout ping; a server that cannot be reached answers 503, and a
connection it dropped while pooled costs a read one retry (see api/edge.py)."""

from __future__ import annotations

from typing import Any

from asyncpg.exceptions import (
    CannotConnectNowError,
    PostgresConnectionError,
    TooManyConnectionsError,
)
from sqlalchemy import event
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from api.errors import DatabaseUnavailable
from db.session import async_database_url, database_url
from forgeline.settings import Settings

# Connections older than this are replaced at checkout (no round trip) instead of being pinged on
# every checkout: pool_pre_ping costs one extra round trip per request, and an idle connection
# dropped by a restarted server or a proxy is far rarer than requests are.
API_POOL_RECYCLE_SECONDS = 300

# Raised by asyncpg.connect as they are (SQLAlchemy wraps only errors of open connections):
# refused or reset sockets and timeouts (OSError), "the database system is starting up",
# "too many clients", a handshake cut short.
_CONNECT_FAILURES = (
    OSError,
    CannotConnectNowError,
    TooManyConnectionsError,
    PostgresConnectionError,
)


def _connect(dialect: Dialect, _record: Any, cargs: Any, cparams: Any) -> Any:
    try:
        return dialect.connect(*cargs, **cparams)
    except _CONNECT_FAILURES as exc:
        raise DatabaseUnavailable("The database cannot be reached; retry shortly") from exc


def create_api_engine(settings: Settings) -> AsyncEngine:
    """The API's engine: like db.session.create_engine, minus the per-checkout pre-ping, and
    with all pool_size + max_overflow connections kept open: under load an overflow connection
    was closed on return and reopened moments later (connect, codec set-up, a cold prepared-
    statement cache), which showed up as multi-second p99s in bench_projects_api."""
    engine = create_async_engine(
        async_database_url(database_url(settings)),
        pool_size=settings.db_pool_size + settings.db_max_overflow,
        max_overflow=0,
        pool_pre_ping=False,
        pool_recycle=API_POOL_RECYCLE_SECONDS,
    )
    event.listen(engine.sync_engine, "do_connect", _connect)
    return engine
