"""`forgeline notifications list|read`: your notifications (failed and fixed runs, deployments
waiting or done, invoices and payments) with the unread count, and marking them read."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from forgeline.cli.common import Connection, api_command, emit, uuid_arg

NAME = "notifications"
app = typer.Typer(help="Your notifications and what is still unread.", no_args_is_help=True)

COLUMNS = ("id", "created_at", "type", "title", "read")


def _rows(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**item, "read": "yes" if item.get("read_at") else "no"} for item in items]


@api_command(app, "list")
def list_notifications(
    conn: Connection,
    unread: Annotated[bool, typer.Option("--unread", help="Only unread ones.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, max=200, help="At most this many.")] = 50,
) -> None:
    """Newest first, with the number still unread."""
    page: dict[str, Any] = conn.call(
        lambda api: api.get("/v1/notifications", limit=limit, unread="true" if unread else None)
    )
    if conn.printed_json(page):
        return
    title = f"Notifications ({page['unread_count']} unread)"
    emit(_rows(page["items"]), COLUMNS, as_json=False, title=title)


@api_command(app, "read")
def read(
    conn: Connection,
    notification: Annotated[
        str | None,
        typer.Argument(callback=lambda v: v and uuid_arg(v), help="The notification to mark."),
    ] = None,
    every: Annotated[bool, typer.Option("--all", help="Mark every notification read.")] = False,
) -> None:
    """Mark one notification read, or all of them with --all."""
    if (notification is None) == (not every):
        raise typer.BadParameter("name one notification, or pass --all (not both)")
    if every:
        done = conn.call(lambda api: api.post("/v1/notifications/read", {}))
        conn.emit(done, ("marked", "unread_count"), title="Marked read")
        return
    marked = conn.call(lambda api: api.post(f"/v1/notifications/{notification}/read", {}))
    conn.emit(_rows([marked])[0], COLUMNS, title="Marked read")
