"""Database URLs change driver through SQLAlchemy's URL object, never by string prefix: every
part (a password full of URL syntax, a database name with slashes, query options) survives."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from db.session import async_database_url, driver_dsn
from forgeline.embedded.postgres import role_url

HOSTILE_PASSWORD = "p@ss:w/o?r#d%20 'x\"\\"
SCHEMES = ("postgresql", "postgres", "postgresql+psycopg", "postgresql+asyncpg")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_postgres_scheme_gets_the_asked_driver_and_keeps_every_part(scheme: str) -> None:
    original = role_url("us er@x", HOSTILE_PASSWORD, "db.internal", 6543, "a/b?c#d é")
    url = scheme + original[len("postgresql") :] + "?sslmode=require&application_name=fl"
    for convert, driver in ((async_database_url, "postgresql+asyncpg"), (driver_dsn, "postgresql")):
        converted = make_url(convert(url))
        assert converted.drivername == driver
        assert converted.username == "us er@x"
        assert converted.password == HOSTILE_PASSWORD
        assert (converted.host, converted.port) == ("db.internal", 6543)
        assert converted.database == "a/b?c#d é"
        assert dict(converted.query) == {"sslmode": "require", "application_name": "fl"}


def test_a_url_of_another_database_is_left_alone() -> None:
    for url in ("sqlite:///tmp/x.db", "mysql+aiomysql://u:p@h/d"):
        assert async_database_url(url) == url
        assert driver_dsn(url) == url


def test_an_already_converted_url_is_unchanged_in_meaning() -> None:
    url = async_database_url("postgresql://u:p%2Fw@h:5/d")
    assert make_url(async_database_url(url)) == make_url(url)
    assert make_url(driver_dsn(driver_dsn(url))) == make_url(driver_dsn(url))


async def test_asyncpg_connects_with_what_driver_dsn_gives(database_url: str) -> None:
    """The round trip through SQLAlchemy's URL and asyncpg's own DSN parser reaches the server
    as the same role, password and database."""
    conn = await asyncpg.connect(driver_dsn(async_database_url(database_url)))
    try:
        row = await conn.fetchrow("SELECT current_user, current_database()")
    finally:
        await conn.close()
    parsed = make_url(database_url)
    assert row is not None and tuple(row) == (parsed.username, parsed.database)
