"""Hot statements sent through the asyncpg connection under a SQLAlchemy connection: the SQL is
compiled once, and a request pays for neither SQLAlchemy's execution context nor its result
wrapping. Errors come out as SQLAlchemy's would (a dropped connection is invalidated and raised
as a DBAPIError with `connection_invalidated`), so the API maps them as before."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import asyncpg
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
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


async def driver_fetch(connection: AsyncConnection, sql: str, *args: Any) -> list[asyncpg.Record]:
    """`sql` on `connection`'s asyncpg connection (inside its transaction, if one is open)."""
    raw = await connection.get_raw_connection()
    driver = cast(asyncpg.Connection, raw.driver_connection)
    try:
        records: list[asyncpg.Record] = await driver.fetch(sql, *args)
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
    session: AsyncSession, statement: DriverStatement, params: Mapping[str, Any]
) -> Sequence[dict[str, Any]]:
    """A prebuilt statement's rows, as dicts, on the session's connection."""
    connection = await session.connection()
    records = await driver_fetch(connection, statement.sql, *statement.args(params))
    return [dict(record) for record in records]
