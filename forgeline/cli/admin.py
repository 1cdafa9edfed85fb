"""Operator commands run on the server's own machine: the bootstrap organization and the
re-encryption of stored secrets under a new key."""

from __future__ import annotations

import asyncio
import json

import typer
from rich.table import Table

from forgeline.cli.common import AsJson, console, emit, err_console
from forgeline.settings import get_settings


def bootstrap(as_json: AsJson = False) -> None:
    """Create the bootstrap organization with its owner (once) and print its API key."""
    from core.accounts.bootstrap import ensure_bootstrap_with

    result = asyncio.run(ensure_bootstrap_with(get_settings()))
    data = {
        "organization": result.org_slug,
        "organization_id": str(result.org_id),
        "owner_email": result.owner_email,
        "api_key": result.api_key,
        "created": result.created,
    }
    if result.owner_password:
        data["owner_password"] = result.owner_password
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    table = Table(title="Bootstrap organization" + (" (created)" if result.created else ""))
    table.add_column("field")
    table.add_column("value")
    for key, value in data.items():
        table.add_row(key, str(value))
    console.print(table)
    console.print("Use it: export FORGELINE_API_KEY=" + result.api_key)


def rotate_keys(as_json: AsJson = False) -> None:
    """Re-encrypt every encrypted column (and the secret variables inside project and
    environment configs) under the first key of FORGELINE_ENCRYPTION_KEYS."""
    from db.key_rotation import rotate_config_secrets, rotate_encrypted_columns
    from db.session import create_engine, create_session_maker
    from forgeline.crypto import DecryptionFailed

    settings = get_settings()

    async def rotate() -> dict[str, int]:
        engine = create_engine(settings)
        try:
            session_maker = create_session_maker(engine)
            counts = await rotate_encrypted_columns(session_maker, settings)
            counts.update(await rotate_config_secrets(session_maker, settings))
            return counts
        finally:
            await engine.dispose()

    try:
        counts = asyncio.run(rotate())
    except DecryptionFailed as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    rows = [{"column": name, "re-encrypted": count} for name, count in counts.items()]
    emit(rows, ["column", "re-encrypted"], as_json=as_json, title="Encrypted columns")
