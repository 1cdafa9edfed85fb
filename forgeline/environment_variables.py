"""Environment variables stored in project/environment config: secret values encrypted at rest,
masked in every API answer, revealed only inside the activity that runs a build or deploy."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forgeline.crypto import decrypt_str, encrypt_str, rotate_str
from forgeline.settings import Settings

MASK = "********"


def seal(
    variables: Iterable[Mapping[str, Any]],
    previous: Iterable[Mapping[str, Any]] = (),
    settings: Settings | None = None,
) -> list[dict[str, Any]]:
    """Stored form of validated variables: `{name, secret, value}` or `{name, secret,
    value_encrypted}`. A secret sent back as the mask keeps the previously stored ciphertext,
    so a client can round-trip a config it read without wiping its secrets."""
    earlier = {str(v["name"]): v for v in previous if v.get("secret")}
    sealed: list[dict[str, Any]] = []
    for var in variables:
        name, value, secret = str(var["name"]), str(var["value"]), bool(var.get("secret"))
        if not secret:
            sealed.append({"name": name, "secret": False, "value": value})
            continue
        kept = earlier.get(name)
        if value == MASK and kept is not None and "value_encrypted" in kept:
            ciphertext = str(kept["value_encrypted"])
        else:
            ciphertext = encrypt_str(value, settings)
        sealed.append({"name": name, "secret": True, "value_encrypted": ciphertext})
    return sealed


def masked(stored: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """What the API returns: plain values for ordinary variables, the mask for secrets."""
    return [
        {
            "name": str(v.get("name", "")),
            "secret": bool(v.get("secret")),
            "value": MASK if v.get("secret") else str(v.get("value", "")),
        }
        for v in stored
    ]


def reveal(stored: Iterable[Mapping[str, Any]], settings: Settings | None = None) -> dict[str, str]:
    """Plain name -> value map for a build/deploy step. Call inside activities only."""
    result: dict[str, str] = {}
    for v in stored:
        if v.get("secret"):
            result[str(v["name"])] = decrypt_str(str(v["value_encrypted"]), settings)
        else:
            result[str(v["name"])] = str(v.get("value", ""))
    return result


def secret_values(
    stored: Iterable[Mapping[str, Any]], settings: Settings | None = None
) -> set[str]:
    """The plain secret values, for masking them in stage logs."""
    return {value for value in reveal([v for v in stored if v.get("secret")], settings).values()}


def rotate(
    stored: Iterable[Mapping[str, Any]], settings: Settings | None = None
) -> list[dict[str, Any]]:
    """Re-encrypt secret values under the newest key (for key rotation)."""
    rotated: list[dict[str, Any]] = []
    for v in stored:
        item = dict(v)
        if item.get("secret") and item.get("value_encrypted"):
            item["value_encrypted"] = rotate_str(str(item["value_encrypted"]), settings)
        rotated.append(item)
    return rotated


async def rotate_config_secrets(
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings | None = None,
    *,
    batch_size: int = 500,
) -> dict[str, int]:
    """Key rotation for the secrets inside JSONB columns, which the `*_encrypted` column sweep
    cannot see: `projects.config` and `environments.config` -> environment_variables[], and the
    variables snapshots unfinished runs hold. Keyset batches, one commit per batch."""
    from db.models.pipelines import PipelineRun
    from db.models.projects import Environment, Project

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


def rotate_snapshot(
    snapshot: Mapping[str, Any], settings: Settings | None = None
) -> dict[str, Any]:
    """A run's variables snapshot (see activities/pipelines/run_variables.py) under the newest
    key: the run's own encrypted variables and every secret of its project and environments."""
    rotated = dict(snapshot)
    if rotated.get("run"):
        rotated["run"] = rotate_str(str(rotated["run"]), settings)
    rotated["project"] = rotate(rotated.get("project") or [], settings)
    rotated["environments"] = {
        env_id: rotate(variables or [], settings)
        for env_id, variables in (rotated.get("environments") or {}).items()
    }
    return rotated


async def _rewrite_in_batches(
    session_maker: async_sessionmaker[AsyncSession],
    column: Any,
    rewrite: Callable[[Any], tuple[Any, int] | None],
    batch_size: int,
) -> int:
    """Every row where `column` (a mapped JSONB attribute) is set, by keyset batches on `id`:
    `rewrite` gives the new value and how many secrets it re-encrypted, or None to leave the row.
    A value cleared meanwhile (a run that finished) stays cleared."""
    from sqlalchemy import update

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
