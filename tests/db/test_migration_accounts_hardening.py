"""Migration 0006 on rows written before it: raw set-password links left in notifications are
redacted and every link still live is revoked (its raw value sat in the database)."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
from alembic import command

from db.regen_migration import alembic_config
from db.session import driver_dsn
from tests.db.test_migrations import fresh_database_url

__all__ = ["fresh_database_url"]


async def test_upgrade_withdraws_links_stored_in_clear(fresh_database_url: str) -> None:
    config = alembic_config(fresh_database_url)
    await asyncio.to_thread(command.upgrade, config, "0005_billing_periods")
    user_id, used_id, live_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    conn = await asyncpg.connect(driver_dsn(fresh_database_url))
    try:
        await conn.execute(
            "INSERT INTO users (id, email, name) VALUES ($1, $2, 'Legacy')",
            user_id,
            f"legacy-{user_id.hex[:8]}@example.com",
        )
        for token_id, digit, used in ((used_id, "a", "now()"), (live_id, "b", "NULL")):
            await conn.execute(
                "INSERT INTO password_reset_tokens (id, user_id, token_hash, expires_at, used_at)"
                f" VALUES ($1, $2, $3, now() + interval '1 hour', {used})",
                token_id,
                user_id,
                digit * 64,
            )
        for kind, key in (
            ("password_reset", "reset_url"),
            ("organization_invitation", "set_password_url"),
        ):
            await conn.execute(
                "INSERT INTO notifications (id, user_id, type, title, body, data) VALUES"
                " ($1, $2, $3, 'T', $4, jsonb_build_object($5::text, $6::text, 'keep', 'me'))",
                uuid.uuid4(),
                user_id,
                kind,
                "Open http://h/reset-password?token=flr_rawsecret now",
                key,
                "http://h/reset-password?token=flr_rawsecret",
            )
        await conn.execute(
            "INSERT INTO notifications (id, user_id, type, title, body)"
            " VALUES ($1, $2, 'deployment', 'Deployed', 'unrelated body')",
            uuid.uuid4(),
            user_id,
        )

        await asyncio.to_thread(command.upgrade, config, "0006_accounts_hardening")

        notes = [
            (row["type"], row["body"], json.loads(row["data"]))
            for row in await conn.fetch(
                "SELECT type, body, data FROM notifications WHERE user_id = $1 ORDER BY type",
                user_id,
            )
        ]
        tokens: dict[uuid.UUID, bool] = {
            row[0]: row[1]
            for row in await conn.fetch(
                "SELECT id, (revoked_at IS NOT NULL) FROM password_reset_tokens WHERE user_id = $1",
                user_id,
            )
        }
        assert "flr_rawsecret" not in repr(notes)
        assert {note[0]: note[2] for note in notes}["password_reset"] == {"keep": "me"}
        assert ("deployment", "unrelated body", {}) in notes
        assert tokens == {live_id: True, used_id: False}  # the used one stays as it was

        # And back down: a withdrawn link stays dead without the revoked_at column.
        await asyncio.to_thread(command.downgrade, config, "0005_billing_periods")
        live = await conn.fetchval(
            "SELECT count(*) FROM password_reset_tokens WHERE user_id = $1 AND used_at IS NULL",
            user_id,
        )
        assert live == 0
    finally:
        await conn.close()
