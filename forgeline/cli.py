"""`forgeline`: bootstrap an organization, drive the API (projects, repositories, environments),
rotate encryption keys. Output as rich tables, or JSON with --json.

Other domains add a sub-app by listing its module in CLI_MODULES (the module exposes
`app: typer.Typer` and `NAME: str`); commands talk to the API through ForgelineClient and print
with `emit`.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import uuid
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from forgeline.api_client import ApiError, ForgelineClient
from forgeline.settings import Settings, get_settings

app = typer.Typer(help="Forgeline: durable, AI-driven CI/CD.", no_args_is_help=True)
projects_app = typer.Typer(help="Projects of your organization.", no_args_is_help=True)
repos_app = typer.Typer(help="The git repository of a project.", no_args_is_help=True)
envs_app = typer.Typer(help="Deployment environments of a project.", no_args_is_help=True)
app.add_typer(projects_app, name="projects")
app.add_typer(repos_app, name="repos")
app.add_typer(envs_app, name="envs")

# Sub-apps of other domains: "module.path" exposing `app` and `NAME`; absent modules are skipped.
CLI_MODULES: list[str] = [
    "forgeline.cli_pipelines",
    "forgeline.cli_deployments",
    "forgeline.cli_billing",
    "forgeline.cli_agent",
]

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
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _bootstrap_key(settings: Settings) -> str | None:
    path = settings.data_dir / "bootstrap.json"
    try:
        key = json.loads(path.read_text()).get("api_key")
    except (OSError, ValueError):
        return None
    return str(key) if key else None


def client(api_url: str | None, api_key: str | None) -> ForgelineClient:
    settings = get_settings()
    key = api_key or _bootstrap_key(settings)
    if not key:
        err_console.print(
            "[red]No API key[/red]: pass --api-key, set FORGELINE_API_KEY, "
            "or run `forgeline bootstrap` first."
        )
        raise typer.Exit(2)
    return ForgelineClient(api_url or settings.public_base_url, key)


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
        err_console.print(f"[red]{exc}[/red]")
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


# ---------------------------------------------------------------- bootstrap and keys


@app.command()
def bootstrap(as_json: AsJson = False) -> None:
    """Create the bootstrap organization with its owner (once) and print its API key."""
    from api.accounts.bootstrap import ensure_bootstrap_with

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


@app.command("rotate-keys")
def rotate_keys(as_json: AsJson = False) -> None:
    """Re-encrypt every encrypted column (and the secret variables inside project and
    environment configs) under the first key of FORGELINE_ENCRYPTION_KEYS."""
    from db.session import create_engine, create_session_maker
    from forgeline.crypto import DecryptionFailed, rotate_encrypted_columns
    from forgeline.environment_variables import rotate_config_secrets

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


# ---------------------------------------------------------------- projects

PROJECT_COLUMNS = ("id", "slug", "name", "project_type", "framework", "status")


@projects_app.command("list")
def projects_list(
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
    search: Annotated[str | None, typer.Option(help="Substring of name or slug.")] = None,
) -> None:
    with client(api_url, api_key) as api:
        items = run(lambda: api.paginate("/v1/projects", search=search))
    emit(items, PROJECT_COLUMNS, as_json=as_json, title="Projects")


@projects_app.command("create")
def projects_create(
    name: str,
    project_type: Annotated[
        str, typer.Option("--type", help="static_site, ssr_app, spa, api or fullstack.")
    ] = "static_site",
    framework: Annotated[str | None, typer.Option(help="nextjs, react, vue, ...")] = None,
    slug: Annotated[str | None, typer.Option(help="Default: derived from the name.")] = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    body: dict[str, Any] = {"name": name, "project_type": project_type}
    if framework:
        body["framework"] = framework
    if slug:
        body["slug"] = slug
    with client(api_url, api_key) as api:
        project = run(lambda: api.post("/v1/projects", body))
    emit(project, PROJECT_COLUMNS, as_json=as_json, title="Project created")


# ---------------------------------------------------------------- repositories

REPO_COLUMNS = ("project", "provider", "url", "default_branch", "has_access_token")


@repos_app.command("connect")
def repos_connect(
    project: Annotated[str, typer.Argument(help="Project ID or slug.")],
    url: Annotated[str, typer.Argument(help="https:// or ssh git URL.")],
    provider: Annotated[
        str, typer.Option(help="github, gitlab, bitbucket, git (or local, when enabled).")
    ] = "git",
    branch: Annotated[str, typer.Option(help="Default branch.")] = "main",
    token_env: Annotated[
        str | None,
        typer.Option(help="Name of an environment variable holding the access token."),
    ] = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Connect (or replace) the repository of a project. The token is read from an environment
    variable, never from the command line (shell history, process lists)."""
    body: dict[str, Any] = {"provider": provider, "url": url, "default_branch": branch}
    if token_env:
        token = os.environ.get(token_env)
        if not token:
            err_console.print(f"[red]{token_env} is not set[/red]")
            raise typer.Exit(2)
        body["access_token"] = token
    with client(api_url, api_key) as api:
        project_id = resolve_project(api, project)
        repo = run(lambda: api.put(f"/v1/projects/{project_id}/repository", body))
    emit({**repo, "project": project}, REPO_COLUMNS, as_json=as_json, title="Repository")


@repos_app.command("list")
def repos_list(api_url: ApiUrl = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """The repository of every project that has one."""
    rows = []
    with client(api_url, api_key) as api:
        for project in run(lambda: api.paginate("/v1/projects")):
            try:
                repo = api.get(f"/v1/projects/{project['id']}/repository")
            except ApiError as exc:
                if exc.status == 404:
                    continue
                err_console.print(f"[red]{exc}[/red]")
                raise typer.Exit(1) from exc
            rows.append({**repo, "project": project["slug"]})
    emit(rows, REPO_COLUMNS, as_json=as_json, title="Repositories")


# ---------------------------------------------------------------- environments

ENV_COLUMNS = ("id", "name", "env_type", "provider", "is_protected", "status", "url")


@envs_app.command("create")
def envs_create(
    project: Annotated[str, typer.Argument(help="Project ID or slug.")],
    name: str,
    env_type: Annotated[
        str, typer.Option("--type", help="development, staging, production or preview.")
    ] = "development",
    provider: Annotated[str, typer.Option(help="docker, static, aws, ...")] = "static",
    protected: Annotated[bool, typer.Option(help="Require approvals to deploy.")] = False,
    config: Annotated[str | None, typer.Option(help="Provider config as a JSON object.")] = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    body: dict[str, Any] = {"name": name, "env_type": env_type, "provider": provider}
    if protected:
        body["is_protected"] = True
    if config:
        try:
            body["config"] = json.loads(config)
        except ValueError as exc:
            err_console.print(f"[red]--config is not valid JSON: {exc}[/red]")
            raise typer.Exit(2) from exc
    with client(api_url, api_key) as api:
        project_id = resolve_project(api, project)
        env = run(lambda: api.post(f"/v1/projects/{project_id}/environments", body))
    emit(env, ENV_COLUMNS, as_json=as_json, title="Environment created")


@envs_app.command("list")
def envs_list(
    project: Annotated[str, typer.Argument(help="Project ID or slug.")],
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    with client(api_url, api_key) as api:
        project_id = resolve_project(api, project)
        items = run(lambda: api.paginate(f"/v1/projects/{project_id}/environments"))
    emit(items, ENV_COLUMNS, as_json=as_json, title="Environments")


# ---------------------------------------------------------------- other domains


def _register_domain_apps() -> None:
    for module_name in CLI_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue
            raise
        app.add_typer(module.app, name=module.NAME)


_register_domain_apps()
