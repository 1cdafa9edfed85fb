"""Identifiers and literals quoted client-side (db/sql_quoting.py) read back from PostgreSQL as
exactly the hostile text they were given, whatever standard_conforming_strings says."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from db.session import driver_dsn
from db.sql_quoting import quote_ident, quote_literal, quote_qualified

HOSTILE = (
    "plain",
    "UPPER case",
    "select",
    'dou"ble"',
    "sin'gle",
    "Robert'); DROP TABLE users; --",
    '"; DROP TABLE users; --',
    "back\\slash",
    "\\'",
    "ends with backslash\\",
    "$1 $$ $tag$",
    "a.b",
    "ünï 𝄞",
    " spaces ",
    "new\nline\ttab",
    "'",
    '"',
)


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(driver_dsn(database_url))
    try:
        yield connection
    finally:
        await connection.close()


@pytest.mark.parametrize("conforming", ["on", "off"])
async def test_a_literal_reads_back_as_given(conn: asyncpg.Connection, conforming: str) -> None:
    await conn.execute(f"SET standard_conforming_strings = {conforming}")
    for value in HOSTILE:
        assert await conn.fetchval(f"SELECT {quote_literal(value)}::text") == value
        # The server's own quote_literal reads the same: ours is a drop-in for it.
        server_quoted = await conn.fetchval("SELECT quote_literal($1::text)", value)
        assert await conn.fetchval(f"SELECT {server_quoted}::text") == value


async def test_an_identifier_names_exactly_the_object_given(conn: asyncpg.Connection) -> None:
    for name in HOSTILE:
        row = await conn.fetchrow(f"SELECT 1 AS {quote_ident(name)}")
        assert row is not None and list(row.keys()) == [name]
    async with conn.transaction():
        for name in HOSTILE:
            await conn.execute(f"CREATE TEMP TABLE {quote_ident(name)} (x int) ON COMMIT DROP")
        created = await conn.fetch(
            "SELECT relname FROM pg_class WHERE relnamespace = pg_my_temp_schema()"
            " AND relkind = 'r'"
        )
        assert {row[0] for row in created} == set(HOSTILE)
        schema = await conn.fetchval(
            "SELECT nspname FROM pg_namespace WHERE oid = pg_my_temp_schema()"
        )
        for name in HOSTILE:
            await conn.execute(f"INSERT INTO {quote_qualified(schema, name)} VALUES (1)")
            assert await conn.fetchval(f"SELECT x FROM {quote_qualified(schema, name)}") == 1


@pytest.mark.parametrize("quote", [quote_ident, quote_literal])
def test_a_nul_character_is_refused_before_any_sql(quote: object) -> None:
    assert callable(quote)
    with pytest.raises(ValueError, match="NUL"):
        quote("name\x00; DROP TABLE users")


def test_an_empty_identifier_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        quote_ident("")
    assert quote_literal("") == "''"
