"""Key rotation over the stored data: every `*_encrypted` column and the secrets inside JSONB
configs and run snapshots are re-encrypted under the newest key, in keyset batches."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from cryptography.fernet import InvalidToken
from sqlalchemy import column, select, table, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import db.models  # noqa: F401  # registers every table on Base.metadata
from db.base import Base
from db.models.pipelines import PipelineRun
from db.models.projects import Environment, Project
from forgeline.crypto import DecryptionFailed, fernet_for
from forgeline.environment_variables import rotate, rotate_snapshot
from forgeline.settings import Settings


def encrypted_columns() -> list[tuple[str, list[str]]]:
    """Every `*_encrypted` column of the model, by table: the convention marks them all."""
    found = []
    for mapped in Base.metadata.sorted_tables:
        columns = [c.name for c in mapped.columns if c.name.endswith("_encrypted")]
        if columns:
            found.append((mapped.name, columns))
    return found


async def rotate_encrypted_columns(
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings | None = None,
    *,
    batch_size: int = 500,
    tables: Collection[str] | None = None,
) -> dict[str, int]:
    """Re-encrypt every encrypted value under the newest key, batch by batch (keyset on id,
    one commit per batch), and return the number of rewritten values per `table.column`."""
    fernet = fernet_for(settings)
    counts: dict[str, int] = {}
    for table_name, column_names in encrypted_columns():
        if tables is not None and table_name not in tables:
            continue
        tbl = table(table_name, column("id"), *(column(name) for name in column_names))
        for name in column_names:
            counts[f"{table_name}.{name}"] = 0
        last_id = None
        while True:
            stmt = select(tbl.c.id, *(tbl.c[name] for name in column_names)).order_by(tbl.c.id)
            if last_id is not None:
                stmt = stmt.where(tbl.c.id > last_id)
            async with session_maker() as session:
                rows = (await session.execute(stmt.limit(batch_size))).all()
                if not rows:
                    break
                for row in rows:
                    values: dict[str, str] = {}
                    for index, name in enumerate(column_names, start=1):
                        ciphertext = row[index]
                        if ciphertext:
                            try:
                                values[name] = fernet.rotate(ciphertext.encode()).decode()
                            except InvalidToken as exc:
                                raise DecryptionFailed(
                                    f"{table_name}.{name} of row {row[0]} does not decrypt with "
                                    "any configured key; add the old key and run again"
                                ) from exc
                    if values:
                        await session.execute(
                            update(tbl).where(tbl.c.id == row[0]).values(**values)
                        )
                        for name in values:
                            counts[f"{table_name}.{name}"] += 1
                await session.commit()
                last_id = rows[-1][0]
    return counts


async def rotate_config_secrets(
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings | None = None,
    *,
    batch_size: int = 500,
) -> dict[str, int]:
    """Key rotation for the secrets inside JSONB columns, which the `*_encrypted` column sweep
    cannot see: `projects.config` and `environments.config` -> environment_variables[], and the
    variables snapshots unfinished runs hold. Keyset batches, one commit per batch."""

    def config(value: Any) -> tuple[Any, int] | None:
        variables = (value or {}).get("environment_variables") or []
        secrets = sum(1 for v in variables if v.get("secret"))
        if not secrets:
            return None
        return {**value, "environment_variables": rotate(variables, settings)}, secrets

    def snapshot(value: Any) -> tuple[Any, int]:
        return rotate_snapshot(value, settings), 1

    counts: dict[str, int] = {}
    for model in (Project, Environment):
        key = f"{model.__tablename__}.config.environment_variables"
        counts[key] = await _rewrite_in_batches(session_maker, model.config, config, batch_size)
    counts["pipeline_runs.variables_snapshot"] = await _rewrite_in_batches(
        session_maker, PipelineRun.variables_snapshot, snapshot, batch_size
    )
    return counts


async def _rewrite_in_batches(
    session_maker: async_sessionmaker[AsyncSession],
    column: Any,
    rewrite: Callable[[Any], tuple[Any, int] | None],
    batch_size: int,
) -> int:
    """Every row where `column` (a mapped JSONB attribute) is set, by keyset batches on `id`:
    `rewrite` gives the new value and how many secrets it re-encrypted, or None to leave the row.
    A value cleared meanwhile (a run that finished) stays cleared."""
    model = column.class_
    rewritten = 0
    last_id = None
    while True:
        stmt = select(model.id, column).where(column.is_not(None)).order_by(model.id)
        if last_id is not None:
            stmt = stmt.where(model.id > last_id)
        async with session_maker() as session:
            rows = (await session.execute(stmt.limit(batch_size))).all()
            if not rows:
                return rewritten
            for row_id, value in rows:
                result = rewrite(value)
                if result is None:
                    continue
                new_value, secrets = result
                await session.execute(
                    update(model)
                    .where(model.id == row_id, column.is_not(None))
                    .values({column: new_value})
                )
                rewritten += secrets
            await session.commit()
            last_id = rows[-1][0]
