"""What every CLI command shares: options, the API client, output as a table or JSON, and
errors as one readable line with a non-zero exit status."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from forgeline.api_client import ApiError, ForgelineClient
from forgeline.cli import config
from forgeline.settings import Settings, get_settings

console = Console()
err_console = Console(stderr=True)

ApiUrl = Annotated[
    str | None,
    typer.Option("--api-url", envvar="FORGELINE_API_URL", help="Default: public_base_url."),
]
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="FORGELINE_API_KEY",
        help="Default: the bootstrap key in <data_dir>/bootstrap.json.",
        show_default=False,
    ),
]
AsJson = Annotated[
    bool, typer.Option("--json", help="Print JSON instead of a table (also: --output json).")
]
# Set by the root command's --profile (or FORGELINE_PROFILE): which config profile to use.
selected_profile: str | None = None


def _bootstrap_key(settings: Settings) -> str | None:
    path = settings.data_dir / "bootstrap.json"
    try:
        key = json.loads(path.read_text()).get("api_key")
    except (OSError, ValueError):
        return None
    return str(key) if key else None


def client(api_url: str | None, api_key: str | None) -> ForgelineClient:
    """Flags and environment first, then the config profile, then the local settings."""
    try:
        chosen = config.profile(selected_profile)
    except config.ConfigError as exc:
        err_console.print(f"Error: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from exc
    settings = get_settings()
    key = api_key or chosen.get("api_key") or _bootstrap_key(settings)
    if not key:
        err_console.print(
            "[red]No API key[/red]: pass --api-key, set FORGELINE_API_KEY, add a profile "
            "(`forgeline config set`), or run `forgeline bootstrap` first."
        )
        raise typer.Exit(2)
    return ForgelineClient(api_url or chosen.get("api_url") or settings.public_base_url, key)


def uuid_arg(value: str) -> str:
    """A typer callback: the value must be a UUID (checked before any request is made)."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError) as exc:
        raise typer.BadParameter(f"{value!r} is not an ID (a UUID)") from exc


def emit(data: Any, columns: Sequence[str], *, as_json: bool, title: str | None = None) -> None:
    """Print one object or a list of objects as a table (chosen columns) or as JSON."""
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    rows = data if isinstance(data, list) else [data]
    table = Table(title=title)
    for column in columns:
        if column in ("id", "slug") or column.endswith("_id"):
            # IDs and slugs are what users copy into the next command: never shortened.
            table.add_column(column, min_width=36 if column != "slug" else None, no_wrap=True)
        else:
            table.add_column(column)
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    console.print(table)


def run(call: Any) -> Any:
    """Run an API call; a problem answer becomes a readable error and exit status 1."""
    try:
        return call()
    except ApiError as exc:
        fail(exc)


def fail(exc: ApiError) -> NoReturn:
    """Print the problem as one line and exit 1."""
    # markup=False: the server's words are printed as they are, never read as rich markup.
    err_console.print(f"Error: {exc}", style="red", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(1) from exc


def resolve_project(api: ForgelineClient, ref: str) -> str:
    """A project ID, or the slug of one of the organization's projects."""
    try:
        return str(uuid.UUID(ref))
    except ValueError:
        pass
    for project in api.paginate("/v1/projects", search=ref):
        if project["slug"] == ref:
            return str(project["id"])
    err_console.print(f"[red]No project with slug {ref!r}[/red]")
    raise typer.Exit(1)
