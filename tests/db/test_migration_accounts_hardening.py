"""Migration 0006 on rows written before it: raw set-password links left in notifications are
redacted and every link still live is revoked (its raw value sat in the database)."""

from __future__ import annotations

import uuid

import psycopg
from alembic import command

from db.regen_migration import alembic_config
from tests.db.test_migrations import fresh_database_url

__all__ = ["fresh_database_url"]


def test_upgrade_withdraws_links_stored_in_clear(fresh_database_url: str) -> None:
    config = alembic_config(fresh_database_url)
    command.upgrade(config, "0005_billing_periods")
    user_id, used_id, live_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    url = fresh_database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO users (id, email, name) VALUES (%s, %s, 'Legacy')",
            (user_id, f"legacy-{user_id.hex[:8]}@example.com"),
        )
        for token_id, digit, used in ((used_id, "a", "now()"), (live_id, "b", "NULL")):
            conn.execute(
                "INSERT INTO password_reset_tokens (id, user_id, token_hash, expires_at, used_at)"
                f" VALUES (%s, %s, %s, now() + interval '1 hour', {used})",
                (token_id, user_id, digit * 64),
            )
        for kind, key in (
            ("password_reset", "reset_url"),
            ("organization_invitation", "set_password_url"),
        ):
            conn.execute(
                "INSERT INTO notifications (id, user_id, type, title, body, data) VALUES"
                " (%s, %s, %s, 'T', %s, jsonb_build_object(%s::text, %s::text, 'keep', 'me'))",
                (
                    uuid.uuid4(),
                    user_id,
                    kind,
                    "Open http://h/reset-password?token=flr_rawsecret now",
                    key,
                    "http://h/reset-password?token=flr_rawsecret",
                ),
            )
        conn.execute(
            "INSERT INTO notifications (id, user_id, type, title, body)"
            " VALUES (%s, %s, 'deployment', 'Deployed', 'unrelated body')",
            (uuid.uuid4(), user_id),
        )

    command.upgrade(config, "0006_accounts_hardening")

    with psycopg.connect(url) as conn:
        notes = conn.execute(
            "SELECT type, body, data FROM notifications WHERE user_id = %s ORDER BY type",
            (user_id,),
        ).fetchall()
        tokens: dict[uuid.UUID, bool] = dict(
            conn.execute(
                "SELECT id, (revoked_at IS NOT NULL) FROM password_reset_tokens WHERE user_id = %s",
                (user_id,),
            ).fetchall()
        )
    assert "flr_rawsecret" not in repr(notes)
    assert {note[0]: note[2] for note in notes}["password_reset"] == {"keep": "me"}
    assert ("deployment", "unrelated body", {}) in notes
    assert tokens == {live_id: True, used_id: False}  # the used one stays as it was

    # And back down: a withdrawn link stays dead without the revoked_at column.
    command.downgrade(config, "0005_billing_periods")
    with psycopg.connect(url) as conn:
        live = conn.execute(
            "SELECT count(*) FROM password_reset_tokens WHERE user_id = %s AND used_at IS NULL",
            (user_id,),
        ).fetchone()
    assert live == (0,)
