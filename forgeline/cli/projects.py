"""Projects, their repository and their deployment environments."""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

import typer

from forgeline.api_client import ApiError
from forgeline.cli.common import (
    Connection,
    ProjectRef,
    api_command,
    console,
    err_console,
    resolve_project,
    run,
)

projects_app = typer.Typer(help="Projects of your organization.", no_args_is_help=True)
repos_app = typer.Typer(help="The git repository of a project.", no_args_is_help=True)
envs_app = typer.Typer(help="Deployment environments of a project.", no_args_is_help=True)


PROJECT_COLUMNS = ("id", "slug", "name", "project_type", "framework", "status")


@api_command(projects_app, "list")
def projects_list(
    conn: Connection,
    search: Annotated[str | None, typer.Option(help="Substring of name or slug.")] = None,
) -> None:
    items = conn.call(lambda api: api.paginate("/v1/projects", search=search))
    conn.emit(items, PROJECT_COLUMNS, title="Projects")


@api_command(projects_app, "create")
def projects_create(
    conn: Connection,
    name: str,
    project_type: Annotated[
        str, typer.Option("--type", help="static_site, ssr_app, spa, api or fullstack.")
    ] = "static_site",
    framework: Annotated[str | None, typer.Option(help="nextjs, react, vue, ...")] = None,
    slug: Annotated[str | None, typer.Option(help="Default: derived from the name.")] = None,
) -> None:
    body: dict[str, Any] = {"name": name, "project_type": project_type}
    if framework:
        body["framework"] = framework
    if slug:
        body["slug"] = slug
    project = conn.call(lambda api: api.post("/v1/projects", body))
    conn.emit(project, PROJECT_COLUMNS, title="Project created")


# ---------------------------------------------------------------- repositories

REPO_COLUMNS = ("project", "provider", "url", "default_branch", "has_access_token")


@api_command(repos_app, "connect")
def repos_connect(
    conn: Connection,
    project: ProjectRef,
    url: Annotated[str, typer.Argument(help="https:// or ssh git URL.")],
    provider: Annotated[
        str, typer.Option(help="github, gitlab, bitbucket, git (or local, when enabled).")
    ] = "git",
    branch: Annotated[str, typer.Option(help="Default branch.")] = "main",
    token_env: Annotated[
        str | None,
        typer.Option(help="Name of an environment variable holding the access token."),
    ] = None,
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
    repo = conn.call(
        lambda api: api.put(f"/v1/projects/{resolve_project(api, project)}/repository", body)
    )
    conn.emit({**repo, "project": project}, REPO_COLUMNS, title="Repository")
    if not conn.as_json and repo.get("webhook"):
        print_webhook(repo["webhook"])


def print_webhook(setup: dict[str, Any]) -> None:
    """What to paste into the forge's webhook form; the secret is never shown again."""
    console.print("Webhook (the secret is shown only this once):", markup=False)
    for forge, url in setup["urls"].items():
        # soft_wrap: a URL or secret wrapped at the terminal's width would be pasted broken.
        console.print(f"  {forge} URL: {url}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"  secret: {setup['secret']}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"  content type: {setup['content_type']}", markup=False, highlight=False)


@api_command(repos_app, "webhook")
def repos_webhook(conn: Connection, project: ProjectRef) -> None:
    """A new webhook secret for the project's repository (the previous one stops working), with
    the URL to paste into GitHub or GitLab."""
    setup = conn.call(
        lambda api: api.post(
            f"/v1/projects/{resolve_project(api, project)}/repository/webhook-secret", {}
        )
    )
    if not conn.printed_json(setup):
        print_webhook(setup)


@api_command(repos_app, "list")
def repos_list(conn: Connection) -> None:
    """The repository of every project that has one."""
    rows = []
    with conn.client() as api:
        for project in run(lambda: api.paginate("/v1/projects")):
            try:
                repo = api.get(f"/v1/projects/{project['id']}/repository")
            except ApiError as exc:
                if exc.status == 404:
                    continue
                err_console.print(f"[red]{exc}[/red]")
                raise typer.Exit(1) from exc
            rows.append({**repo, "project": project["slug"]})
    conn.emit(rows, REPO_COLUMNS, title="Repositories")


# ---------------------------------------------------------------- environments

ENV_COLUMNS = ("id", "name", "env_type", "provider", "is_protected", "status", "url")


@api_command(envs_app, "create")
def envs_create(
    conn: Connection,
    project: ProjectRef,
    name: str,
    env_type: Annotated[
        str, typer.Option("--type", help="development, staging, production or preview.")
    ] = "development",
    provider: Annotated[str, typer.Option(help="docker, static, aws, ...")] = "static",
    protected: Annotated[bool, typer.Option(help="Require approvals to deploy.")] = False,
    config: Annotated[str | None, typer.Option(help="Provider config as a JSON object.")] = None,
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
    env = conn.call(
        lambda api: api.post(f"/v1/projects/{resolve_project(api, project)}/environments", body)
    )
    conn.emit(env, ENV_COLUMNS, title="Environment created")


@api_command(envs_app, "list")
def envs_list(conn: Connection, project: ProjectRef) -> None:
    items = conn.call(
        lambda api: api.paginate(f"/v1/projects/{resolve_project(api, project)}/environments")
    )
    conn.emit(items, ENV_COLUMNS, title="Environments")
