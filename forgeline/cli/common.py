"""What every CLI command shares: options, the API client, output as a table or JSON, and
errors as one readable line with a non-zero exit status."""

from __future__ import annotations

import functools
import inspect
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
ProjectRef = Annotated[str, typer.Argument(help="Project ID or slug.")]
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


@dataclass(frozen=True)
class Connection:
    """The options every API command takes: where the API is, its key, and the output format."""

    api_url: str | None = None
    api_key: str | None = None
    as_json: bool = False

    def client(self) -> ForgelineClient:
        return client(self.api_url, self.api_key)

    def call(self, request: Callable[[ForgelineClient], Any]) -> Any:
        """One request on a fresh client; a problem answer exits 1 (see `run`)."""
        with self.client() as api:
            return run(lambda: request(api))

    def emit(self, data: Any, columns: Sequence[str], *, title: str | None = None) -> None:
        emit(data, columns, as_json=self.as_json, title=title)

    def printed_json(self, data: Any) -> bool:
        """With --json, print the whole answer and say so (the caller then draws no tables)."""
        if self.as_json:
            emit(data, (), as_json=True)
        return self.as_json


_CONNECTION_OPTIONS = (
    inspect.Parameter("api_url", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ApiUrl),
    inspect.Parameter("api_key", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ApiKey),
)
_JSON_OPTION = inspect.Parameter(
    "as_json", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=AsJson
)


def connected(command: Callable[..., None], *, json_output: bool = True) -> Callable[..., None]:
    """The command as typer sees it: its own parameters minus `conn: Connection`, plus
    --api-url, --api-key and (with json_output) --json, gathered into `conn` on the call."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "conn"]
    added = (*_CONNECTION_OPTIONS, _JSON_OPTION) if json_output else _CONNECTION_OPTIONS

    @functools.wraps(command)
    def invoke(*args: Any, **kwargs: Any) -> None:
        conn = Connection(
            api_url=kwargs.pop("api_url", None),
            api_key=kwargs.pop("api_key", None),
            as_json=kwargs.pop("as_json", False),
        )
        command(*args, conn=conn, **kwargs)

    parameters = [
        *(p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own),
        *added,
    ]
    invoke.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    invoke.__annotations__ = {p.name: p.annotation for p in parameters}
    return invoke


def api_command(
    app: typer.Typer, name: str, *, json_output: bool = True
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register a command that talks to the API: `@api_command(app, "list")` over a function
    taking `conn: Connection` and its own arguments."""

    def register(command: Callable[..., None]) -> Callable[..., None]:
        wrapped = connected(command, json_output=json_output)
        app.command(name)(wrapped)
        return wrapped

    return register
