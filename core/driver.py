"""Hot statements sent through the asyncpg connection under a SQLAlchemy connection: the SQL is
compiled once, and a request pays for neither SQLAlchemy's execution context nor its result
wrapping. Errors come out as SQLAlchemy's would (a dropped connection is invalidated and raised
as a DBAPIError with `connection_invalidated`), so the API maps them as before."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, cast

import asyncpg
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql import ClauseElement

from db.session import database_unavailable

_DIALECT = asyncpg_dialect()  # type: ignore[no-untyped-call]


class DriverStatement:
    """A Core statement compiled to asyncpg's SQL ($n placeholders) once, at import; its bind
    parameters are passed by name, values bound in the statement itself are kept."""

    def __init__(self, stmt: ClauseElement) -> None:
        compiled = stmt.compile(dialect=_DIALECT)
        self.sql = str(compiled)
        self._names = tuple(getattr(compiled, "positiontup", None) or ())
        self._bound = compiled.params

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        return [params[name] if name in params else self._bound[name] for name in self._names]


@dataclass(frozen=True)
class HeldConnection:
    """A SQLAlchemy connection with its pooled DBAPI connection, looked up once."""

    connection: AsyncConnection
    raw: PoolProxiedConnection

    @property
    def usable(self) -> bool:
        return not (self.connection.closed or self.connection.invalidated)


# What a read-only query runs on: a request's session, or a bare autocommit connection (a hot
# read that needs no session at all, see `autocommit_connection`).
ReadSource: TypeAlias = AsyncSession | HeldConnection


@contextlib.asynccontextmanager
async def autocommit_connection(engine: AsyncEngine) -> AsyncIterator[HeldConnection]:
    """A pooled connection in autocommit for a read-only request, without an AsyncSession (no
    session object, no ORM transaction, no session close): each statement is its own implicit
    transaction, as a raw asyncpg query's would be."""
    async with engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        yield HeldConnection(connection, await connection.get_raw_connection())


# session.info key: the autocommit connection a read-only request holds for its whole duration.
_READ_CONNECTION = "forgeline.read_connection"


async def hold_read_connection(session: AsyncSession, connection: AsyncConnection) -> None:
    """Remember the autocommit connection a read-only request's session holds (api.deps), so
    the request's hot statements skip looking it up again (each lookup is a greenlet switch)."""
    session.info[_READ_CONNECTION] = HeldConnection(
        connection, await connection.get_raw_connection()
    )


def read_connection(session: AsyncSession) -> HeldConnection | None:
    """The held autocommit connection, while the session still holds it (a commit or rollback
    in the middle of the request gives it back to the pool: then None)."""
    held = session.info.get(_READ_CONNECTION)
    return held if isinstance(held, HeldConnection) and held.usable else None


async def driver_fetch(
    connection: AsyncConnection | HeldConnection, sql: str, *args: Any
) -> list[asyncpg.Record]:
    """`sql` on the asyncpg connection under `connection` (inside its transaction, if one is
    open)."""
    if isinstance(connection, HeldConnection):
        raw = connection.raw
        connection = connection.connection
    else:
        raw = await connection.get_raw_connection()
    driver = cast(asyncpg.Connection, raw.driver_connection)
    # Listeners of the engine's cursor events (statement capture, tracing) see these statements
    # as they see SQLAlchemy's own; without listeners this costs one attribute check.
    sync = connection.sync_connection
    observed = sync if sync is not None and (sync._has_events or sync.engine._has_events) else None
    if observed is not None:
        observed.dispatch.before_cursor_execute(observed, None, sql, args, None, False)
    try:
        records: list[asyncpg.Record] = await driver.fetch(sql, *args)
        if observed is not None:
            observed.dispatch.after_cursor_execute(observed, None, sql, args, None, False)
        return records
    except Exception as exc:
        lost = database_unavailable(exc) or driver.is_closed()
        if lost:
            # As SQLAlchemy does on a disconnect in its own executions: every connection pooled
            # before now is replaced at its next checkout (the server restarted, they are all
            # dead), this one is discarded, and the error says so (a read is retried once).
            connection.sync_engine.pool._invalidate(raw, exc, _checkin=False)
            await connection.invalidate(exc)
        raise DBAPIError(sql, None, exc, connection_invalidated=lost) from exc


async def driver_rows(
    source: ReadSource, statement: DriverStatement, params: Mapping[str, Any]
) -> Sequence[dict[str, Any]]:
    """A prebuilt statement's rows, as dicts, on the session's (or the bare) connection."""
    connection: AsyncConnection | HeldConnection
    if isinstance(source, HeldConnection):
        connection = source
    else:
        connection = read_connection(source) or await source.connection()
    records = await driver_fetch(connection, statement.sql, *statement.args(params))
    return [dict(record) for record in records]


async def driver_row(
    source: ReadSource, statement: DriverStatement, params: Mapping[str, Any]
) -> dict[str, Any] | None:
    """A prebuilt statement's one row (a lookup by key), None when nothing matches."""
    rows = await driver_rows(source, statement, params)
    return rows[0] if rows else None
