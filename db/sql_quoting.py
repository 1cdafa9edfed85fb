"""Identifiers and literals quoted for SQL text, for the statements that take no parameters
(CREATE ROLE, ALTER ROLE ... PASSWORD, CREATE DATABASE, GRANT ...): PostgreSQL's own
quote_ident / quote_literal rules, computed client-side."""

from __future__ import annotations


def _refuse_nul(value: str, what: str) -> None:
    if "\x00" in value:
        raise ValueError(f"a PostgreSQL {what} cannot contain a NUL character")


def quote_ident(name: str) -> str:
    """`name` as one SQL identifier, whatever it holds: always double-quoted (so case, spaces,
    quotes and keywords are kept as they are), embedded double quotes doubled."""
    _refuse_nul(name, "identifier")
    if not name:
        raise ValueError("a PostgreSQL identifier cannot be empty")
    return '"' + name.replace('"', '""') + '"'


def quote_qualified(*names: str) -> str:
    """`schema.table` (or any dotted path) with every part quoted on its own."""
    return ".".join(quote_ident(name) for name in names)


def quote_literal(value: str) -> str:
    """`value` as one SQL string literal: quotes doubled, and an E'' string with backslashes
    doubled when it holds any, so it reads the same whatever standard_conforming_strings is."""
    _refuse_nul(value, "string")
    quoted = value.replace("'", "''")
    if "\\" in value:
        return "E'" + quoted.replace("\\", "\\\\") + "'"
    return "'" + quoted + "'"
